package processor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/race"
)

const testKey = "sk-or-v1-TEST-SECRET-0123456789abcdef"

// rig is NATS, the simulator, the cache, the scheduler that dispatches the items and
// processors: everything but the sequencer and sink, whose work the tests read
// straight from the results stream.
type rig struct {
	t     *testing.T
	url   string
	js    jetstream.JetStream
	c     *contract.Contract
	sim   *llmsim.Simulator
	api   *llm.Client
	cache *cache.Cache
	logs  *syncBuffer
}

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

func newRig(t *testing.T, sim llmsim.Config) *rig {
	t.Helper()
	r := &rig{t: t, logs: &syncBuffer{}}
	srv := natstest.Server(t)
	r.url = srv.ClientURL()
	_, r.js = natstest.Connect(t, r.url)
	r.c = natstest.Contract(t, r.js)
	var err error
	if r.sim, err = llmsim.New(sim); err != nil {
		t.Fatal(err)
	}
	base, err := r.sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.sim.Close() })
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if r.api, err = llm.New(llm.Config{BaseURL: base, APIKey: testKey, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if r.cache, err = cache.New(context.Background(), r.js, r.c, cache.Config{}); err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(r.js, r.c, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sched.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *rig) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start runs a processor replica with its own NATS connection until the test ends or
// stop is called.
func (r *rig) start(cfg processor.Config, api processor.Completer) (stop func()) {
	r.t.Helper()
	_, js := natstest.Connect(r.t, r.url)
	if api == nil {
		api = r.api
	}
	if cfg.Logger == nil {
		cfg.Logger = r.logger()
	}
	cfg.Stages = stages.DefaultConfig()
	p, err := processor.New(js, r.c, api, r.cache, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			r.t.Errorf("processor: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) submit(id string, items []flashpipe.Item) {
	r.t.Helper()
	pub, err := ingest.NewPublisher(r.js, r.c, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := pub.Submit(context.Background(), ingest.Batch{ID: id, Items: ingest.SliceItems(items)}); err != nil {
		r.t.Fatal(err)
	}
}

// results waits until every item of the batch has a result and returns them by seq.
func (r *rig) results(id string, n int, within time.Duration) []*flashpipe.Result {
	r.t.Helper()
	ctx := context.Background()
	st, err := r.js.Stream(ctx, r.c.ResultsStream())
	if err != nil {
		r.t.Fatal(err)
	}
	natstest.Eventually(r.t, within, func() bool {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(r.c.BatchResults(id)))
		return err == nil && len(info.State.Subjects) >= n
	}, "batch %s has fewer than %d results", id, n)
	out := make([]*flashpipe.Result, n)
	for seq := 1; seq <= n; seq++ {
		raw, err := st.GetLastMsgForSubject(ctx, r.c.ResultSubject(id, seq))
		if err != nil {
			r.t.Fatal(err)
		}
		if out[seq-1], err = contract.DecodeResult(raw.Header, raw.Data); err != nil {
			r.t.Fatal(err)
		}
	}
	return out
}

func words(n int, prefix string) []flashpipe.Item {
	items := make([]flashpipe.Item, n)
	for i := range items {
		items[i] = flashpipe.Item{Position: int64(i + 1), Term: fmt.Sprintf("%s%d", prefix, i), Type: "noun"}
	}
	return items
}

func count(rs []*flashpipe.Result, st flashpipe.Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == st {
			n++
		}
	}
	return n
}

func TestNewBatchCostsExactlyTwoCallsPerItem(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{LatencyJitter: 5 * time.Millisecond})
	r.start(processor.Config{}, nil)
	r.submit("fresh", words(100, "새"))
	rs := r.results("fresh", 100, 30*time.Second)
	if n := count(rs, flashpipe.StatusOK); n != 100 {
		t.Fatalf("%d ok of 100", n)
	}
	s := r.sim.Stats()
	if s.Stage1Calls != 100 || s.Stage2Calls != 100 {
		t.Fatalf("simulator saw %d + %d calls, want 100 + 100", s.Stage1Calls, s.Stage2Calls)
	}
	for _, res := range rs {
		u := res.Usage
		if u.Stage1Calls != 1 || u.Stage2Calls != 1 || u.CacheMisses != 2 || u.CacheHits != 0 || u.PromptTokens == 0 || u.Cost <= 0 {
			t.Fatalf("usage of %d: %+v", res.Position, u)
		}
		if res.Analysis.TermNumber != res.Position || len(res.Cards) == 0 || !strings.Contains(res.Cards[0].Primer, fmt.Sprint(res.Position)) {
			t.Fatalf("result %d is not stamped with its position: %+v", res.Position, res.Analysis)
		}
	}
}

// The same words in another batch (other positions) are answered by the cache: zero
// API calls, and the cards carry the new positions.
func TestSameWordsInAnotherBatchAreFree(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{})
	r.start(processor.Config{}, nil)
	items := words(50, "말")
	r.submit("first", items)
	r.results("first", 50, 30*time.Second)
	before := r.sim.Stats().Requests

	moved := make([]flashpipe.Item, len(items))
	for i, it := range items {
		it.Position += 1000
		moved[i] = it
	}
	r.submit("second", moved)
	rs := r.results("second", 50, 30*time.Second)
	if after := r.sim.Stats().Requests; after != before {
		t.Fatalf("the second batch made %d API calls, want 0", after-before)
	}
	for _, res := range rs {
		if res.Status != flashpipe.StatusOK || res.Usage.CacheHits != 2 || res.Usage.Stage1Calls+res.Usage.Stage2Calls != 0 || res.Usage.Cost != 0 {
			t.Fatalf("result %d: %s, usage %+v", res.Position, res.Status, res.Usage)
		}
		if res.Analysis.TermNumber != res.Position || !strings.Contains(res.Cards[0].Primer, fmt.Sprint(res.Position)) {
			t.Fatalf("cached answer not restamped for position %d: term_number %d, primer %q", res.Position, res.Analysis.TermNumber, res.Cards[0].Primer)
		}
	}
}

// stage2Once fails the first stage 2 call of the run with a transient error.
type stage2Once struct {
	api    processor.Completer
	failed atomic.Bool
}

func (s *stage2Once) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	in, err := stages.DecodeInput(req.Messages[len(req.Messages)-1].Content)
	if err == nil && in.Stage() == 2 && s.failed.CompareAndSwap(false, true) {
		return nil, flashpipe.AsTransient(errors.New("injected: stage 2 failed once"))
	}
	return s.api.Complete(ctx, req)
}

