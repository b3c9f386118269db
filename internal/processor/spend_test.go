package processor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// capReplicas starts n processor replicas, each with its own NATS connection, spend
// ledger and prices from the simulator's model list.
func (r *rig) capReplicas(n int) []*spend.Ledger {
	r.t.Helper()
	var ls []*spend.Ledger
	for i := range n {
		_, js := natstest.Connect(r.t, r.url)
		l, err := spend.New(context.Background(), js, r.c, spend.Config{Holder: fmt.Sprintf("p%d", i)})
		if err != nil {
			r.t.Fatal(err)
		}
		book, err := spend.NewPriceBook(r.api, spend.PriceConfig{})
		if err != nil {
			r.t.Fatal(err)
		}
		r.start(processor.Config{Spend: l, Prices: book, CapDelay: 100 * time.Millisecond, ConcurrentMax: 40}, nil)
		ls = append(ls, l)
	}
	return ls
}

// resultCount is how many items of the batch have a result.
func (r *rig) resultCount(id string) int {
	st, err := r.js.Stream(context.Background(), r.c.ResultsStream())
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(r.c.BatchResults(id)))
	if err != nil {
		r.t.Fatal(err)
	}
	return len(info.State.Subjects)
}

// waitPaused waits until the batch's account is paused with nothing held and neither
// its results nor the simulator's bill move for a second, and returns its results.
func (r *rig) waitPaused(l *spend.Ledger, id string, within time.Duration) int {
	r.t.Helper()
	deadline := time.Now().Add(within)
	last, lastCost, stable := -1, -1.0, 0
	for time.Now().Before(deadline) {
		a, _, err := l.Batch(context.Background(), id)
		n, cost := r.resultCount(id), r.sim.Stats().Cost
		if err == nil && a.Paused() && a.Held() == 0 && n == last && cost == lastCost {
			if stable++; stable >= 5 {
				return n
			}
		} else {
			stable = 0
		}
		last, lastCost = n, cost
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Fatalf("batch %s did not settle into a pause at its cap within %s", id, within)
	return 0
}

// Four replicas race on one batch with a small cap: what the simulator billed (and
// what the ledger settled) never passes the cap; the batch pauses with items held, none
// failed; raising the cap resumes it to the end.
// Run: go test ./internal/processor -run TestFourReplicasNeverPassTheCap -count=10 -v
func TestFourReplicasNeverPassTheCap(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{LatencyJitter: 20 * time.Millisecond})
	ls := r.capReplicas(4)
	const capUSD, items = 0.40, 120
	ctx := context.Background()
	if _, err := ls[0].SetBatchCap(ctx, "capped", spend.ByManifest, capUSD); err != nil {
		t.Fatal(err)
	}
	r.submit("capped", words(items, "돈"))
	done := r.waitPaused(ls[1], "capped", 30*time.Second)
	if done >= items || done == 0 {
		t.Fatalf("paused with %d results of %d", done, items)
	}
	a, _, _ := ls[2].Batch(ctx, "capped")
	billed := r.sim.Stats().Cost
	overshoot := max(0, billed-capUSD)
	t.Logf("paused after %d of %d items: simulator billed $%.6f, ledger settled $%.6f (lapsed $%.6f), cap $%.2f, overshoot $%.6f",
		done, items, billed, a.Settled.USD(), a.Lapsed.USD(), capUSD, overshoot)
	if overshoot > 0 || a.Spent() > spend.ToNanos(capUSD) {
		t.Fatalf("over the cap: billed $%.6f, settled $%.6f, cap $%.2f", billed, a.Spent().USD(), capUSD)
	}
	if a.Settled < spend.ToNanos(billed)-spend.Nanos(len(ls)*1000) { // rounding up by 1 nano per call at most
		t.Fatalf("the ledger settled $%.9f, less than the simulator billed ($%.9f)", a.Settled.USD(), billed)
	}
	// Raise the cap: the batch completes, nothing failed.
	if _, err := ls[3].SetBatchCap(ctx, "capped", spend.ByCommand, 100); err != nil {
		t.Fatal(err)
	}
	rs := r.results("capped", items, 60*time.Second)
	if n := count(rs, flashpipe.StatusOK); n != items {
		t.Fatalf("%d ok of %d after raising the cap", n, items)
	}
	for _, res := range rs {
		if res.Attempts > 1 {
			t.Fatalf("item %d counts %d deliveries: holds by the cap must not count", res.Position, res.Attempts)
		}
	}
}
