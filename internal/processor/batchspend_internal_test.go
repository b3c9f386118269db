package processor

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// applyRig is a batchMode with its store and a spend ledger on an embedded NATS
// server, enough to apply a provider batch's results.
type applyRig struct {
	b      *batchMode
	ledger *spend.Ledger
}

// Without a price book, the prices are spend's defaults.
func newApplyRig(t *testing.T) *applyRig {
	t.Helper()
	ctx := context.Background()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	l, err := spend.New(ctx, js, c, spend.Config{Holder: "p0"})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := contract.OpenKeyValue(ctx, js, ProviderBatchBucket(c), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	p := &Processor{cfg: Config{Spend: l}, log: slog.Default()}
	b := &batchMode{p: p, store: &batchStore{kv: kv}, log: slog.Default(), holds: map[string][]heldSpend{},
		changed: make(chan struct{}), final: map[string]bool{}}
	return &applyRig{b: b, ledger: l}
}

// submitted records a provider batch key of n pending claims, all for batch, and
// reserves worst on it as reserveBatch does.
func (r *applyRig) submitted(t *testing.T, key, batch string, n int, worst float64) (*ProviderBatch, uint64) {
	t.Helper()
	ctx := context.Background()
	rec := &ProviderBatch{Key: key, State: RecordSubmitted, ProviderID: "pb-" + key, Model: "m", Batches: []string{batch}}
	var ids []string
	for i := range n {
		h := claimHash(key + string(rune('a'+i)))
		rec.Claims = append(rec.Claims, h)
		ids = append(ids, batchapi.CustomID(key, i))
		if ok, err := r.b.store.createClaim(ctx, h, &requestClaim{Batch: key, Index: i, BatchID: batch, State: ClaimPending}); err != nil || !ok {
			t.Fatalf("claim %d: %v %v", i, ok, err)
		}
	}
	rev, ok, err := r.b.store.createRecord(ctx, rec)
	if err != nil || !ok {
		t.Fatalf("record: %v %v", ok, err)
	}
	if _, err := r.ledger.SetBatchCap(ctx, batch, "test", 100); err != nil {
		t.Fatal(err)
	}
	res, err := r.ledger.ReserveFor(ctx, batch, worst, BatchHoldTTL)
	if err != nil {
		t.Fatal(err)
	}
	r.b.keepHolds(key, []heldSpend{{r: res, ids: ids}})
	return rec, rev
}

func (r *applyRig) settled(t *testing.T, batch string) float64 {
	t.Helper()
	a, ok, err := r.ledger.Batch(context.Background(), batch)
	if err != nil || !ok {
		t.Fatalf("account of %s: %v %v", batch, ok, err)
	}
	if a.Held() != 0 {
		t.Errorf("account of %s still holds $%.6f", batch, a.Held().USD())
	}
	return a.Settled.USD()
}

func answered(key string, i int, u llm.Usage) batchapi.Result {
	return batchapi.Result{CustomID: batchapi.CustomID(key, i), Response: &llm.Response{Content: "ok", Usage: u}}
}

// TestApplyAgainSettlesTheRequestsAlreadyApplied: an apply that stopped partway (one
// claim already answered) and runs again settles the reservation to every result's
// cost, not only the claims still pending.
func TestApplyAgainSettlesTheRequestsAlreadyApplied(t *testing.T) {
	r := newApplyRig(t)
	ctx := context.Background()
	rec, rev := r.submitted(t, "k1", "vocab", 2, 1.0)
	// The first apply wrote claim 0 and stopped.
	c, _, err := r.b.store.getClaim(ctx, rec.Claims[0])
	if err != nil {
		t.Fatal(err)
	}
	c.State = ClaimAnswered
	if err := r.b.store.putClaim(ctx, rec.Claims[0], c); err != nil {
		t.Fatal(err)
	}
	r.b.apply(ctx, rec, rev, batchapi.StateCompleted, []batchapi.Result{
		answered("k1", 0, llm.Usage{PromptTokens: 10, CompletionTokens: 10, Cost: 0.25}),
		answered("k1", 1, llm.Usage{PromptTokens: 10, CompletionTokens: 10, Cost: 0.5}),
	})
	if got := r.settled(t, "vocab"); got < 0.75-1e-9 || got > 0.75+1e-9 {
		t.Errorf("settled $%.6f, want $0.75 (both results)", got)
	}
}

// TestApplySettlesTokensAtTheBatchPrice: results that report tokens but no cost (an
// OpenAI batch's output) settle at their tokens times the batch price: half the sync
// price, not $0.
func TestApplySettlesTokensAtTheBatchPrice(t *testing.T) {
	r := newApplyRig(t)
	ctx := context.Background()
	rec, rev := r.submitted(t, "k2", "oa", 2, 1.0)
	u := llm.Usage{PromptTokens: 1000, CompletionTokens: 500}
	r.b.apply(ctx, rec, rev, batchapi.StateCompleted, []batchapi.Result{answered("k2", 0, u), answered("k2", 1, u)})
	sync := r.b.p.prices(ctx, "m").Cost(u.PromptTokens, u.CompletionTokens)
	got := r.settled(t, "oa")
	t.Logf("settled $%.6f for 2 requests; the sync price of one is $%.6f", got, sync)
	if want := 2 * sync * spend.DefaultBatchRate; got <= 0 || got < want-1e-9 || got > want+1e-9 {
		t.Errorf("settled $%.6f, want $%.6f (half the sync price of 2 requests)", got, want)
	}
	// The item's result reports the same cost (its usage comes from the claim).
	for _, h := range rec.Claims {
		c, _, err := r.b.store.getClaim(ctx, h)
		if err != nil || c == nil {
			t.Fatalf("claim %s: %v", h, err)
		}
		if want := sync * spend.DefaultBatchRate; c.Usage.Cost < want-1e-9 || c.Usage.Cost > want+1e-9 {
			t.Errorf("claim %s reports $%.6f, want $%.6f", h, c.Usage.Cost, want)
		}
	}
}

// slowLedger is a ledger during whose reservations something else happens.
type slowLedger struct {
	*spend.Ledger
	during func()
}

func (l slowLedger) ReserveFor(ctx context.Context, batch string, usd float64, ttl time.Duration) (*spend.Reservation, error) {
	l.during()
	return l.Ledger.ReserveFor(ctx, batch, usd, ttl)
}

// countingAPI is a provider that counts submissions.
type countingAPI struct {
	batchapi.Provider
	submits atomic.Int64
}

func (a *countingAPI) Name() string { return batchapi.ProviderOpenRouter }
func (a *countingAPI) Submit(context.Context, batchapi.Spec) (batchapi.Batch, error) {
	a.submits.Add(1)
	return batchapi.Batch{ID: "pb", State: batchapi.StateValidating}, nil
}

// TestSubmitTakenOverDuringReservationIsNotSent: when another replica's recovery
// takes a submitting record over while this replica reserves its spend (reservations
// outlasting SubmitTimeout), this replica does not submit it too, and releases what
// it reserved.
func TestSubmitTakenOverDuringReservationIsNotSent(t *testing.T) {
	r := newApplyRig(t)
	ctx := context.Background()
	api := &countingAPI{}
	r.b.api, r.b.cfg.SubmitTimeout = api, time.Second
	if _, err := r.ledger.SetBatchCap(ctx, "vocab", "test", 100); err != nil {
		t.Fatal(err)
	}
	rec := &ProviderBatch{Key: "k3", State: RecordSubmitting, Model: "m", Claims: []string{"h0"}, Batches: []string{"vocab"}}
	rev, ok, err := r.b.store.createRecord(ctx, rec)
	if err != nil || !ok {
		t.Fatalf("record: %v %v", ok, err)
	}
	r.b.p.cfg.Spend = slowLedger{Ledger: r.ledger, during: func() {
		// Another replica's recovery takes the record over.
		other, orev, err := r.b.store.getRecord(ctx, "k3")
		if err != nil || other == nil {
			t.Errorf("record: %v", err)
			return
		}
		other.By = "p1"
		if _, err := r.b.store.updateRecord(ctx, other, orev); err != nil {
			t.Errorf("takeover: %v", err)
		}
	}}
	reqs := []batchapi.Request{{CustomID: batchapi.CustomID("k3", 0), Body: llm.Request{Model: "m"}}}
	r.b.submit(ctx, rec, rev, reqs, []string{"vocab"})
	if n := api.submits.Load(); n != 0 {
		t.Errorf("submitted %d times by the replica whose record was taken over, want 0", n)
	}
	if got := r.settled(t, "vocab"); got != 0 {
		t.Errorf("settled $%.6f for a batch not sent", got)
	}
}

// TestFinalRecordAppliedElsewhereSettlesTheReserver: when another replica applies
// the results of a provider batch this replica reserved for, this replica settles its
// reservation to the costs recorded at its next poll, instead of holding the worst
// case until it lapses.
func TestFinalRecordAppliedElsewhereSettlesTheReserver(t *testing.T) {
	r := newApplyRig(t)
	ctx := context.Background()
	rec, rev := r.submitted(t, "k4", "vocab", 2, 1.0)
	// Another replica, sharing the store: it reserved nothing.
	other := &batchMode{p: r.b.p, store: r.b.store, log: r.b.log, holds: map[string][]heldSpend{},
		changed: make(chan struct{}), final: map[string]bool{}}
	other.apply(ctx, rec, rev, batchapi.StateCompleted, []batchapi.Result{
		answered("k4", 0, llm.Usage{PromptTokens: 10, CompletionTokens: 10, Cost: 0.125}),
		answered("k4", 1, llm.Usage{PromptTokens: 10, CompletionTokens: 10, Cost: 0.25}),
	})
	if !r.b.pollOnce(ctx) {
		t.Errorf("the record applied elsewhere is not reported final")
	}
	if got := r.settled(t, "vocab"); got < 0.375-1e-9 || got > 0.375+1e-9 {
		t.Errorf("settled $%.6f, want $0.375 (the costs the other replica recorded)", got)
	}
}