// A stage 2 retry reuses stage 1: one stage 1 call, two stage 2 attempts.
func TestStage2RetryReusesStage1(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{})
	api := &stage2Once{api: r.api}
	r.start(processor.Config{BackoffBase: time.Millisecond}, api)
	r.submit("retry2", words(1, "집"))
	rs := r.results("retry2", 1, 30*time.Second)
	if rs[0].Status != flashpipe.StatusOK {
		t.Fatalf("status %s: %+v", rs[0].Status, rs[0].Failure)
	}
	if s := r.sim.Stats(); s.Stage1Calls != 1 || s.Stage2Calls != 1 {
		t.Fatalf("simulator saw %d stage 1 and %d stage 2 calls, want 1 and 1 (the failed attempt never reached it)", s.Stage1Calls, s.Stage2Calls)
	}
	if u := rs[0].Usage; u.Stage1Calls != 1 || u.Stage2Calls != 2 {
		t.Fatalf("usage %+v, want 1 stage 1 call and 2 stage 2 attempts", u)
	}
}

// blockStage2 holds every stage 2 call until its context ends: a processor that dies
// between the stages.
type blockStage2 struct{ api processor.Completer }

func (b blockStage2) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	in, err := stages.DecodeInput(req.Messages[len(req.Messages)-1].Content)
	if err == nil && in.Stage() == 2 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return b.api.Complete(ctx, req)
}

