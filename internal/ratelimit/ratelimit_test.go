package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/race"
)

// The throughput tests use a budget of 3000 RPM (50 requests per second) and the
// default Window of one second.
const (
	testRPM    = 3000
	testPerSec = testRPM / 60.0
)

// run hammers the limiters (workers goroutines each) for d and returns the grants and
// when the run started and ended.
func run(t testing.TB, ls []*ratelimit.Limiter, workers int, d time.Duration) (g *grants, start, end time.Time) {
	t.Helper()
	g = newGrants()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start = time.Now()
	var waits []func()
	for i, l := range ls {
		waits = append(waits, hammer(ctx, l, i, workers, g))
	}
	for _, w := range waits {
		w()
	}
	return g, start, start.Add(d)
}

// utilisation checks the achieved rate: over the whole run (which includes the
// schedule's initial half-window burst) and in the steady state after the first second.
func utilisation(t testing.TB, g *grants, start, end time.Time, perSec, min float64) (steady float64) {
	t.Helper()
	secs := end.Sub(start).Seconds()
	total := g.in(start, end.Add(time.Second))
	steady = float64(g.in(start.Add(time.Second), end)) / (perSec * (secs - 1))
	overall := float64(total) / (perSec * secs)
	t.Logf("%d grants in %.0fs at a budget of %.0f/s: %.1f%% overall, %.1f%% in the steady state",
		total, secs, perSec, 100*overall, 100*steady)
	if steady < min || overall < min {
		t.Errorf("achieved %.1f%% (steady %.1f%%) of the budget, want >= %.0f%%", 100*overall, 100*steady, 100*min)
	}
	if max := perSec*secs + perSec*ratelimit.DefaultWindow.Seconds(); float64(total) > max {
		t.Errorf("%d grants in %.0fs, more than budget·t + one window (%.0f)", total, secs, max)
	}
	return steady
}

// BenchmarkUtilisation measures the share of the budget 1 and 4 saturating replicas
// achieve over 30 s, and checks the bound over every interval:
//
//	go test -run '^$' -bench Utilisation -benchtime 1x ./internal/ratelimit/
func BenchmarkUtilisation(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			r := newRig(b)
			var ls []*ratelimit.Limiter
			for range n {
				ls = append(ls, r.limiter(b, ratelimit.Config{RPM: testRPM, Buffer: 1}))
			}
			for b.Loop() {
				g, start, end := run(b, ls, 8, 30*time.Second)
				b.ReportMetric(100*utilisation(b, g, start, end, testPerSec, 0.95), "%budget")
				checkBound(b, g.sorted(), testPerSec, ratelimit.DefaultWindow, 2)
			}
		})
	}
}

// (a) Four replicas on four connections share one budget: the sum never exceeds it over
// any interval, and together they use all of it.
func TestFourReplicasShareOneBudget(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var ls []*ratelimit.Limiter
	for range 4 {
		ls = append(ls, r.limiter(t, ratelimit.Config{RPM: testRPM, Buffer: 1}))
	}
	g, start, end := run(t, ls, 8, measure(8*time.Second))
	utilisation(t, g, start, end, testPerSec, 0.95)
	checkBound(t, g.sorted(), testPerSec, ratelimit.DefaultWindow, 2)
	for i, l := range ls {
		st := l.Stats()
		t.Logf("replica %d: %d grants, %d leases, %d conflicts", i, g.count(i), st.Leases, st.Conflicts)
		if g.count(i) == 0 {
			t.Errorf("replica %d got nothing", i)
		}
		if st.Fallbacks != 0 || st.Errors != 0 {
			t.Errorf("replica %d: %d fallbacks, %d errors", i, st.Fallbacks, st.Errors)
		}
	}
}

// (b) One replica alone uses the whole budget.
func TestOneReplicaUsesTheBudget(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	l := r.limiter(t, ratelimit.Config{RPM: testRPM, Buffer: 1})
	g, start, end := run(t, []*ratelimit.Limiter{l}, 8, measure(10*time.Second))
	utilisation(t, g, start, end, testPerSec, 0.95)
	checkBound(t, g.sorted(), testPerSec, ratelimit.DefaultWindow, 2)
}

