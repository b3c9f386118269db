package main

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// The per-batch metrics of a batch run against a simulator injecting 429s and 500s
// count every call, retry and 429 the simulator saw, once: across a sink restart in
// the middle of the batch, a replay of the whole ordered stream by a sink and by
// `flashpipe replay`; and `flashpipe status` shows them. On SQLite always, on
// Postgres where one is reachable.
func TestBatchMetricsUnderFaults(t *testing.T) {
	t.Parallel()
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			if db == "postgres" {
				if err := pgtest.Available(); err != nil {
					t.Skipf("no Postgres reachable: %v", err)
				}
			}
			testBatchMetricsUnderFaults(t, db == "sqlite")
		})
	}
}

func testBatchMetricsUnderFaults(t *testing.T, useSQLite bool) {
	p := newPipelineWith(t, apptest.Config{SQLite: useSQLite, Sim: llmsim.Config{
		Seed: 16, Faults: llmsim.Faults{Rate429: 0.1, Rate5xx: 0.1},
	}})
	ctx := context.Background()
	// Enough attempts that no item runs out of them (a requeued delivery's calls are
	// not in its result), and a breaker that does not open (a release too), so every
	// request the simulator saw is in exactly one result.
	p.startProcessor(processor.Config{MaxAttempts: 30, BreakerThreshold: 1000, BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	p.startSequencer(sequencer.Config{})
	stopSink := p.startSink(sink.Config{})
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:80]
	const id = "metrics-faults"
	p.submit(id, items)

	// The sink stops in the middle of the batch and another takes over.
	natstest.Eventually(t, time.Minute, func() bool {
		st, err := p.store.Batch(ctx, id)
		return err == nil && st.Done >= 20
	}, "the first sink stored no 20 results")
	stopSink()
	p.startSink(sink.Config{})
	st := p.waitStored(id, time.Minute)

	m, err := p.store.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	stats := p.sim.Stats()
	throttled, errors5xx := stats.Faults[llmsim.Fault429], stats.Faults[llmsim.Fault5xx]
	t.Logf("simulator: %d requests, %d 429s, %d 5xx; metrics: %+v", stats.Requests, throttled, errors5xx, m)
	if throttled == 0 || errors5xx == 0 {
		t.Fatalf("the simulator injected %d 429s and %d 5xx: the test proves nothing", throttled, errors5xx)
	}
	switch {
	case m.Results != int64(len(items)) || m.Mode != flashpipe.APIModeSync:
		t.Errorf("metrics count %d results in mode %q, want %d in sync", m.Results, m.Mode, len(items))
	case m.Stage1Calls+m.Stage2Calls != stats.Requests:
		t.Errorf("metrics count %d+%d calls, the simulator saw %d", m.Stage1Calls, m.Stage2Calls, stats.Requests)
	case m.Throttled != throttled:
		t.Errorf("metrics count %d 429s, the simulator answered %d", m.Throttled, throttled)
	case m.Retries != throttled+errors5xx:
		t.Errorf("metrics count %d retries, want one per fault: %d", m.Retries, throttled+errors5xx)
	case m.RateLimitWaits != throttled || m.RateLimitWaitMS <= 0:
		t.Errorf("metrics count %d rate-limit waits (%d ms), want one per 429 (%d)", m.RateLimitWaits, m.RateLimitWaitMS, throttled)
	case math.Abs(m.CostSettled-stats.Cost) > 1e-9 || math.Abs(m.CostSettled-st.Usage.Cost) > 1e-9:
		t.Errorf("metrics settle $%v, the simulator billed $%v, the status says $%v", m.CostSettled, stats.Cost, st.Usage.Cost)
	case m.CostReserved != 0 || m.BreakerTrips != 0 || m.BreakerWaits != 0:
		t.Errorf("metrics hold $%v reserved, %d breaker trips, %d breaker waits; want none", m.CostReserved, m.BreakerTrips, m.BreakerWaits)
	case m.FirstResultAt == nil || m.LastResultAt == nil || m.WallTimeMS != m.LastResultAt.Sub(*m.FirstResultAt).Milliseconds():
		t.Errorf("wall time %d ms from %v to %v", m.WallTimeMS, m.FirstResultAt, m.LastResultAt)
	}
	var sum flashpipe.Usage
	for _, r := range p.results(id) {
		sum = sum.Add(r.Usage)
	}
	if int64(sum.Retries) != m.Retries || int64(sum.Throttled) != m.Throttled || sum.RateLimitWaitMS != m.RateLimitWaitMS {
		t.Errorf("the stored results add up to %+v, the metrics to %+v", sum, m)
	}

	// Every event of the batch applied again by a sink (a redelivery of all of it),
	// then by `flashpipe replay`: nothing more is counted.
	snk, err := sink.New(p.js, p.c, p.store, sink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := snk.Replay(ctx, id); err != nil || n != len(items)+2 {
		t.Fatalf("sink replay: %d events, %v", n, err)
	}
	storeFlags := []string{"--postgres-url", p.dbURL}
	if useSQLite {
		storeFlags = []string{"--sqlite", p.SQLitePath}
	}
	out, stderr, code := flashpipeCmd(t, t.TempDir(), append([]string{"replay", "--batch", id, "--nats-url", p.URL, "--prefix", p.c.Prefix()}, storeFlags...)...)
	if code != 0 {
		t.Fatalf("flashpipe replay: exit %d\n%s%s", code, out, stderr)
	}
	again, err := p.store.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if again != m && !sameMetricsExceptTimes(again, m) {
		t.Errorf("after two replays the metrics are\n%+v, were\n%+v", again, m)
	}

	// flashpipe status shows them, as text and as JSON.
	out, stderr, code = flashpipeCmd(t, t.TempDir(), append([]string{"status", id}, storeFlags...)...)
	if code != 0 {
		t.Fatalf("flashpipe status: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"metrics (sync mode, 80 results written", "429s " + itoa(throttled) + ";",
		"retries " + itoa(throttled+errors5xx) + ";", "cost settled $"} {
		if !strings.Contains(out, want) {
			t.Errorf("flashpipe status does not say %q:\n%s", want, out)
		}
	}
	out, stderr, code = flashpipeCmd(t, t.TempDir(), append([]string{"status", id, "--json"}, storeFlags...)...)
	if code != 0 {
		t.Fatalf("flashpipe status --json: exit %d\n%s%s", code, out, stderr)
	}
	var report struct {
		Metrics *flashpipe.BatchMetrics `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || report.Metrics == nil {
		t.Fatalf("flashpipe status --json: %v\n%s", err, out)
	}
	if report.Metrics.Throttled != throttled || report.Metrics.Retries != m.Retries || report.Metrics.Results != m.Results {
		t.Errorf("flashpipe status --json shows metrics %+v, want %+v", *report.Metrics, m)
	}
}

// sameMetricsExceptTimes compares metrics whose times may differ in their location
// only.
func sameMetricsExceptTimes(a, b flashpipe.BatchMetrics) bool {
	if !a.FirstResultAt.Equal(*b.FirstResultAt) || !a.LastResultAt.Equal(*b.LastResultAt) {
		return false
	}
	a.FirstResultAt, a.LastResultAt = b.FirstResultAt, b.LastResultAt
	return a == b
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
