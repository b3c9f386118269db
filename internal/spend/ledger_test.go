package spend_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// ledgers opens n ledgers on one bucket, each on a NATS connection of its own, like n
// processor replicas.
func ledgers(t *testing.T, n int, cfg spend.Config) []*spend.Ledger {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	return ledgersOn(t, srv, c, n, cfg)
}

func ledgersB(b *testing.B, n int) []*spend.Ledger {
	b.Helper()
	srv := natstest.Server(b)
	_, js := natstest.Connect(b, srv.ClientURL())
	c := natstest.Contract(b, js)
	return ledgersOn(b, srv, c, n, spend.Config{})
}

func ledgersOn(t testing.TB, srv *natsx.Embedded, c *contract.Contract, n int, cfg spend.Config) []*spend.Ledger {
	t.Helper()
	var out []*spend.Ledger
	for i := range n {
		_, js := natstest.Connect(t, srv.ClientURL())
		cfg := cfg
		cfg.Holder = "r" + string(rune('a'+i))
		l, err := spend.New(context.Background(), js, c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// race runs workers goroutines on each ledger, each reserving worst and settling a
// random cost up to it until the cap refuses them; it returns what was settled.
func race(t *testing.T, ls []*spend.Ledger, batch string, workers int, worst float64) (settled spend.Nanos, refusals int64) {
	t.Helper()
	var total atomic.Int64
	var refused atomic.Int64
	var wg sync.WaitGroup
	for _, l := range ls {
		for range workers {
			wg.Go(func() {
				for {
					r, err := l.Reserve(context.Background(), batch, worst)
					if errors.Is(err, spend.ErrCapReached) {
						refused.Add(1)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					cost := worst * (0.5 + rand.Float64()/2)
					if err := r.Settle(context.Background(), cost); err != nil {
						t.Error(err)
						return
					}
					total.Add(int64(spend.ToNanos(cost)))
				}
			})
		}
	}
	wg.Wait()
	return spend.Nanos(total.Load()), refused.Load()
}

// Four replicas with 8 workers each race on one batch's cap: what they settle never
// passes it, and the account says the same.
func TestReplicasRacingNeverPassTheBatchCap(t *testing.T) {
	t.Parallel()
	ls := ledgers(t, 4, spend.Config{})
	const capUSD, worst = 1.0, 0.013
	if _, err := ls[0].SetBatchCap(context.Background(), "b1", spend.ByCommand, capUSD); err != nil {
		t.Fatal(err)
	}
	settled, refusals := race(t, ls, "b1", 8, worst)
	if settled > spend.ToNanos(capUSD) {
		t.Fatalf("settled $%.6f, over the cap $%.2f", settled.USD(), capUSD)
	}
	if settled < spend.ToNanos(capUSD/2) {
		t.Fatalf("settled only $%.6f of a $%.2f cap: reservations leaked", settled.USD(), capUSD)
	}
	a, ok, err := ls[1].Batch(context.Background(), "b1")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if a.Settled != settled || a.Held() != 0 || !a.Paused() || refusals != 32 {
		t.Fatalf("account settled %d (want %d), held %d, paused %v; %d refusals", a.Settled, settled, a.Held(), a.Paused(), refusals)
	}
	t.Logf("settled $%.6f of $%.2f in %d calls", settled.USD(), capUSD, a.Calls)
}

// A batch without a cap reserves nothing and costs no writes; the period cap, shared by
// every replica, holds over all batches.
func TestPeriodCapSharedByReplicas(t *testing.T) {
	t.Parallel()
	ls := ledgers(t, 3, spend.Config{})
	ctx := context.Background()
	if _, err := ls[0].SetPeriodCap(ctx, spend.ByFlag, 0.5, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var settled atomic.Int64
	for i, batch := range []string{"x1", "x2", "x3"} {
		wg.Go(func() {
			n, _ := race(t, ls[i:i+1], batch, 6, 0.011)
			settled.Add(int64(n))
		})
	}
	wg.Wait()
	if s := spend.Nanos(settled.Load()); s > spend.ToNanos(0.5) || s < spend.ToNanos(0.25) {
		t.Fatalf("settled $%.6f under a period cap of $0.50", s.USD())
	}
	pc, a, ok, err := ls[2].Period(ctx)
	if err != nil || !ok || pc.Cap != spend.ToNanos(0.5) || a.Settled != spend.Nanos(settled.Load()) || !a.Paused() {
		t.Fatalf("period %+v account %+v ok %v err %v", pc, a, ok, err)
	}
	if _, ok, _ := ls[0].Batch(ctx, "x1"); ok {
		t.Fatal("a batch without a cap got an account")
	}
	// Raising the cap resumes.
	if _, err := ls[1].SetPeriodCap(ctx, spend.ByCommand, 1, 0); err != nil {
		t.Fatal(err)
	}
	r, err := ls[0].Reserve(ctx, "x1", 0.011)
	if err != nil {
		t.Fatalf("after raising the cap: %v", err)
	}
	_ = r.Settle(ctx, 0.01)
	// A flag does not replace what a command set.
	pc, err = ls[2].SetPeriodCap(ctx, spend.ByFlag, 0.1, time.Hour)
	if err != nil || pc.Cap != spend.ToNanos(1) || pc.Period != 24*time.Hour || pc.CapBy != spend.ByCommand {
		t.Fatalf("a flag replaced a command's cap: %+v %v", pc, err)
	}
}

// A replica that dies holding a reservation: its hold lapses after the TTL and is
// charged at its worst case (its call may have been billed), never released into the
// budget; a late settle by a replica that was alive after all replaces the worst case
// with the real cost.
func TestLapsedReservationIsChargedNotReleased(t *testing.T) {
	t.Parallel()
	const ttl = 600 * time.Millisecond
	ls := ledgers(t, 2, spend.Config{HoldTTL: ttl, HoldMargin: 100 * time.Millisecond})
	dead, alive := ls[0], ls[1]
	ctx := context.Background()
	if _, err := alive.SetBatchCap(ctx, "b", spend.ByCommand, 1); err != nil {
		t.Fatal(err)
	}
	held, err := dead.Reserve(ctx, "b", 0.6)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(held.Deadline()); d > ttl-100*time.Millisecond || d < ttl/2 {
		t.Fatalf("deadline in %s, want about TTL - margin", d)
	}
	var ce *spend.CapError
	if _, err := alive.Reserve(ctx, "b", 0.5); !errors.As(err, &ce) || ce.Held < 0.6 {
		t.Fatalf("a reservation past the cap with $0.60 held: %v", err)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	a, _, _ := alive.Batch(ctx, "b")
	if a.Held() != 0 || a.Lapsed != spend.ToNanos(0.6) {
		t.Fatalf("after the TTL: held %d, lapsed %d; want the hold charged at its worst case", a.Held(), a.Lapsed)
	}
	// The lapsed hold still counts: 0.6 + 0.5 > 1.
	if _, err := alive.Reserve(ctx, "b", 0.5); !errors.Is(err, spend.ErrCapReached) {
		t.Fatalf("a lapsed reservation was released into the budget: %v", err)
	}
	r, err := alive.Reserve(ctx, "b", 0.3)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, 0.2); err != nil {
		t.Fatal(err)
	}
	// The "dead" replica settles late: its real cost replaces the worst case.
	if err := held.Settle(ctx, 0.1); err != nil {
		t.Fatal(err)
	}
	a, _, _ = alive.Batch(ctx, "b")
	if a.Spent() != spend.ToNanos(0.3) || a.Lapsed != 0 {
		t.Fatalf("after the late settle: spent %d, lapsed %d; want $0.30, 0", a.Spent(), a.Lapsed)
	}
}

// Settling an unknown outcome at the worst case, and a cap lowered below what is
// spent: nothing more is granted, and raising it again resumes.
func TestCapChangesPauseAndResume(t *testing.T) {
	t.Parallel()
	l := ledgers(t, 1, spend.Config{})[0]
	ctx := context.Background()
	if err := spend.ValidateCap(0); err == nil {
		t.Fatal("a cap of 0 accepted")
	}
	if _, err := l.SetBatchCap(ctx, "bad.id", spend.ByCommand, 1); err == nil {
		t.Fatal("a bad batch id accepted")
	}
	if _, err := l.SetBatchCap(ctx, "b", spend.ByManifest, 0.05); err != nil {
		t.Fatal(err)
	}
	r, err := l.Reserve(ctx, "b", 0.04)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Settle(ctx, r.Amount())
	_, err = l.Reserve(ctx, "b", 0.04)
	var ce *spend.CapError
	if !errors.As(err, &ce) || ce.Cap != 0.05 || ce.Spent != 0.04 {
		t.Fatalf("want a cap error with cap 0.05, spent 0.04: %v", err)
	}
	a, _, _ := l.Batch(ctx, "b")
	if !a.Paused() || a.Blocked.Need != spend.ToNanos(0.04) {
		t.Fatalf("not paused: %+v", a)
	}
	a, err = l.SetBatchCap(ctx, "b", spend.ByCommand, 0.1)
	if err != nil || a.Paused() || a.CapBy != spend.ByCommand {
		t.Fatalf("raise: %+v %v", a, err)
	}
	if _, err := l.Reserve(ctx, "b", 0.04); err != nil {
		t.Fatalf("after raising the cap: %v", err)
	}
}

// Items set aside by a cap are counted, published again once, and forgotten; one set
// aside again while being published stays for the next round.
func TestSetAsideAndRequeue(t *testing.T) {
	t.Parallel()
	l := ledgers(t, 1, spend.Config{})[0]
	ctx := context.Background()
	hdr := nats.Header{"Nats-Msg-Id": []string{"b:1:0"}, "X": []string{"y"}}
	for seq := 1; seq <= 3; seq++ {
		if err := l.SetAside(ctx, "b", seq, 0, "p.ready.b."+strconv.Itoa(seq), hdr, []byte("item")); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.SetAside(ctx, "b", 1, 0, "p.ready.b.1", hdr, []byte("item")) // twice: one record
	if err := l.SetAside(ctx, "c", 1, 0, "p.ready.c.1", nil, []byte("other")); err != nil {
		t.Fatal(err)
	}
	counts, err := l.HeldCounts(ctx)
	if err != nil || counts["b"] != 3 || counts["c"] != 1 {
		t.Fatalf("counts %v %v", counts, err)
	}
	var got []*nats.Msg
	n, err := l.Requeue(ctx, "b", 0, 100, func(_ context.Context, m *nats.Msg) error { got = append(got, m); return nil })
	if err != nil || n != 3 || len(got) != 3 {
		t.Fatalf("requeued %d (%v)", n, err)
	}
	for _, m := range got {
		if m.Header.Get("Nats-Msg-Id") != "" || m.Header.Get("X") != "y" || string(m.Data) != "item" {
			t.Fatalf("requeued message %s: headers %v data %q", m.Subject, m.Header, m.Data)
		}
	}
	if n, _ := l.HeldCount(ctx, "b"); n != 0 {
		t.Fatalf("%d still held after the requeue", n)
	}
	if n, _ := l.HeldCount(ctx, "c"); n != 1 {
		t.Fatalf("another batch's item was requeued: %d left", n)
	}
}

// A pause lasts while the refused call still would not fit: once the calls in flight
// settle below their worst case and make room for it, the account is no longer
// paused (the scheduler then puts the held items back).
func TestPauseEndsWhenCallsInFlightMakeRoom(t *testing.T) {
	t.Parallel()
	l := ledgers(t, 1, spend.Config{})[0]
	ctx := context.Background()
	if _, err := l.SetBatchCap(ctx, "b", spend.ByCommand, 1); err != nil {
		t.Fatal(err)
	}
	inFlight, err := l.Reserve(ctx, "b", 0.6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reserve(ctx, "b", 0.5); !errors.Is(err, spend.ErrCapReached) {
		t.Fatalf("want the cap: %v", err)
	}
	if a, _, _ := l.Batch(ctx, "b"); !a.Paused() {
		t.Fatal("not paused")
	}
	held, err := l.Held(ctx, []string{"b", "other"})
	if err != nil || !held["b"] || held["other"] {
		t.Fatalf("held %v %v", held, err)
	}
	if err := inFlight.Settle(ctx, 0.1); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := l.Batch(ctx, "b"); a.Paused() {
		t.Fatalf("still paused with $%.2f spent and nothing held", a.Spent().USD())
	}
}

// Items set aside of a generation below the one given (a replaced batch's old items,
// or any of a batch gone) are forgotten without being published: no one pays for an
// item whose result would be dropped.
func TestRequeueDropsSupersededGenerations(t *testing.T) {
	t.Parallel()
	l := ledgers(t, 1, spend.Config{})[0]
	ctx := context.Background()
	for _, it := range []struct{ seq, gen int }{{1, 0}, {2, 0}, {1, 2}, {3, 3}} {
		subj := fmt.Sprintf("p.ready.b.%d.%d", it.seq, it.gen)
		if err := l.SetAside(ctx, "b", it.seq, it.gen, subj, nil, []byte("item")); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	n, err := l.Requeue(ctx, "b", 2, 100, func(_ context.Context, m *nats.Msg) error { got = append(got, m.Subject); return nil })
	slices.Sort(got)
	if err != nil || n != 2 || !slices.Equal(got, []string{"p.ready.b.1.2", "p.ready.b.3.3"}) {
		t.Fatalf("requeued %d %v (%v); want generations 2 and 3's items only", n, got, err)
	}
	if n, _ := l.HeldCount(ctx, "b"); n != 0 {
		t.Fatalf("%d still held: the superseded ones are not forgotten", n)
	}
	// A batch gone: everything is forgotten, nothing published.
	_ = l.SetAside(ctx, "gone", 1, 0, "p.ready.gone.1", nil, []byte("item"))
	n, err = l.Requeue(ctx, "gone", math.MaxInt, 100, func(_ context.Context, m *nats.Msg) error { t.Errorf("published %s", m.Subject); return nil })
	if c, _ := l.HeldCount(ctx, "gone"); err != nil || n != 0 || c != 0 {
		t.Fatalf("batch gone: requeued %d, %d left (%v)", n, c, err)
	}
}