// An item redelivered after its processor stopped between the stages pays stage 1 once.
func TestRedeliveryAfterStage1PaysStage1Once(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{})
	stop := r.start(processor.Config{DrainTimeout: 100 * time.Millisecond}, blockStage2{r.api})
	r.submit("redeliver", words(3, "물"))
	natstest.Eventually(t, 10*time.Second, func() bool { return r.sim.Stats().Stage1Calls == 3 }, "stage 1 not called")
	stop()
	r.start(processor.Config{}, nil)
	rs := r.results("redeliver", 3, 30*time.Second)
	if n := count(rs, flashpipe.StatusOK); n != 3 {
		t.Fatalf("%d ok of 3", n)
	}
	if s := r.sim.Stats(); s.Stage1Calls != 3 || s.Stage2Calls != 3 {
		t.Fatalf("simulator saw %d stage 1 and %d stage 2 calls, want 3 and 3", s.Stage1Calls, s.Stage2Calls)
	}
	for _, res := range rs {
		// Redelivered after a shutdown, which does not count as an attempt; stage 1
		// came from the cache.
		if res.Attempts != 1 || res.Usage.CacheHits != 1 || res.Usage.Stage1Calls != 0 {
			t.Fatalf("result %d: attempts %d, usage %+v: want one counted attempt and a stage 1 cache hit", res.Position, res.Attempts, res.Usage)
		}
	}
}

// Two processors racing on the same term pay at most once each.
func TestRacingReplicasPayAtMostOncePerReplica(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Latency: 100 * time.Millisecond})
	r.start(processor.Config{}, nil)
	r.start(processor.Config{}, nil)
	items := make([]flashpipe.Item, 40)
	for i := range items {
		items[i] = flashpipe.Item{Position: int64(i + 1), Term: "같은말", Type: "noun"}
	}
	r.submit("same", items)
	rs := r.results("same", 40, 30*time.Second)
	if n := count(rs, flashpipe.StatusOK); n != 40 {
		t.Fatalf("%d ok of 40", n)
	}
	if s := r.sim.Stats(); s.Stage1Calls > 2 || s.Stage2Calls > 2 {
		t.Fatalf("simulator saw %d stage 1 and %d stage 2 calls for one term on two replicas, want at most 2 each", s.Stage1Calls, s.Stage2Calls)
	}
}

// Answers that fail validation are asked again, then the item fails with the reason.
func TestInvalidAnswersAreRetriedThenFailed(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Faults: llmsim.Faults{RateInvalidAnswer: 1}})
	r.start(processor.Config{MaxAttempts: 3, BackoffBase: time.Millisecond}, nil)
	r.submit("invalid", words(2, "틀"))
	rs := r.results("invalid", 2, 30*time.Second)
	for _, res := range rs {
		if res.Status != flashpipe.StatusFailed || res.Failure.Stage != processor.Stage1 ||
			!strings.Contains(res.Failure.Reason, "after 3 attempts") || !strings.Contains(res.Failure.Reason, "invalid stage1 answer") {
			t.Fatalf("result %d: %s %+v", res.Position, res.Status, res.Failure)
		}
	}
	if s := r.sim.Stats(); s.Stage1Calls != 6 || s.Stage2Calls != 0 {
		t.Fatalf("simulator saw %d stage 1 calls, want 3 per item", s.Stage1Calls)
	}
}