// (c) Idle replicas reserve nothing: a busy one gets the budget they do not use.
func TestIdleReplicasReserveNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// The default Buffer: 3750 RPM × 0.8 = 50 requests per second.
	busy := r.limiter(t, ratelimit.Config{RPM: 3750})
	for range 3 {
		idle := r.limiter(t, ratelimit.Config{RPM: 3750})
		if err := idle.Wait(context.Background()); err != nil { // joined once, then idle
			t.Fatal(err)
		}
	}
	g, start, end := run(t, []*ratelimit.Limiter{busy}, 8, measure(8*time.Second))
	utilisation(t, g, start, end, testPerSec, 0.95)
}

// (d) A 429 on one replica pauses all of them until the cooldown ends, and they come
// back at the lowered rate factor.
func TestThrottledPausesAllReplicas(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var ls []*ratelimit.Limiter
	for range 4 {
		ls = append(ls, r.limiter(t, ratelimit.Config{RPM: testRPM, Buffer: 1}))
	}
	g := newGrants()
	ctx, cancel := context.WithCancel(context.Background())
	var waits []func()
	for i, l := range ls {
		waits = append(waits, hammer(ctx, l, i, 8, g))
	}
	defer func() {
		cancel()
		for _, w := range waits {
			w()
		}
	}()
	eventually(t, 5*time.Second, func() bool { return len(g.sorted()) >= 50 }, "no grants before the 429")

	const cooldown = 1500 * time.Millisecond
	thrown := time.Now()
	ls[0].Throttled(cooldown, time.Time{})
	until := ls[0].Stats().CooldownUntil
	if d := until.Sub(thrown); d < cooldown || d > cooldown+time.Second {
		t.Fatalf("cooldown until %v after the 429, want %v", d, cooldown)
	}
	eventually(t, 3*time.Second, func() bool {
		for _, l := range ls {
			if !l.Stats().CooldownUntil.Equal(until) {
				return false
			}
		}
		return true
	}, "not every replica saw the cooldown")
	seen := time.Now()
	t.Logf("all replicas saw the cooldown %v after the 429", seen.Sub(thrown))

	// A second 429 during the cooldown (a request sent before it) neither lowers the
	// factor again nor shortens the cooldown.
	ls[1].Throttled(100*time.Millisecond, time.Time{})
	for i, l := range ls {
		st := l.Stats()
		if math.Abs(st.Factor-ratelimit.DecreaseFactor) > 1e-9 || st.Cooldowns != 1 {
			t.Errorf("replica %d: factor %v, %d cooldowns; want %v, 1", i, st.Factor, st.Cooldowns, ratelimit.DecreaseFactor)
		}
	}
	if !ls[1].Stats().CooldownUntil.Equal(until) {
		t.Errorf("a shorter cooldown changed the end to %v, want %v", ls[1].Stats().CooldownUntil, until)
	}

	// Nothing is granted during the cooldown once every replica knows of it (50 ms
	// for Waits that had already passed their check when it arrived).
	eventually(t, 5*time.Second, func() bool { return g.in(until, until.Add(time.Hour)) > 0 }, "no grants after the cooldown")
	if n := g.in(seen.Add(50*time.Millisecond), until); n != 0 {
		t.Errorf("%d grants during the cooldown", n)
	}
	t.Logf("grants between the 429 and all replicas knowing: %d", g.in(thrown, seen))

	// Back at factor 0.7 of the budget (the factor recovers only after RecoverEvery).
	from := until.Add(500 * time.Millisecond)
	to := from.Add(2500 * time.Millisecond)
	time.Sleep(time.Until(to.Add(100 * time.Millisecond)))
	n := g.in(from, to)
	rate := testPerSec * ratelimit.DecreaseFactor
	t.Logf("after the cooldown: %d grants in %v at factor %.2f (budget %.0f/s)", n, to.Sub(from), ratelimit.DecreaseFactor, rate)
	if lo, hi := 0.9*rate*2.5, rate*2.5+rate*ratelimit.DefaultWindow.Seconds(); float64(n) < lo || float64(n) > hi {
		t.Errorf("%d grants in 2.5s after the cooldown, want %.0f to %.0f", n, lo, hi)
	}
}

