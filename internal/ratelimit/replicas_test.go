package ratelimit_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/ratelimit"
)

// A short heartbeat TTL for the tests: replicas heartbeat every 200 ms, and one is
// counted by every other 400 ms after it started.
const testHeartbeatTTL = 600 * time.Millisecond

// Replicas count each other through their heartbeats: the count rises as replicas
// start and falls once a closed replica's heartbeat has expired.
func TestLiveReplicaCount(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	cfg := ratelimit.Config{RPM: testRPM, HeartbeatTTL: testHeartbeatTTL}
	var ls []*ratelimit.Limiter
	for range 3 {
		ls = append(ls, r.limiter(t, cfg))
	}
	counts := func(want int) func() bool {
		return func() bool {
			for _, l := range ls {
				if l.Stats().Replicas != want {
					return false
				}
			}
			return true
		}
	}
	eventually(t, 5*time.Second, counts(3), "replicas do not all count 3")
	// Another limit's replicas are not counted.
	other := r.limiter(t, ratelimit.Config{RPM: testRPM, Key: "other", HeartbeatTTL: testHeartbeatTTL})
	if n := other.Stats().Replicas; n != 1 {
		t.Errorf("the only replica of another key counts %d", n)
	}
	ls[2].Close()
	ls = ls[:2]
	eventually(t, 5*time.Second, counts(2), "the closed replica is still counted")
}

// With NATS down, every replica spends budget/(live replicas): together they stay
// within the budget (over every interval, through the outage), and they still use
// most of it.
func TestFallbackNeverExceedsTheBudget(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const n = 8
	var ls []*ratelimit.Limiter
	for range n {
		ls = append(ls, r.limiter(t, ratelimit.Config{RPM: testRPM, Buffer: 1, HeartbeatTTL: testHeartbeatTTL}))
	}
	eventually(t, 5*time.Second, func() bool {
		for _, l := range ls {
			if st := l.Stats(); st.Replicas != n || st.FallbackShare != 1.0/n {
				return false
			}
		}
		return true
	}, "replicas do not count each other")

	g := newGrants()
	ctx, cancel := context.WithCancel(context.Background())
	var waits []func()
	for i, l := range ls {
		waits = append(waits, hammer(ctx, l, i, 4, g))
	}
	stop := func() {
		cancel()
		for _, w := range waits {
			w()
		}
	}
	defer stop()
	eventually(t, 5*time.Second, func() bool { return len(g.sorted()) >= 100 }, "no grants with NATS up")

	down := time.Now()
	r.srv.Shutdown()
	eventually(t, 10*time.Second, func() bool {
		for _, l := range ls {
			if !l.Stats().Fallback {
				return false
			}
		}
		return true
	}, "not every replica fell back")
	const span = 4 * time.Second
	time.Sleep(time.Until(down.Add(span)))
	stop()

	times := g.sorted()
	n0 := g.in(down.Add(time.Second), down.Add(span))
	t.Logf("NATS down: %d grants from 1s to %v after (budget %.0f/s)", n0, span, testPerSec)
	if min := 0.7 * testPerSec * (span - time.Second).Seconds(); float64(n0) < min {
		t.Errorf("%d grants with NATS down, want at least %.0f: the shares must still flow", n0, min)
	}
	for i, l := range ls {
		st := l.Stats()
		if math.Abs(st.FallbackShare-1.0/n) > 1e-9 {
			t.Errorf("replica %d spends %v of the budget in the fallback, want 1/%d", i, st.FallbackShare, n)
		}
	}
	// Through the switch and the outage, the sum never exceeds the budget by more
	// than one Window's worth, as with NATS up.
	checkBound(t, times, testPerSec, ratelimit.DefaultWindow, 2)
}

// A replica too new to be counted by every other spends nothing while NATS is down:
// the others' shares already add up to the budget.
func TestNewReplicaSpendsNothingInAFallback(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	old := r.limiter(t, ratelimit.Config{RPM: testRPM, HeartbeatTTL: time.Minute})
	young := r.limiter(t, ratelimit.Config{RPM: testRPM, HeartbeatTTL: time.Minute})
	if st := young.Stats(); st.Replicas != 2 || st.FallbackShare != 0 {
		t.Fatalf("new replica: %d replicas, share %v; want 2 and 0", st.Replicas, st.FallbackShare)
	}
	if st := old.Stats(); st.Replicas != 1 {
		t.Fatalf("the old replica counts %d before its next heartbeat, want 1", st.Replicas)
	}
	r.srv.Shutdown()
	if !blocked(young, 3*time.Second) {
		t.Error("a replica not yet counted by the others was granted a request with NATS down")
	}
	if st := young.Stats(); !st.Fallback || st.Granted != 0 {
		t.Errorf("new replica with NATS down: fallback %v, %d granted; want true, 0", st.Fallback, st.Granted)
	}
}
