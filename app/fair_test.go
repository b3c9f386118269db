package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// fairSetup shapes a whole pipeline for the fair-share tests.
type fairSetup struct {
	latency       time.Duration // the simulator's, per call
	concurrentMax int           // the processors' consumer's MaxAckPending
	workers       int           // per processor replica
	replicas      int           // processor replicas (default 1)
	sched         scheduler.Config
	apiURL        string // in front of the simulator, when set
}

func newFairPipeline(t *testing.T, latency time.Duration) *apptest.Pipeline {
	t.Helper()
	return apptest.New(t, apptest.Config{SQLite: true, Sim: llmsim.Config{Latency: latency}})
}

// start starts the services: sink, sequencer with its scheduler, processors.
func (s fairSetup) start(p *apptest.Pipeline) {
	p.T.Helper()
	p.StartSink(sink.Config{})
	p.StartSequencerWith(app.SequencerConfig{Scheduler: s.sched})
	pc := p.ProcessorConfig(processor.Config{ConcurrentMax: s.concurrentMax, Workers: s.workers})
	if s.apiURL != "" {
		pc.API.BaseURL = s.apiURL
	}
	for range max(s.replicas, 1) {
		p.StartProcessor(pc)
	}
}

// submit publishes a batch of a tenant at a priority.
func submit(t *testing.T, p *apptest.Pipeline, id, tenant string, priority int, its []flashpipe.Item) {
	t.Helper()
	if _, err := p.Client.Submit(context.Background(), ingest.Batch{ID: id, Source: "test", Tenant: tenant, Priority: priority,
		Items: ingest.SliceItems(its)}); err != nil {
		t.Fatal(err)
	}
}