// The rate factor: lowered once per cooldown, floored, recovering step by step; and the
// cooldown's end, defaults and cap.
func TestRateFactorAndCooldownRules(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	clk := &testClock{}
	cfg := ratelimit.Config{RPM: testRPM, RecoverEvery: 10 * time.Second, Clock: clk.Now}
	a, b := r.limiter(t, cfg), r.limiter(t, cfg)
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	both := func(want float64) {
		t.Helper()
		eventually(t, 2*time.Second, func() bool { return near(a.Stats().Factor, want) && near(b.Stats().Factor, want) },
			"factor %v on both replicas (got %v and %v)", want, a.Stats().Factor, b.Stats().Factor)
	}

	now := clk.Now()
	a.Throttled(0, time.Time{})
	if d := a.Stats().CooldownUntil.Sub(now); d < ratelimit.DefaultCooldown || d > ratelimit.DefaultCooldown+time.Second {
		t.Errorf("cooldown without Retry-After or reset: %v, want %v", d, ratelimit.DefaultCooldown)
	}
	both(0.7)
	reset := clk.Now().Add(3 * time.Second)
	b.Throttled(time.Second, reset) // in the same cooldown: extends it, same factor
	eventually(t, 2*time.Second, func() bool { return a.Stats().CooldownUntil.Equal(reset) }, "reset did not extend the cooldown")
	both(0.7)
	if !blocked(a, 100*time.Millisecond) {
		t.Error("Wait granted during the cooldown")
	}

	clk.Advance(10 * time.Second) // one recovery step
	both(0.75)
	clk.Advance(60 * time.Second)
	both(1)
	if blocked(b, 2*time.Second) {
		t.Error("Wait blocked after the cooldown")
	}

	// Each new cooldown lowers it again, down to the floor.
	for _, want := range []float64{0.7, 0.49, 0.343, 0.25, 0.25} {
		a.Throttled(time.Second, time.Time{})
		both(want)
		clk.Advance(2 * time.Second) // past the cooldown, less than a recovery step
	}

	now = clk.Now()
	b.Throttled(time.Hour, time.Time{})
	if d := b.Stats().CooldownUntil.Sub(now); d > ratelimit.MaxCooldown+time.Second || d < ratelimit.MaxCooldown-time.Second {
		t.Errorf("an hour's Retry-After gave a cooldown of %v, want the cap %v", d, ratelimit.MaxCooldown)
	}
	eventually(t, 2*time.Second, func() bool { return a.Stats().Cooldowns == 7 }, "replica a saw %d cooldowns, want 7", a.Stats().Cooldowns)
}