// Transient faults of every kind are retried: nothing fails.
func TestTransientFaultsAreRetried(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Seed: 7, Faults: llmsim.Faults{
		Rate5xx: 0.1, Rate429: 0.05, Rate402Transient: 0.05, RateMalformed: 0.05, RateErrorBody: 0.05,
		RateEmpty: 0.05, RateFenced: 0.05, RateTimeout: 0.02, TimeoutDelay: 2 * time.Second,
	}})
	// A short per-attempt timeout turns the stalled answers into timeouts.
	api, err := llm.New(llm.Config{BaseURL: r.sim.URL(), APIKey: testKey, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.start(processor.Config{MaxAttempts: 10, BackoffBase: time.Millisecond, BackoffMax: 50 * time.Millisecond}, api)
	r.submit("flaky", words(60, "흔"))
	rs := r.results("flaky", 60, time.Minute)
	if n := count(rs, flashpipe.StatusFailed); n != 0 {
		for _, res := range rs {
			if res.Failure != nil {
				t.Logf("%d: %+v", res.Position, res.Failure)
			}
		}
		t.Fatalf("%d items failed under transient faults", n)
	}
	if r.sim.Stats().FaultsTotal() == 0 {
		t.Fatal("no fault was injected")
	}
}

// A permanent error (400) fails the item at once, with the reason and what to do.
func TestPermanentErrorFailsTheItemAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Faults: llmsim.Faults{FailTerms: map[string]int{"나쁜0": 400}}})
	r.start(processor.Config{MaxAttempts: 5}, nil)
	r.submit("perm", words(3, "나쁜"))
	rs := r.results("perm", 3, 30*time.Second)
	bad := rs[0]
	if bad.Status != flashpipe.StatusFailed || bad.Failure.Class != flashpipe.Permanent || bad.Failure.NextStep != flashpipe.NextFixInput ||
		bad.Usage.Stage1Calls != 1 || !strings.Contains(bad.Failure.Reason, "400") {
		t.Fatalf("the 400 item: %s %+v usage %+v", bad.Status, bad.Failure, bad.Usage)
	}
	if count(rs, flashpipe.StatusOK) != 2 {
		t.Fatal("the other items did not succeed")
	}
}

// Out of credits: the processors stop taking items instead of failing them, say why,
// and the batch resumes untouched once credits are back.
func TestAccountErrorPausesUntilFixed(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Faults: llmsim.Faults{Rate402Credits: 1}})
	r.start(processor.Config{ProbeInterval: 100 * time.Millisecond, ConcurrentMax: 5}, nil)
	r.submit("credits", words(30, "돈"))
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "API account error")
	}, "no account error logged")
	// While paused, calls are only the periodic probes, and nothing fails.
	calls := r.sim.Stats().Requests
	time.Sleep(500 * time.Millisecond)
	if d := r.sim.Stats().Requests - calls; d > 10 {
		t.Fatalf("%d calls in 500ms while paused: the processor keeps burning", d)
	}
	if err := r.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	rs := r.results("credits", 30, 30*time.Second)
	if n := count(rs, flashpipe.StatusOK); n != 30 {
		t.Fatalf("%d ok of 30 after credits came back", n)
	}
	if !strings.Contains(r.logs.String(), "resumes") {
		t.Error("resumption not logged")
	}
}

// The API key never reaches a log line, whatever the error.
func TestAPIKeyNeverLogged(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{RequireKey: "sk-the-right-key", Seed: 3})
	r.start(processor.Config{ProbeInterval: 50 * time.Millisecond}, nil)
	r.submit("key", words(3, "열쇠"))
	natstest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(r.logs.String(), "401") }, "no 401 logged")
	if logs := r.logs.String(); strings.Contains(logs, testKey) || strings.Contains(logs, "TEST-SECRET") {
		t.Fatalf("the API key appears in the logs:\n%s", logs)
	}
}

// echoSecret fails every call with a permanent error that quotes part of a secret
// the API client does not know (a NATS token, say), as a gateway in between might.
type echoSecret struct{ fragment string }

func (e echoSecret) Complete(context.Context, llm.Request) (*llm.Response, error) {
	return nil, flashpipe.AsPermanent(fmt.Errorf("gateway refused credentials %q", e.fragment))
}

// A failure reason is redacted of the configured secrets before it is published or
// logged.
func TestFailureReasonsAreRedacted(t *testing.T) {
	t.Parallel()
	const token = "nats-token-0123456789abcdef"
	r := newRig(t, llmsim.Config{})
	r.start(processor.Config{Redactor: secret.New(token)}, echoSecret{fragment: token[3:17]})
	r.submit("redact", words(2, "비밀"))
	for _, res := range r.results("redact", 2, 30*time.Second) {
		if res.Status != flashpipe.StatusFailed || strings.Contains(res.Failure.Reason, token[3:17]) ||
			!strings.Contains(res.Failure.Reason, secret.Mask) {
			t.Fatalf("published failure %+v", res.Failure)
		}
	}
	if logs := r.logs.String(); strings.Contains(logs, token[3:17]) || !strings.Contains(logs, "item failed") {
		t.Fatalf("the logs hold the fragment, or no failure:\n%s", logs)
	}
}