// processedTimes is when each stored result of a batch was processed, in order.
func processedTimes(t *testing.T, p *apptest.Pipeline, id string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, r := range p.Results(id) {
		out = append(out, r.ProcessedAt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// countUpTo counts the times at or before limit.
func countUpTo(ts []time.Time, limit time.Time) int {
	n := 0
	for _, at := range ts {
		if !at.After(limit) {
			n++
		}
	}
	return n
}

// A small batch submitted while a big one runs completes within a few times its time
// alone (two active batches share the processors), long before the big one: in
// arrival order it would wait for all of the big batch.
func TestSmallBatchBesideABigOne(t *testing.T) {
	t.Parallel()
	p := newFairPipeline(t, 25*time.Millisecond)
	fairSetup{concurrentMax: 16, workers: 16}.start(p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(id string, its []flashpipe.Item) time.Duration {
		start := time.Now()
		if _, err := p.Client.Run(ctx, app.BatchRun{Batch: ingest.Batch{ID: id, Source: "test", Items: ingest.SliceItems(its)}}); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	alone := run("small-alone", items("혼자", 3))

	// 600 items at 50 ms each, 16 at a time: about 2 s alone.
	submit(t, p, "big", "", 0, items("큰", 600))
	natstest.Eventually(t, 30*time.Second, func() bool {
		st, err := p.Store.Batch(ctx, "big")
		return err == nil && st.Done > 0
	}, "the big batch never started")
	beside := run("small-beside", items("작은", 3))
	big, err := p.Store.Batch(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a 3-item batch: %s alone, %s beside a 600-item batch (%.1fx); the big batch had %d of 600 done then",
		alone.Round(time.Millisecond), beside.Round(time.Millisecond), beside.Seconds()/alone.Seconds(), big.Done)
	if big.State == flashpipe.BatchComplete {
		t.Errorf("the small batch completed after the big one: it waited for it")
	}
	if beside > 6*alone {
		t.Errorf("the small batch took %s beside the big one, %.1fx its %s alone; want within 6x", beside, beside.Seconds()/alone.Seconds(), alone)
	}
}

// Two tenants, one with ten times the other's work (in two batches), share the
// processors while both have work: equally, or by their weights. Tenants are served
// first, then a tenant's batches, so the tenant with two batches gets no more.
func TestTenantsShareWhileBothHaveWork(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		weight int // tenant big's
	}{{"equal", 1}, {"weighted", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newFairPipeline(t, 2*time.Millisecond)
			// Both tenants' work is queued before the services start.
			submit(t, p, "big-1", "big", 0, items(tc.name+"큰하나", 100))
			submit(t, p, "big-2", "big", 0, items(tc.name+"큰둘", 100))
			submit(t, p, "small", "small", 0, items(tc.name+"작은", 20))
			fairSetup{concurrentMax: 4, workers: 4, sched: scheduler.Config{Window: 8,
				TenantWeights: map[string]int{"big": tc.weight}}}.start(p)
			for _, id := range []string{"big-1", "big-2", "small"} {
				p.WaitStored(id, 0, time.Minute)
			}
			small := processedTimes(t, p, "small")
			last := small[len(small)-1]
			big := countUpTo(processedTimes(t, p, "big-1"), last) + countUpTo(processedTimes(t, p, "big-2"), last)
			want := tc.weight * len(small)
			t.Logf("while tenant small ran its 20 items, tenant big (weight %d) ran %d of its 200 (fair: %d)", tc.weight, big, want)
			// Margin: the window (8) may hold the big tenant's items before the small
			// tenant's manifest is taken, and 4 items run at once in any order.
			if big < want/2 || big > want+12 {
				t.Errorf("tenant big ran %d items while tenant small ran 20; want about %d (%d to %d)", big, want, want/2, want+12)
			}
		})
	}
}

// A batch of a higher priority overtakes the tenant's batches before it: once it is
// taken, its items go first.
func TestPriorityBatchOvertakes(t *testing.T) {
	t.Parallel()
	p := newFairPipeline(t, 2*time.Millisecond)
	submit(t, p, "low", "t", 0, items("낮은", 150))
	submit(t, p, "high", "t", 5, items("높은", 15))
	fairSetup{concurrentMax: 4, workers: 4, sched: scheduler.Config{Window: 8}}.start(p)
	p.WaitStored("high", 0, time.Minute)
	p.WaitStored("low", 0, time.Minute)
	high := processedTimes(t, p, "high")
	low := countUpTo(processedTimes(t, p, "low"), high[len(high)-1])
	t.Logf("the low-priority batch ran %d of its 150 items before the high-priority one completed", low)
	// At most the window and the items in hand before the high batch was taken.
	if low > 16 {
		t.Errorf("the low-priority batch ran %d items before the high-priority one completed; want at most 16", low)
	}
}

// A tenant's concurrency cap holds across processor replicas: never more of its items
// at the API at once than the cap, while another tenant uses the rest.
func TestTenantConcurrencyCapAcrossReplicas(t *testing.T) {
	t.Parallel()
	p := newFairPipeline(t, 20*time.Millisecond)
	var mu sync.Mutex
	now, peak := map[string]int{}, map[string]int{}
	tenantOf := func(body []byte) string {
		for _, name := range []string{"알파", "베타"} {
			if bytes.Contains(body, []byte(name)) {
				return name
			}
		}
		return ""
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		name := tenantOf(body)
		mu.Lock()
		now[name]++
		peak[name] = max(peak[name], now[name])
		mu.Unlock()
		defer func() { mu.Lock(); now[name]--; mu.Unlock() }()
		p.Sim.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	submit(t, p, "alpha", "a", 0, items("알파", 40))
	submit(t, p, "beta", "b", 0, items("베타", 40))
	fairSetup{concurrentMax: 16, workers: 4, replicas: 2, apiURL: front.URL + "/api/v1",
		sched: scheduler.Config{TenantConcurrency: map[string]int{"a": 2}}}.start(p)
	p.WaitStored("alpha", 0, time.Minute)
	p.WaitStored("beta", 0, time.Minute)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("API calls at once, at most: tenant a %d (cap 2), tenant b %d", peak["알파"], peak["베타"])
	if peak["알파"] > 2 {
		t.Errorf("tenant a had %d calls at the API at once; its cap is 2", peak["알파"])
	}
	if peak["베타"] <= 2 {
		t.Errorf("tenant b had at most %d calls at once: the processors' capacity (8) was never used, the test proves nothing", peak["베타"])
	}
}

// Many small batches active at once (manySmallBatches: 200, 1,000 with -tags scale),
// of several tenants, all complete, with the memory bounded and the queue emptied.
func TestManySmallBatchesAtOnce(t *testing.T) {
	t.Parallel()
	n := manySmallBatches
	p := newFairPipeline(t, 0)
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("small-%04d", i)
		submit(t, p, ids[i], fmt.Sprintf("tenant-%d", i%7), 0, items(fmt.Sprintf("작은%d-", i), 3))
	}
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	start := time.Now()
	fairSetup{concurrentMax: 32, workers: 16}.start(p)
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < n; {
		st, err := p.Store.Batch(ctx, ids[i])
		if err == nil && st.State == flashpipe.BatchComplete {
			if st.OK != 3 {
				t.Errorf("batch %s: %d of 3 items ok", ids[i], st.OK)
			}
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d small batches complete after 2 min; batch %s: %+v", i, n, ids[i], st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	heap := peak.Load() >> 20
	t.Logf("%d batches of 3 items, all active at once: complete in %s; heap in use at most %d MiB (the test process: NATS, SQLite, every service)",
		n, time.Since(start).Round(time.Millisecond), heap)
	if heap > 512 {
		t.Errorf("heap in use reached %d MiB with %d small batches active; want it bounded (under 512 MiB)", heap, n)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		q, err := p.Client.Queue(ctx)
		return err == nil && len(q.Batches) == 0
	}, "the scheduler's queue still lists batches after every batch completed")
}