// (e) Against the simulator's own RPM limit: four clients, each behind its own limiter
// at the API's full RPM, never get a 429 and use at least 90% of it.
func TestSimulatorNeverAnswers429(t *testing.T) {
	t.Parallel()
	const rpm = 6000
	sim, err := llmsim.New(llmsim.Config{RPM: rpm})
	if err != nil {
		t.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	r := newRig(t)

	d := measure(8 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req := stages.Stage1Request(stages.DefaultConfig(), flashpipe.Item{Position: 1, Term: "사과", Type: "noun"})
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		ok, throttled    int
		otherErr         error
		start            = time.Now()
		tokens, observed int64
		ls               []*ratelimit.Limiter
	)
	for i := range 4 {
		l := r.limiter(t, ratelimit.Config{RPM: rpm, Buffer: 1})
		ls = append(ls, l)
		api, err := llm.New(llm.Config{BaseURL: url, APIKey: "test-key"})
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			wg.Go(func() {
				for {
					if err := l.Wait(ctx); err != nil {
						return
					}
					resp, err := api.Complete(ctx, req)
					var ae *llm.APIError
					switch {
					case err == nil:
						l.Observe(int(resp.Usage.PromptTokens + resp.Usage.CompletionTokens))
						mu.Lock()
						ok++
						tokens += resp.Usage.PromptTokens + resp.Usage.CompletionTokens
						mu.Unlock()
					case errors.As(err, &ae) && ae.Status == 429:
						l.Throttled(ae.RetryAfter, ae.RateLimit.Reset)
						mu.Lock()
						throttled++
						mu.Unlock()
					case ctx.Err() == nil:
						mu.Lock()
						otherErr = fmt.Errorf("replica %d: %w", i, err)
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	for _, l := range ls {
		observed += l.Stats().Tokens
	}
	secs := time.Since(start).Seconds()
	st := sim.Stats()
	achieved := float64(ok) / (rpm / 60.0 * secs)
	t.Logf("simulator at %d RPM: %d answers in %.1fs (%.1f%% of its limit), %d rate-limited, %d requests",
		rpm, ok, secs, 100*achieved, st.RateLimited, st.Requests)
	if otherErr != nil {
		t.Errorf("unexpected error: %v", otherErr)
	}
	if st.RateLimited != 0 || throttled != 0 {
		t.Errorf("the simulator answered %d 429s (clients saw %d)", st.RateLimited, throttled)
	}
	if achieved < 0.9 && !race.Enabled { // the race detector slows the clients, not the limit
		t.Errorf("achieved %.1f%% of the simulator's RPM, want >= 90%%", 100*achieved)
	}
	if observed != tokens {
		t.Errorf("limiters observed %d tokens, the answers reported %d", observed, tokens)
	}
}

// (f) With NATS down, Wait falls back to the local share (budget / N, here the floor
// AssumedReplicas = 4 over a live count of 1) without spinning, and coordinates again
// once NATS is back.
func TestFallbackWhenNATSIsDown(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	port := srv.Server().Addr().(*net.TCPAddr).Port
	r := &rig{srv: srv, url: srv.ClientURL()}
	_, r.js = natstest.Connect(t, r.url)
	r.c = natstest.Contract(t, r.js)
	var logs syncBuffer
	l := r.limiter(t, ratelimit.Config{RPM: testRPM, Buffer: 1, AssumedReplicas: 4, Logger: newLogger(&logs)})

	g := newGrants()
	ctx, cancel := context.WithCancel(context.Background())
	wait := hammer(ctx, l, 0, 8, g)
	defer func() { cancel(); wait() }()
	eventually(t, 5*time.Second, func() bool { return len(g.sorted()) >= 25 }, "no grants with NATS up")

	srv.Shutdown()
	eventually(t, 10*time.Second, func() bool { return l.Stats().Fallback }, "no fallback with NATS down")
	from, errs := time.Now(), l.Stats().Errors
	const span = 3 * time.Second
	time.Sleep(span)
	n := g.in(from, from.Add(span))
	share := testPerSec / 4
	t.Logf("NATS down: %d grants in %v (local share %.1f/s), %d failed KV operations", n, span, share, l.Stats().Errors-errs)
	// One request of burst, plus the requests leased before NATS went that were still
	// valid (at most a chunk).
	if max := share*span.Seconds() + 1 + 4; float64(n) > max {
		t.Errorf("%d grants in %v with NATS down, more than the local share allows (%.0f)", n, span, max)
	}
	if min := 0.7 * share * span.Seconds(); float64(n) < min {
		t.Errorf("%d grants in %v with NATS down, want at least %.0f: the share must still flow", n, span, min)
	}
	if e := l.Stats().Errors - errs; e > 5 {
		t.Errorf("%d KV operations failed in %v with NATS down: the limiter retries too eagerly", e, span)
	}
	if !strings.Contains(logs.String(), "local share") {
		t.Errorf("fallback not logged:\n%s", logs.String())
	}

	// Back on the same port, with an empty store: the bucket is re-created.
	srv2, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: t.TempDir(), Port: port})
	if err != nil {
		t.Fatalf("restart NATS on port %d: %v", port, err)
	}
	t.Cleanup(srv2.Shutdown)
	eventually(t, 15*time.Second, func() bool { return !l.Stats().Fallback }, "no recovery after NATS came back")
	back := time.Now()
	time.Sleep(2 * time.Second)
	n = g.in(back.Add(500*time.Millisecond), back.Add(2*time.Second))
	t.Logf("NATS back: %d grants in 1.5s", n)
	if min := 0.9 * testPerSec * 1.5; float64(n) < min {
		t.Errorf("%d grants in 1.5s after NATS came back, want at least %.0f", n, min)
	}
	if !strings.Contains(logs.String(), "sharing the rate limit again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// TPM: Observe's tokens, shared by the replicas, hold Wait while the last minute's
// tokens reach the budget.
func TestTokensPerMinute(t *testing.T) {
	t.Parallel()
	for _, rpm := range []int{0, 6000} {
		t.Run(fmt.Sprintf("rpm=%d", rpm), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			clk := &testClock{}
			cfg := ratelimit.Config{RPM: rpm, TPM: 1000, Buffer: 1, Clock: clk.Now}
			a, b := r.limiter(t, cfg), r.limiter(t, cfg)
			a.Observe(600)
			b.Observe(300)
			eventually(t, 2*time.Second, func() bool { return a.Stats().MinuteTokens == 900 && b.Stats().MinuteTokens == 900 },
				"replicas did not share their tokens (%d and %d, want 900)", a.Stats().MinuteTokens, b.Stats().MinuteTokens)
			for _, l := range []*ratelimit.Limiter{a, b} {
				if blocked(l, 2*time.Second) {
					t.Fatal("Wait blocked at 900 of 1000 tokens")
				}
			}
			b.Observe(200) // 1100: b knows at once, a once b flushed
			if !blocked(b, 100*time.Millisecond) {
				t.Error("Wait granted at 1100 of 1000 tokens")
			}
			eventually(t, 2*time.Second, func() bool { return blocked(a, 50*time.Millisecond) },
				"the other replica never saw the tokens")
			clk.Advance(30 * time.Second)
			if !blocked(a, 100*time.Millisecond) || !blocked(b, 100*time.Millisecond) {
				t.Error("Wait granted 30s later: the tokens are still within the minute")
			}
			clk.Advance(32 * time.Second)
			for _, l := range []*ratelimit.Limiter{a, b} {
				if blocked(l, 2*time.Second) {
					t.Error("Wait blocked after the tokens left the minute")
				}
			}
			if st := b.Stats(); st.Tokens != 500 {
				t.Errorf("b observed %d tokens, want 500", st.Tokens)
			}
		})
	}
}

// A replica whose clock runs far ahead cannot stall the others: a schedule more than a
// Window ahead of the local clock is taken for clock skew, ignored and logged.
func TestClockSkewDoesNotStall(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ahead := &testClock{}
	ahead.Advance(time.Hour)
	var logs syncBuffer
	a := r.limiter(t, ratelimit.Config{RPM: testRPM, Clock: ahead.Now})
	b := r.limiter(t, ratelimit.Config{RPM: testRPM, Logger: newLogger(&logs)})
	for range 3 {
		if blocked(a, 2*time.Second) {
			t.Fatal("the replica ahead is blocked")
		}
	}
	if blocked(b, 2*time.Second) {
		t.Error("a schedule an hour ahead stalled the other replica")
	}
	if !strings.Contains(logs.String(), "clock skew") {
		t.Errorf("skew not logged:\n%s", logs.String())
	}
}

// RPM 0 means no request limit: Wait returns at once.
func TestUnlimited(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	l := r.limiter(t, ratelimit.Config{})
	start := time.Now()
	for range 10000 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("10000 unlimited Waits took %v", d)
	}
	l.Throttled(time.Minute, time.Time{}) // a cooldown still holds it
	if !blocked(l, 100*time.Millisecond) {
		t.Error("Wait granted during a cooldown")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for _, tc := range []struct {
		cfg   ratelimit.Config
		field string
	}{
		{ratelimit.Config{RPM: -1}, "RPM"},
		{ratelimit.Config{TPM: -1}, "TPM"},
		{ratelimit.Config{Buffer: 1.5}, "Buffer"},
		{ratelimit.Config{Buffer: -0.1}, "Buffer"},
		{ratelimit.Config{Key: "a b"}, "Key"},
		{ratelimit.Config{Key: "a.>"}, "Key"},
		{ratelimit.Config{Window: time.Millisecond}, "Window"},
		{ratelimit.Config{MinRateFactor: 2}, "MinRateFactor"},
		{ratelimit.Config{RecoverEvery: -time.Second}, "RecoverEvery"},
		{ratelimit.Config{AssumedReplicas: -1}, "AssumedReplicas"},
		{ratelimit.Config{HeartbeatTTL: time.Millisecond}, "HeartbeatTTL"},
		{ratelimit.Config{OpTimeout: -time.Second}, "OpTimeout"},
	} {
		_, err := ratelimit.New(context.Background(), r.js, r.c, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("New(%+v) = %v, want an error naming Config.%s", tc.cfg, err, tc.field)
		}
	}
}

// Different keys are different budgets.
func TestKeysAreIndependent(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.limiter(t, ratelimit.Config{RPM: testRPM, Key: "model-a"})
	b := r.limiter(t, ratelimit.Config{RPM: testRPM, Key: "model-b"})
	a.Throttled(time.Minute, time.Time{})
	if !blocked(a, 100*time.Millisecond) {
		t.Error("a granted during its cooldown")
	}
	if blocked(b, 2*time.Second) {
		t.Error("b held by a's cooldown")
	}
	if st := b.Stats(); st.Cooldowns != 0 || st.Factor != 1 {
		t.Errorf("b: %d cooldowns, factor %v", st.Cooldowns, st.Factor)
	}
}

// clientGoroutines counts the goroutines that are not the embedded server's (whose
// count grows with the bucket's stream) and returns their stacks.
func clientGoroutines() (int, string) {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var n int
	var out strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "nats-server/v2/server") {
			n++
			out.WriteString(g + "\n\n")
		}
	}
	return n, out.String()
}

// (g) Close is idempotent, ends Waits with ErrClosed and leaves no goroutine behind.
// Not parallel: it counts the process's goroutines.
func TestCloseLeavesNothingBehind(t *testing.T) {
	r := newRig(t)
	_, js := natstest.Connect(t, r.url)
	ctx := context.Background()
	if _, err := js.AccountInfo(ctx); err != nil { // starts the connection's reply subscription
		t.Fatal(err)
	}
	base, _ := clientGoroutines()
	var ls []*ratelimit.Limiter
	for _, cfg := range []ratelimit.Config{
		{RPM: testRPM, TPM: 100000},
		{RPM: testRPM, TPM: 100000},
		{TPM: 1000},
	} {
		l, err := ratelimit.New(ctx, js, r.c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		for range 5 {
			if err := l.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		l.Observe(100)
	}
	// A Wait blocked by a cooldown when Close comes.
	ls[0].Throttled(time.Minute, time.Time{})
	errc := make(chan error, 1)
	go func() { errc <- ls[0].Wait(ctx) }()
	eventually(t, 2*time.Second, func() bool { return ls[1].Stats().Cooldowns == 1 }, "cooldown not shared")
	for _, l := range ls {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ratelimit.ErrClosed) {
			t.Errorf("Wait during Close returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if err := ls[1].Wait(ctx); !errors.Is(err, ratelimit.ErrClosed) {
		t.Errorf("Wait after Close returned %v, want ErrClosed", err)
	}
	ls[1].Throttled(time.Second, time.Time{}) // no-ops after Close
	ls[1].Observe(10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, stacks := clientGoroutines()
		if n <= base {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, base, stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