// The dry run counts cached answers as free and prices the rest.
func TestEstimateCountsCachedAnswersAsFree(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{})
	r.start(processor.Config{}, nil)
	known := words(10, "값")
	r.submit("known", known)
	r.results("known", 10, 30*time.Second)

	items := append(words(10, "값"), words(5, "새값")...)
	for i := range items {
		items[i].Position = int64(100 + i) // other positions: still the same answers
	}
	cfg := stages.DefaultConfig()
	est, err := processor.EstimateBatch(context.Background(), r.cache, cfg, ingest.SliceItems(items), processor.Prices{})
	if err != nil {
		t.Fatal(err)
	}
	if est.Stage1Cached != 10 || est.Stage2Cached != 10 || est.Stage1Calls != 5 || est.Stage2Calls != 5 || !est.CacheUsed {
		t.Fatalf("estimate %+v", est)
	}
	if est.PromptTokens <= 0 || est.CompletionTokens <= 0 || est.CostUSD <= 0 {
		t.Fatalf("estimate without tokens or cost: %+v", est)
	}
	// Learned completion sizes: the average of the cached answers of each stage.
	var want int64
	for _, res := range r.results("known", 10, time.Second) {
		want += res.Usage.CompletionTokens
	}
	// Five new items at the cached average (ten items' worth, halved), within rounding.
	if got := est.CompletionTokens; got < want/2-10 || got > want/2+10 {
		t.Fatalf("completion tokens %d for 5 new items; the cached answers of 10 items had %d", got, want)
	}

	all, err := processor.EstimateBatch(context.Background(), nil, cfg, ingest.SliceItems(items), processor.Prices{})
	if err != nil {
		t.Fatal(err)
	}
	if all.Stage1Calls != 15 || all.Stage2Calls != 15 || all.CacheUsed || all.CostUSD <= est.CostUSD {
		t.Fatalf("estimate without cache %+v", all)
	}
	if r.sim.Stats().Requests != 20 {
		t.Fatalf("estimating made API calls: %d in all, want the 20 of the first batch", r.sim.Stats().Requests)
	}
}

// A full outage: the breaker opens, the replica stops fetching and calling (only
// probes), nothing fails, and everything completes once the API is back.
func TestOutageOpensBreakerAndNothingFails(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Faults: llmsim.Faults{Rate5xx: 1}})
	r.start(processor.Config{BreakerThreshold: 5, BreakerTimeout: 300 * time.Millisecond, ConcurrentMax: 10,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}, nil)
	r.submit("outage", words(40, "정전"))
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "circuit breaker open")
	}, "the breaker did not open")
	// While open, the API sees only the probes: about one per timeout.
	before := r.sim.Stats().Requests
	time.Sleep(time.Second)
	if d := r.sim.Stats().Requests - before; d > 8 {
		t.Fatalf("%d API calls in 1s of outage with the breaker open, want only probes", d)
	}
	if err := r.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	rs := r.results("outage", 40, time.Minute)
	if n := count(rs, flashpipe.StatusFailed); n != 0 {
		t.Fatalf("%d items failed because of the outage", n)
	}
	if !strings.Contains(r.logs.String(), "circuit breaker closed") {
		t.Error("closing the breaker was not logged")
	}
	// The results report each opening of the breaker once (charged to the item whose
	// call opened it, through the release ledger), and the deliveries it gave back.
	var u flashpipe.Usage
	for _, res := range rs {
		u = u.Add(res.Usage)
	}
	if opened := strings.Count(r.logs.String(), "circuit breaker open:"); u.BreakerTrips != opened || u.BreakerWaits == 0 {
		t.Errorf("results report %d breaker trips, %d breaker waits; the breaker opened %d times", u.BreakerTrips, u.BreakerWaits, opened)
	}
}

