package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
)

// metrics returns the metrics of a batch, failing the test on error.
func metrics(t *testing.T, s flashpipe.Store, id string) flashpipe.BatchMetrics {
	t.Helper()
	m, err := s.Metrics(context.Background(), id)
	if err != nil {
		t.Fatalf("Metrics(%s): %v", id, err)
	}
	return m
}

// withCounters returns r with every Usage counter beyond cost set from k.
func withCounters(r *flashpipe.Result, k int) *flashpipe.Result {
	r.Usage.CacheHits, r.Usage.CacheMisses = k%2, 2-k%2
	r.Usage.Retries, r.Usage.Throttled = k, k%3
	r.Usage.RateLimitWaits, r.Usage.RateLimitWaitMS = k%4, int64(250*k)
	r.Usage.BreakerWaits, r.Usage.BreakerTrips = k%5, k%2
	return r
}

// sumOf returns the metrics the results add up to (counters only).
func sumOf(id, mode string, rs ...*flashpipe.Result) flashpipe.BatchMetrics {
	m := flashpipe.BatchMetrics{BatchID: id, Mode: mode}
	for _, r := range rs {
		u := r.Usage
		m.Results++
		m.Stage1Calls += int64(u.Stage1Calls)
		m.Stage2Calls += int64(u.Stage2Calls)
		m.CacheHits += int64(u.CacheHits)
		m.CacheMisses += int64(u.CacheMisses)
		m.PromptTokens += u.PromptTokens
		m.CompletionTokens += u.CompletionTokens
		m.Retries += int64(u.Retries)
		m.Throttled += int64(u.Throttled)
		m.RateLimitWaits += int64(u.RateLimitWaits)
		m.RateLimitWaitMS += u.RateLimitWaitMS
		m.BreakerWaits += int64(u.BreakerWaits)
		m.BreakerTrips += int64(u.BreakerTrips)
		m.CostSettled += u.Cost
		at := UTCMicroOf(r.ProcessedAt)
		if m.FirstResultAt == nil || at.Before(*m.FirstResultAt) {
			m.FirstResultAt = &at
		}
		if m.LastResultAt == nil || at.After(*m.LastResultAt) {
			at := at
			m.LastResultAt = &at
		}
	}
	m.Finish()
	return m
}

