package ratelimit_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// rig is an embedded NATS server and a contract; each limiter gets its own connection,
// like a replica.
type rig struct {
	srv *natsx.Embedded
	url string
	js  jetstream.JetStream
	c   *contract.Contract
}

func newRig(t testing.TB) *rig {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	return &rig{srv: srv, url: srv.ClientURL(), js: js, c: natstest.Contract(t, js)}
}

// limiter starts a replica on a connection of its own; it is closed when the test ends.
func (r *rig) limiter(t testing.TB, cfg ratelimit.Config) *ratelimit.Limiter {
	t.Helper()
	_, js := natstest.Connect(t, r.url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ratelimit.New(ctx, js, r.c, cfg)
	if err != nil {
		t.Fatalf("ratelimit.New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// grants records when Waits returned, per replica.
type grants struct {
	mu    sync.Mutex
	times []time.Time
	by    map[int]int
}

func newGrants() *grants { return &grants{by: map[int]int{}} }

func (g *grants) add(replica int, at time.Time) {
	g.mu.Lock()
	g.times = append(g.times, at)
	g.by[replica]++
	g.mu.Unlock()
}

// sorted returns the grant times in order.
func (g *grants) sorted() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.times)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func (g *grants) count(replica int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.by[replica]
}

// in counts the grants in [from, to).
func (g *grants) in(from, to time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, at := range g.times {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// hammer calls Wait from workers goroutines as fast as it returns until ctx ends,
// recording every grant. The returned func waits for the workers.
func hammer(ctx context.Context, l *ratelimit.Limiter, replica, workers int, g *grants) (wait func()) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := l.Wait(ctx); err != nil {
					return
				}
				g.add(replica, time.Now())
			}
		})
	}
	return wg.Wait
}

// checkBound checks that over every interval, n grants fit budget·length + one
// window's worth (+ slack for the test's own scheduling delays): it is enough to check
// the intervals from one grant to another.
func checkBound(t testing.TB, times []time.Time, perSec float64, window time.Duration, slack float64) {
	t.Helper()
	worst, wi, wj := -1e18, 0, 0
	for i := range times {
		for j := i; j < len(times); j++ {
			excess := float64(j-i+1) - perSec*times[j].Sub(times[i]).Seconds()
			if excess > worst {
				worst, wi, wj = excess, i, j
			}
		}
	}
	allowed := perSec*window.Seconds() + slack
	t.Logf("worst interval: %d grants in %v, %.1f above the rate (allowed: one window = %.1f, + slack %.1f)",
		wj-wi+1, times[wj].Sub(times[wi]), worst, perSec*window.Seconds(), slack)
	if worst > allowed {
		t.Errorf("%d grants in %v: %.1f above budget·t, more than one window's worth (%.1f)",
			wj-wi+1, times[wj].Sub(times[wi]), worst, allowed)
	}
}

// testClock is time.Now shifted by what the test advanced it.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// eventually polls cond until it holds or within passes.
func eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	natstest.Eventually(t, within, cond, msg, args...)
}

// blocked reports whether Wait is still waiting after d.
func blocked(l *ratelimit.Limiter, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Wait(ctx) != nil
}

// measure is how long the throughput tests run (shorter with -short).
func measure(long time.Duration) time.Duration {
	if testing.Short() {
		return 3 * time.Second
	}
	return long
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