// 30% 5xx and a storm of upstream 429s: every item completes, none fails.
func TestThirtyPercent5xxAnd429StormFailNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t, llmsim.Config{Seed: 11, Faults: llmsim.Faults{Rate5xx: 0.3, Rate429: 0.2}})
	r.start(processor.Config{BackoffBase: time.Millisecond, BackoffMax: 20 * time.Millisecond,
		BreakerThreshold: 50, BreakerTimeout: 100 * time.Millisecond}, nil)
	r.submit("storm", words(200, "폭풍"))
	rs := r.results("storm", 200, 2*time.Minute)
	if n := count(rs, flashpipe.StatusFailed); n != 0 {
		t.Fatalf("%d items failed under 30%% 5xx and a 429 storm", n)
	}
	s := r.sim.Stats()
	if s.Faults[llmsim.Fault5xx] == 0 || s.Faults[llmsim.Fault429] == 0 {
		t.Fatalf("faults not injected: %+v", s.Faults)
	}
	// The results count each 429 and each retry; a delivery requeued or released
	// drops its own counts with its calls, so these are bounds.
	var u flashpipe.Usage
	for _, res := range rs {
		u = u.Add(res.Usage)
	}
	if u.Throttled == 0 || int64(u.Throttled) > s.Faults[llmsim.Fault429] || u.Retries < u.Throttled ||
		int64(u.Retries) > s.Faults[llmsim.Fault429]+s.Faults[llmsim.Fault5xx] || u.RateLimitWaits != u.Throttled {
		t.Errorf("results report %d 429s, %d retries, %d rate-limit waits; the simulator answered %d 429s and %d 5xx",
			u.Throttled, u.Retries, u.RateLimitWaits, s.Faults[llmsim.Fault429], s.Faults[llmsim.Fault5xx])
	}
}

// Four replicas on one shared limit, against an API enforcing that same limit: no
// 429 from excess, and while demand exceeds the limit the achieved rate is >= 90% of it.
func TestFourReplicasShareOneRateLimit(t *testing.T) {
	t.Parallel()
	const rpm = 3000 // 50 requests/s
	r := newRig(t, llmsim.Config{RPM: rpm})
	for range 4 {
		_, js := natstest.Connect(t, r.url)
		l, err := ratelimit.New(context.Background(), js, r.c, ratelimit.Config{RPM: rpm, Buffer: 1.0})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		r.start(processor.Config{Limiter: l, ConcurrentMax: 40}, nil)
	}
	const items = 200 // 400 calls: about 8 s at the limit
	start := time.Now()
	r.submit("limited", words(items, "한도"))
	rs := r.results("limited", items, time.Minute)
	elapsed := time.Since(start)
	if n := count(rs, flashpipe.StatusOK); n != items {
		t.Fatalf("%d ok of %d", n, items)
	}
	s := r.sim.Stats()
	if s.RateLimited != 0 {
		t.Fatalf("the API answered %d 429s for exceeding the shared limit", s.RateLimited)
	}
	// Demand above the limit: the results report the waits for it.
	var u flashpipe.Usage
	for _, res := range rs {
		u = u.Add(res.Usage)
	}
	if u.RateLimitWaits == 0 || u.RateLimitWaitMS < int64(u.RateLimitWaits) || u.Throttled != 0 {
		t.Errorf("results report %d rate-limit waits (%d ms) and %d 429s; want waits and no 429", u.RateLimitWaits, u.RateLimitWaitMS, u.Throttled)
	}
	t.Logf("results report %d rate-limit waits, %.1f s in all", u.RateLimitWaits, float64(u.RateLimitWaitMS)/1000)
	// The limiter may run ahead by up to one second of budget at the start.
	achieved := float64(s.Requests) / elapsed.Seconds() * 60
	t.Logf("%d calls in %s: %.0f per minute, %.1f%% of the limit", s.Requests, elapsed.Round(time.Millisecond), achieved, 100*achieved/rpm)
	if achieved < 0.9*rpm && !race.Enabled {
		t.Fatalf("achieved %.0f calls per minute, want >= 90%% of %d", achieved, rpm)
	}
}