// sameMetrics fails the test unless got and want agree (cost to 1e-9).
func sameMetrics(t *testing.T, what string, got, want flashpipe.BatchMetrics) {
	t.Helper()
	costOK := abs(got.CostSettled-want.CostSettled) < 1e-9 && abs(got.CostReserved-want.CostReserved) < 1e-9
	got.CostSettled, got.CostReserved = want.CostSettled, want.CostReserved
	timeOK := eqTime(got.FirstResultAt, want.FirstResultAt) && eqTime(got.LastResultAt, want.LastResultAt)
	got.FirstResultAt, got.LastResultAt = want.FirstResultAt, want.LastResultAt
	if !costOK || !timeOK || got != want {
		t.Errorf("%s: metrics\n%+v, want\n%+v", what, got, want)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func eqTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// testMetrics: the metrics kept beside the rows sum the usage of every result written
// once: a redelivered or replayed result adds nothing, a newer generation adds its
// result and keeps the older one's, an older generation adds nothing; the results
// read back carry their counters; the mode comes from the manifest; prune removes
// the metrics with their batch.
func testMetrics(t *testing.T, s flashpipe.Store) {
	ctx := context.Background()
	if _, err := s.Metrics(ctx, "nope"); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Metrics of an unknown batch: %v, want ErrNotFound", err)
	}
	m := NewManifest("met", 3, base)
	m.Settings[flashpipe.SettingAPIMode] = flashpipe.APIModeBatch
	apply(t, s, ManifestEvent(m))
	sameMetrics(t, "before any result", metrics(t, s, "met"), flashpipe.BatchMetrics{BatchID: "met", Mode: flashpipe.APIModeBatch})

	r1, r2 := withCounters(NewResult("met", 1, 0), 3), withCounters(NewFailed("met", 2, 0), 4)
	r3 := withCounters(NewResult("met", 3, 0), 5)
	r3.ProcessedAt = base.Add(90 * time.Second)
	apply(t, s, ResultEvent(r1), ResultEvent(r2))
	apply(t, s, ResultEvent(r3), CompleteEvent("met", 0, 3, base.Add(time.Hour)))
	want := sumOf("met", flashpipe.APIModeBatch, r1, r2, r3)
	sameMetrics(t, "after generation 0", metrics(t, s, "met"), want)
	if want.WallTimeMS < 89_000 || want.CacheHitRate == 0 {
		t.Fatalf("fixture: wall time %d ms, hit rate %v", want.WallTimeMS, want.CacheHitRate)
	}
	for _, r := range results(t, s, "met", flashpipe.ResultFilter{}) {
		src := map[int]*flashpipe.Result{1: r1, 2: r2, 3: r3}[r.Seq]
		if r.Usage != src.Usage {
			t.Errorf("seq %d read back with usage %+v, want %+v", r.Seq, r.Usage, src.Usage)
		}
	}

	// Redelivered, replayed, split otherwise: nothing more.
	apply(t, s, ResultEvent(r3), ResultEvent(r1))
	apply(t, s, ManifestEvent(m), ResultEvent(r1), ResultEvent(r2), ResultEvent(r3), CompleteEvent("met", 0, 3, base.Add(time.Hour)))
	sameMetrics(t, "after redelivery and replay", metrics(t, s, "met"), want)

	// A retry generation adds its result and keeps what the failed one spent.
	retry := m
	retry.Generation, retry.Seqs, retry.CreatedAt = 1, []int{2}, base.Add(2*time.Hour)
	r2b := withCounters(NewResult("met", 2, 1), 1)
	r2b.ProcessedAt = base.Add(2 * time.Hour)
	apply(t, s, ManifestEvent(retry), ResultEvent(r2b))
	want = sumOf("met", flashpipe.APIModeBatch, r1, r2, r3, r2b)
	sameMetrics(t, "after the retry", metrics(t, s, "met"), want)
	// The failed result of generation 0 again (a replay of the ordered stream): not
	// written, not counted; the retry's result again: nothing more.
	apply(t, s, ResultEvent(r2), ResultEvent(r2b))
	sameMetrics(t, "after replaying both generations", metrics(t, s, "met"), want)
	if st := batch(t, s, "met"); st.Usage.Stage1Calls != r1.Usage.Stage1Calls+r2b.Usage.Stage1Calls+r3.Usage.Stage1Calls {
		t.Errorf("status usage counts %d stage 1 calls, want the latest results' only", st.Usage.Stage1Calls)
	}

	// A batch without api_mode is sync.
	apply(t, s, ManifestEvent(NewManifest("met-sync", 1, base)))
	if got := metrics(t, s, "met-sync"); got.Mode != flashpipe.APIModeSync || got.Results != 0 {
		t.Errorf("met-sync: %+v, want mode sync and nothing counted", got)
	}

	// Prune takes the metrics with the batch: the id submitted again starts at zero.
	p, ok := s.(store.Pruner)
	if !ok {
		t.Fatalf("%T does not implement store.Pruner", s)
	}
	apply(t, s, CompleteEvent("met", 1, 1, base.Add(3*time.Hour)))
	if n, err := p.Prune(ctx, base.Add(24*time.Hour), 0); err != nil || n.Batches != 1 {
		t.Fatalf("Prune: %+v, %v; want the complete batch (met-sync runs)", n, err)
	}
	apply(t, s, ManifestEvent(m))
	sameMetrics(t, "after prune and resubmission", metrics(t, s, "met"), flashpipe.BatchMetrics{BatchID: "met", Mode: flashpipe.APIModeBatch})
}

// testMetricsConcurrent: sinks applying overlapping, shuffled chunks of one batch's
// results at the same time (redeliveries racing the first delivery) count each result
// once, and do not deadlock.
func testMetricsConcurrent(t *testing.T, s flashpipe.Store) {
	const (
		n       = 240
		writers = 4
		chunk   = 30
	)
	ctx := context.Background()
	apply(t, s, ManifestEvent(NewManifest("met-conc", n, base)))
	rs := make([]*flashpipe.Result, n)
	for i := range rs {
		rs[i] = withCounters(NewResult("met-conc", i+1, 0), i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			order := rand.Perm(n)
			for start := 0; start < n; start += chunk {
				events := make([]flashpipe.Event, 0, chunk)
				for _, i := range order[start:min(n, start+chunk)] {
					events = append(events, ResultEvent(rs[i]))
				}
				if err := s.Apply(ctx, events); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	sameMetrics(t, "after 4 racing writers", metrics(t, s, "met-conc"), sumOf("met-conc", flashpipe.APIModeSync, rs...))
}
