package sequencer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func TestLeaseIsExclusiveRenewableAndExpires(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	const ttl = time.Second
	a, err := openLeases(ctx, js, c, ttl, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openLeases(ctx, js, c, ttl, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.acquire(ctx, "batch1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.acquire(ctx, "batch1"); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("second acquire: %v, want errLeaseHeld", err)
	}
	// Renewing keeps it past its TTL.
	for range 4 {
		time.Sleep(ttl / 2)
		if err := la.renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.acquire(ctx, "batch1"); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("acquire of a renewed lease: %v", err)
	}
	// Without renewal it expires; then b takes it and a's renewal fails.
	var lb *lease
	natstest.Eventually(t, 10*ttl, func() bool {
		lb, err = b.acquire(ctx, "batch1")
		return err == nil
	}, "the abandoned lease never expired")
	if err := la.renew(ctx); err == nil {
		t.Fatal("the old owner renewed a lease it lost")
	}
	// Releasing lets another take it at once.
	lb.release(ctx)
	if _, err := a.acquire(ctx, "batch1"); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}

// Three sequencers appending the same batch at once, with no lease to keep them apart
// (as after a lease lost to a long pause): the expected-last-sequence check on every
// append still leaves the log exact.
func TestConcurrentAppendersWithoutLeaseKeepTheLogExact(t *testing.T) {
	t.Parallel()
	for _, oneByOne := range []bool{false, true} {
		srv := natstest.Server(t)
		_, js := natstest.Connect(t, srv.ClientURL())
		c := natstest.Contract(t, js)
		ctx := context.Background()
		const n = 300
		m := flashpipe.Manifest{BatchID: "nolease", Count: n, CreatedAt: time.Now()}
		for seq := 1; seq <= n; seq++ {
			r := &flashpipe.Result{BatchID: "nolease", Seq: seq, Item: flashpipe.Item{Position: int64(seq), Term: "t"}, Status: flashpipe.StatusOK}
			msg, _ := c.ResultMsg(r)
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		results, err := js.Stream(ctx, c.ResultsStream())
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 3)
		for range 3 {
			s, err := New(js, c, Config{Window: 4, MaxRun: 8, AtomicMinRun: 4, OneByOne: oneByOne, PollInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if ordered, err := js.Stream(ctx, c.OrderedStream()); err == nil {
				s.atomic = ordered.CachedInfo().Config.AllowAtomicPublish && !oneByOne
			}
			go func() { errs <- s.sequence(ctx, results, m, nil) }()
		}
		for range 3 {
			if err := <-errs; err != nil {
				t.Logf("an appender gave up: %v", err) // allowed: it lost every race
			}
		}
		keys := natstest.OrderedKeys(t, js, c, "nolease")
		if len(keys) != n+2 || keys[0].Kind != flashpipe.EventManifest || keys[n+1].Kind != flashpipe.EventComplete {
			t.Fatalf("one-by-one %v: %d events, want %d", oneByOne, len(keys), n+2)
		}
		for i := 1; i <= n; i++ {
			if keys[i].Seq != i {
				t.Fatalf("one-by-one %v: event %d has seq %d", oneByOne, i, keys[i].Seq)
			}
		}
	}
}
