package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// replicas opens n caches on one bucket, each on a NATS connection of its own, like n
// processor replicas.
func replicas(t *testing.T, n int, cfg cache.Config) ([]*cache.Cache, []*nats.Conn) {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	return replicasOn(t, srv, c, n, cfg)
}

func replicasOn(t *testing.T, srv *natsx.Embedded, c *contract.Contract, n int, cfg cache.Config) ([]*cache.Cache, []*nats.Conn) {
	t.Helper()
	var cs []*cache.Cache
	var ncs []*nats.Conn
	for range n {
		nc, js := natstest.Connect(t, srv.ClientURL())
		ch, err := cache.New(context.Background(), js, c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, ch)
		ncs = append(ncs, nc)
	}
	return cs, ncs
}

// Identical look-ups on 100 replicas at the same moment pay once: one computes, the
// others wait for its answer and get it as a hit.
func TestIdenticalLookupsOnManyReplicasPayOnce(t *testing.T) {
	t.Parallel()
	const n = 100
	// A long OpTimeout: 100 replicas asking at the same instant, under -race on a small
	// machine, can take seconds; this test is about paying once, not about speed.
	cs, _ := replicas(t, n, cache.Config{OpTimeout: 20 * time.Second})
	var calls, hits atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	values := make([]string, n)
	for i, c := range cs {
		wg.Go(func() {
			<-start
			e, hit, err := c.Do(context.Background(), "s1.m.word", func() (cache.Entry, error) {
				calls.Add(1)
				time.Sleep(300 * time.Millisecond) // an API call
				return entry(1, "m", "the answer"), nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			if hit {
				hits.Add(1)
			}
			values[i] = string(e.Value)
		})
	}
	close(start)
	wg.Wait()
	if calls.Load() != 1 || hits.Load() != n-1 {
		t.Fatalf("%d replicas looking up one key: %d computations, %d hits; want 1 and %d", n, calls.Load(), hits.Load(), n-1)
	}
	for i, v := range values {
		if v != `"the answer"` {
			t.Fatalf("replica %d got %s", i, v)
		}
	}
}

// A replica that dies while paying for an answer holds the others up for at most
// ClaimTTL: then one of them takes the claim over and pays.
func TestClaimOfADeadReplicaExpires(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	cs, ncs := replicas(t, 2, cache.Config{ClaimTTL: ttl})
	dying, survivor := cs[0], cs[1]
	started := make(chan struct{})
	go func() {
		_, _, _ = dying.Do(context.Background(), "s2.m.word", func() (cache.Entry, error) {
			close(started)
			select {} // the process hangs, then dies: it never answers
		})
	}()
	<-started
	ncs[0].Close() // its claim is renewed no more
	begin := time.Now()
	var calls atomic.Int32
	e, hit, err := survivor.Do(context.Background(), "s2.m.word", func() (cache.Entry, error) {
		calls.Add(1)
		return entry(2, "m", "paid again"), nil
	})
	waited := time.Since(begin)
	if err != nil || hit || calls.Load() != 1 || string(e.Value) != `"paid again"` {
		t.Fatalf("survivor: %s, hit %v, %d calls, err %v; want it to pay once", e.Value, hit, calls.Load(), err)
	}
	t.Logf("the survivor took over after %v (ClaimTTL %v)", waited, ttl)
	if waited > ttl+2*time.Second {
		t.Errorf("the survivor waited %v for a dead claimant, want about ClaimTTL (%v)", waited, ttl)
	}
}

// When the replica paying fails, the claim is released at once and a waiting replica
// pays instead: failures are not shared, answers are.
func TestFailedClaimantHandsOver(t *testing.T) {
	t.Parallel()
	cs, _ := replicas(t, 2, cache.Config{})
	boom := errors.New("boom")
	started, fail := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := cs[0].Do(context.Background(), "s1.m.flaky", func() (cache.Entry, error) {
			close(started)
			<-fail
			return cache.Entry{}, boom
		})
		errc <- err
	}()
	<-started
	done := make(chan struct{})
	var e cache.Entry
	var hit bool
	var err error
	go func() {
		defer close(done)
		e, hit, err = cs[1].Do(context.Background(), "s1.m.flaky", func() (cache.Entry, error) {
			return entry(1, "m", "second try"), nil
		})
	}()
	select {
	case <-done:
		t.Fatal("the second replica did not wait for the first one's claim")
	case <-time.After(300 * time.Millisecond):
	}
	begin := time.Now()
	close(fail)
	if err := <-errc; !errors.Is(err, boom) {
		t.Fatalf("first replica: %v, want its own failure", err)
	}
	<-done
	if err != nil || hit || string(e.Value) != `"second try"` {
		t.Fatalf("second replica: %s, hit %v, err %v; want its own answer", e.Value, hit, err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the second replica paid %v after the failure, want at once (not after ClaimTTL)", d)
	}
}

// A look-up whose context ends while another replica holds the claim returns at once.
func TestWaitForClaimEndsWithContext(t *testing.T) {
	t.Parallel()
	cs, _ := replicas(t, 2, cache.Config{})
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go func() {
		_, _, _ = cs[0].Do(context.Background(), "s1.m.slow", func() (cache.Entry, error) {
			close(started)
			<-release
			return entry(1, "m", "v"), nil
		})
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := cs[1].Do(ctx, "s1.m.slow", func() (cache.Entry, error) {
		t.Error("computed while another replica held the claim")
		return cache.Entry{}, nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do returned %v, want the context's deadline", err)
	}
}

// The claims bucket lives in memory: after a NATS server restart lost it, the next
// look-up creates it again and pays as usual (no item waits forever).
func TestClaimsBucketLostIsCreatedAgain(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	cs, _ := replicasOn(t, srv, c, 1, cache.Config{})
	if err := js.DeleteKeyValue(context.Background(), c.Name(cache.DefaultBucketSuffix)+"_CLAIMS"); err != nil {
		t.Fatal(err)
	}
	e, hit, err := cs[0].Do(context.Background(), "s1.m.after-restart", func() (cache.Entry, error) {
		return entry(1, "m", "v"), nil
	})
	if err != nil || hit || string(e.Value) != `"v"` {
		t.Fatalf("Do after the claims bucket was lost: %s, hit %v, err %v", e.Value, hit, err)
	}
}
