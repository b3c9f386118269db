// Package storetest is the conformance suite of flashpipe.Store: every driver runs Run
// against real databases and must pass all of it. It also has the fixtures and the
// Apply benchmark the drivers share.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
)

// Run runs the conformance suite. Each subtest runs in parallel and calls open for a
// fresh, empty store of its own, which the suite closes when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) flashpipe.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s flashpipe.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyApply", testEmptyApply},
		{"ApplyIdempotent", testApplyIdempotent},
		{"OlderGenerationDoesNotOverwrite", testOlderGenerationDoesNotOverwrite},
		{"NewerGenerationReplaces", testNewerGenerationReplaces},
		{"GenerationStates", testGenerationStates},
		{"CompletionBeforeLastResults", testCompletionBeforeLastResults},
		{"RetryCompletionBeforeResults", testRetryCompletionBeforeResults},
		{"OldCompletionAfterRetryManifest", testOldCompletionAfterRetryManifest},
		{"CompletionBeforeManifest", testCompletionBeforeManifest},
		{"AnyOrderSameOutcome", testAnyOrderSameOutcome},
		{"CleansText", testCleansText},
		{"ResultsOrderAndFilter", testResultsOrderAndFilter},
		{"ResultsStopsAtCallbackError", testResultsStopsAtCallbackError},
		{"BatchCountsAndNotFound", testBatchCountsAndNotFound},
		{"BatchesOrderAndLimit", testBatchesOrderAndLimit},
		{"ResultsBeforeManifest", testResultsBeforeManifest},
		{"RejectsInvalidEvents", testRejectsInvalidEvents},
		{"AtomicOnDatabaseError", testAtomicOnDatabaseError},
		{"ConcurrentApply", testConcurrentApply},
		{"LargeBatchStreams", testLargeBatchStreams},
		{"ConflictingManifestRefused", testConflictingManifestRefused},
		{"ReplacementNeverMixes", testReplacementNeverMixes},
		{"DeadLetters", testDeadLetters},
		{"Prune", testPrune},
		{"Metrics", testMetrics},
		{"MetricsConcurrent", testMetricsConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// BenchmarkApply measures Apply in groups of 500 results, each with a 1 KB analysis and
// three cards, as the sink writes them, and reports results/s. s must be empty.
func BenchmarkApply(b *testing.B, s flashpipe.Store) {
	const group = 500
	ctx := context.Background()
	const batchID = "bench"
	m := NewManifest(batchID, 1<<30, base)
	if err := s.Apply(ctx, []flashpipe.Event{ManifestEvent(m)}); err != nil {
		b.Fatalf("Apply manifest: %v", err)
	}
	template := make([]flashpipe.Result, group)
	warmup := make([]flashpipe.Event, group)
	for i := range template {
		template[i] = *NewResult(batchID, i+1, 0)
		warmup[i] = ResultEvent(NewResult(batchID+"-warmup", i+1, 0))
	}
	// Steady state is what counts: prepare statements and warm caches untimed.
	if err := s.Apply(ctx, warmup); err != nil {
		b.Fatalf("Apply warm-up: %v", err)
	}
	events := make([]flashpipe.Event, group)
	results := make([]flashpipe.Result, group)
	n := 0
	for i := 0; b.Loop(); i++ {
		for j := range results {
			results[j] = template[j]
			seq := i*group + j + 1
			results[j].Seq, results[j].Position = seq, int64(seq*10)
			events[j] = ResultEvent(&results[j])
		}
		if err := s.Apply(ctx, events); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		n += group
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "results/s")
}

// BenchmarkBatches measures Batches listing 10 batches of 1,000 results each (the
// fixtures' realistic results), half of them complete, and reports the items whose
// counts, usage and state it derives per second. s must be empty.
func BenchmarkBatches(b *testing.B, s flashpipe.Store) {
	const batches, size = 10, 1000
	ctx := context.Background()
	for n := range batches {
		id := fmt.Sprintf("bench-list-%d", n)
		events := []flashpipe.Event{ManifestEvent(NewManifest(id, size, base.Add(time.Duration(n)*time.Second)))}
		for seq := 1; seq <= size; seq++ {
			events = append(events, ResultEvent(NewResult(id, seq, 0)))
		}
		if n%2 == 0 {
			events = append(events, CompleteEvent(id, 0, size, base.Add(time.Hour)))
		}
		if err := s.Apply(ctx, events); err != nil {
			b.Fatalf("Apply: %v", err)
		}
	}
	for b.Loop() {
		sts, err := s.Batches(ctx, 0)
		if err != nil {
			b.Fatalf("Batches: %v", err)
		}
		if len(sts) != batches || sts[0].Done != size || sts[1].State != flashpipe.BatchComplete {
			b.Fatalf("Batches = %d batches, first %s", len(sts), show(sts[0]))
		}
	}
	b.ReportMetric(float64(b.N*batches*size)/b.Elapsed().Seconds(), "items/s")
}

// --- helpers ---

func apply(t *testing.T, s flashpipe.Store, events ...flashpipe.Event) {
	t.Helper()
	if err := s.Apply(context.Background(), events); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func results(t *testing.T, s flashpipe.Store, batchID string, filter flashpipe.ResultFilter) []flashpipe.Result {
	t.Helper()
	var out []flashpipe.Result
	if err := s.Results(context.Background(), batchID, filter, func(r flashpipe.Result) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatalf("Results(%q): %v", batchID, err)
	}
	return out
}

func batch(t *testing.T, s flashpipe.Store, batchID string) flashpipe.BatchStatus {
	t.Helper()
	st, err := s.Batch(context.Background(), batchID)
	if err != nil {
		t.Fatalf("Batch(%q): %v", batchID, err)
	}
	// Whatever the events, a batch never reads as started after it completed.
	if st.StartedAt != nil && st.CompletedAt != nil && st.StartedAt.After(*st.CompletedAt) {
		t.Errorf("Batch(%q): StartedAt %v is after CompletedAt %v", batchID, st.StartedAt, st.CompletedAt)
	}
	return st
}

// want returns r as a store returns it: times in UTC at microsecond precision, and no
// cards as nil.
func want(r *flashpipe.Result) flashpipe.Result {
	w := *r
	w.ProcessedAt = store.UTCMicro(w.ProcessedAt)
	if len(w.Cards) == 0 {
		w.Cards = nil
	}
	return w
}

// wantManifest returns m as a store returns it.
func wantManifest(m flashpipe.Manifest) flashpipe.Manifest {
	m.CreatedAt = store.UTCMicro(m.CreatedAt)
	if len(m.Settings) == 0 {
		m.Settings = nil // omitempty in JSON
	}
	if len(m.Seqs) == 0 {
		m.Seqs = nil
	}
	return m
}

func wants(rs ...*flashpipe.Result) []flashpipe.Result {
	out := make([]flashpipe.Result, len(rs))
	for i, r := range rs {
		out[i] = want(r)
	}
	return out
}

// equal fails the test if got and want differ, showing both.
func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s differs\n got: %s\nwant: %s", what, show(got), show(want))
	}
}

// equalValues reports whether got and want are deeply equal.
func equalValues[T any](got, want T) bool { return reflect.DeepEqual(got, want) }

func show(v any) string {
	b, err := json.MarshalIndent(v, "      ", "  ")
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

func seqsOf(rs []flashpipe.Result) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

// --- tests ---

func testRoundTrip(t *testing.T, s flashpipe.Store) {
	const id = "round-trip"
	kst := time.FixedZone("KST", 9*3600)
	m := NewManifest(id, 5, time.Date(2026, 1, 2, 3, 4, 5, 678901234, kst))
	m.Settings = map[string]string{"model": "모델/flash", "note": "tab\there\nnewline"}

	full := NewResult(id, 1, 0)
	full.Metadata = map[string]string{"Hanja": "男性", "Frequency": "1,234", "empty": "", "탭": "a\tb\nc"}
	full.ProcessedAt = time.Date(2026, 1, 2, 3, 4, 6, 123456789, kst)
	full.Usage = flashpipe.Usage{Stage1Calls: 2, Stage2Calls: 3, CacheHits: 1, CacheMisses: 5, PromptTokens: 1 << 40,
		CompletionTokens: 1<<40 + 1, Cost: 0.000123456789}
	full.Attempts = 4
	full.Cards[0].Front = "앞면 with a\ttab and a\nnewline, \"quotes\", back\\slash and emoji 🐯"
	full.Cards[1].Back = "\n\tleading and trailing whitespace\t\n "
	full.Cards[2].HonorificLevel = ""
	full.Analysis.Homonyms = []flashpipe.Homonym{} // empty, not nil
	full.Analysis.KoreanKeywords = nil

	bare := NewResult(id, 2, 0)
	bare.Metadata = map[string]string{} // empty, not nil
	bare.Analysis.Homonyms = nil
	bare.Analysis.OtherMeanings, bare.Analysis.UsageContext, bare.Analysis.Comparison = nil, nil, nil
	bare.Analysis.KoreanKeywords = []string{}
	bare.Cards = []flashpipe.Card{{TabName: "Scene"}} // all other fields empty

	failed := NewFailed(id, 3, 0) // no analysis, no cards, nil metadata
	failed.Failure.Class = flashpipe.Transient

	// Stage 2 failed: the stage 1 analysis is kept, and a failure with empty fields
	// must still come back as a failure.
	stage2 := NewResult(id, 4, 0)
	stage2.Status, stage2.Cards = flashpipe.StatusFailed, []flashpipe.Card{}
	stage2.Failure = &flashpipe.Failure{}

	zero := &flashpipe.Result{BatchID: id, Seq: 5, Item: flashpipe.Item{Position: 1 << 40}, Status: flashpipe.StatusOK}

	apply(t, s, ManifestEvent(m), ResultEvent(full), ResultEvent(bare), ResultEvent(failed),
		ResultEvent(stage2), ResultEvent(zero))

	got := results(t, s, id, flashpipe.ResultFilter{})
	equal(t, "results", got, wants(full, bare, failed, stage2, zero))
	if got[0].ProcessedAt.Location() != time.UTC {
		t.Errorf("ProcessedAt location = %v, want UTC", got[0].ProcessedAt.Location())
	}
	if got[1].Metadata == nil || got[0].Analysis.Homonyms == nil || got[1].Analysis.KoreanKeywords == nil {
		t.Errorf("empty map or slice came back nil")
	}
	// No cards (none, or an empty slice) come back as nil.
	if got[2].Cards != nil || got[3].Cards != nil || got[4].Cards != nil {
		t.Errorf("results without cards came back with non-nil cards: %#v, %#v, %#v", got[2].Cards, got[3].Cards, got[4].Cards)
	}
	if st := batch(t, s, id); st.Usage.CacheMisses != full.Usage.CacheMisses {
		t.Errorf("Usage.CacheMisses = %d, want %d", st.Usage.CacheMisses, full.Usage.CacheMisses)
	}

	st := batch(t, s, id)
	equal(t, "manifest", st.Manifest, wantManifest(m))
	if !st.SubmittedAt.Equal(store.UTCMicro(m.CreatedAt)) || st.SubmittedAt.Location() != time.UTC {
		t.Errorf("SubmittedAt = %v, want %v in UTC", st.SubmittedAt, store.UTCMicro(m.CreatedAt))
	}
}

func testEmptyApply(t *testing.T, s flashpipe.Store) {
	apply(t, s)
	apply(t, s, []flashpipe.Event{}...)
	got, err := s.Batches(context.Background(), 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Batches = %v, %v; want none", got, err)
	}
}

func testApplyIdempotent(t *testing.T, s flashpipe.Store) {
	const id = "idem"
	events := []flashpipe.Event{ManifestEvent(NewManifest(id, 4, base))}
	for seq := 1; seq <= 4; seq++ {
		r := NewResult(id, seq, 0)
		if seq == 3 {
			r = NewFailed(id, seq, 0)
		}
		events = append(events, ResultEvent(r))
	}
	events = append(events, CompleteEvent(id, 0, 4, base.Add(time.Minute)))

	apply(t, s, events...)
	st1 := batch(t, s, id)
	rs1 := results(t, s, id, flashpipe.ResultFilter{})

	apply(t, s, events...)
	// A sink that crashed mid-group replays its tail as well as a later group.
	apply(t, s, events[2:4]...)
	st2 := batch(t, s, id)
	rs2 := results(t, s, id, flashpipe.ResultFilter{})

	equal(t, "status after replay", st2, st1)
	equal(t, "results after replay", rs2, rs1)
	if st1.Done != 4 || st1.OK != 3 || st1.Failed != 1 || st1.State != flashpipe.BatchComplete {
		t.Fatalf("status = %s, want 4 done (3 ok, 1 failed), complete", show(st1))
	}
	if st1.StartedAt == nil {
		t.Fatal("StartedAt is nil after results were stored")
	}
}

func testOlderGenerationDoesNotOverwrite(t *testing.T, s flashpipe.Store) {
	const id = "older"
	apply(t, s, ManifestEvent(NewManifest(id, 3, base)))
	newer := NewResult(id, 2, 1)
	newer.Cards = newer.Cards[:2]
	apply(t, s, ResultEvent(newer))
	apply(t, s, ResultEvent(NewFailed(id, 2, 0))) // a replayed generation 0 result
	// Both in one call, older last.
	newer3 := NewResult(id, 3, 2)
	apply(t, s, ResultEvent(newer3), ResultEvent(NewFailed(id, 3, 1)), ResultEvent(NewFailed(id, 3, 0)))

	equal(t, "results", results(t, s, id, flashpipe.ResultFilter{}), wants(newer, newer3))
	if st := batch(t, s, id); st.OK != 2 || st.Failed != 0 {
		t.Fatalf("status = %s, want 2 ok, 0 failed", show(st))
	}
}

func testNewerGenerationReplaces(t *testing.T, s flashpipe.Store) {
	const id = "newer"
	apply(t, s, ManifestEvent(NewManifest(id, 2, base)))
	apply(t, s, ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewFailed(id, 2, 0)))

	// Generation 1 retries seq 2 and also (by a bug upstream, say) rewrites seq 1 with
	// fewer cards: the old extra cards must go.
	r1 := NewResult(id, 1, 1)
	r1.Cards = []flashpipe.Card{{TabName: "Grammar", Front: "only card", Back: "b"}}
	r2 := NewResult(id, 2, 1)
	r2.Attempts = 2
	apply(t, s, ResultEvent(r1), ResultEvent(r2))
	equal(t, "results after generation 1", results(t, s, id, flashpipe.ResultFilter{}), wants(r1, r2))

	// Generation 2 fails seq 1 for good: no cards remain.
	f1 := NewFailed(id, 1, 2)
	apply(t, s, ResultEvent(f1))
	equal(t, "results after generation 2", results(t, s, id, flashpipe.ResultFilter{}), wants(f1, r2))
	if st := batch(t, s, id); st.Done != 2 || st.OK != 1 || st.Failed != 1 {
		t.Fatalf("status = %s, want 2 done, 1 ok, 1 failed", show(st))
	}

	// Same generation again (a redelivery) rewrites the same values.
	apply(t, s, ResultEvent(r2))
	equal(t, "results after redelivery", results(t, s, id, flashpipe.ResultFilter{}), wants(f1, r2))
}

func testGenerationStates(t *testing.T, s flashpipe.Store) {
	const id = "gens"
	m0 := NewManifest(id, 3, base)
	apply(t, s, ManifestEvent(m0), ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewFailed(id, 2, 0)),
		ResultEvent(NewFailed(id, 3, 0)))
	st := batch(t, s, id)
	if st.State != flashpipe.BatchRunning || st.CompletedAt != nil {
		t.Fatalf("before completion: %s, want running with no CompletedAt", show(st))
	}
	done0 := base.Add(time.Minute + 123456789)
	apply(t, s, CompleteEvent(id, 0, 3, done0))
	st = batch(t, s, id)
	if st.State != flashpipe.BatchComplete || st.CompletedAt == nil || !st.CompletedAt.Equal(store.UTCMicro(done0)) {
		t.Fatalf("after completion of generation 0: %s, want complete at %v", show(st), store.UTCMicro(done0))
	}
	started := st.StartedAt
	// StartedAt is the earliest ProcessedAt of the stored results, before CompletedAt.
	var earliest time.Time
	for _, r := range results(t, s, id, flashpipe.ResultFilter{}) {
		if earliest.IsZero() || r.ProcessedAt.Before(earliest) {
			earliest = r.ProcessedAt
		}
	}
	if started == nil || !started.Equal(earliest) || started.After(*st.CompletedAt) {
		t.Fatalf("after completion of generation 0: StartedAt %v, want the earliest ProcessedAt %v, not after CompletedAt %v",
			started, earliest, st.CompletedAt)
	}

	m1 := NewManifest(id, 3, base.Add(time.Hour))
	m1.Generation, m1.Seqs = 1, []int{2, 3}
	apply(t, s, ManifestEvent(m1))
	st = batch(t, s, id)
	if st.State != flashpipe.BatchRunning || st.CompletedAt != nil {
		t.Fatalf("after manifest of generation 1: %s, want running with no CompletedAt", show(st))
	}
	equal(t, "manifest of generation 1", st.Manifest, wantManifest(m1))
	if !st.SubmittedAt.Equal(store.UTCMicro(m0.CreatedAt)) {
		t.Errorf("SubmittedAt = %v, want the first manifest's %v", st.SubmittedAt, m0.CreatedAt)
	}
	equal(t, "StartedAt", st.StartedAt, started)

	// Replays of generation 0's manifest and completion change nothing.
	apply(t, s, ManifestEvent(m0), CompleteEvent(id, 0, 3, done0))
	st = batch(t, s, id)
	if st.State != flashpipe.BatchRunning || st.Manifest.Generation != 1 {
		t.Fatalf("after replay of generation 0: %s, want generation 1 running", show(st))
	}

	done1 := base.Add(2 * time.Hour)
	apply(t, s, ResultEvent(NewResult(id, 2, 1)), ResultEvent(NewResult(id, 3, 1)), CompleteEvent(id, 1, 2, done1))
	st = batch(t, s, id)
	if st.State != flashpipe.BatchComplete || st.CompletedAt == nil || !st.CompletedAt.Equal(done1) ||
		st.OK != 3 || st.Failed != 0 {
		t.Fatalf("after generation 1: %s, want complete at %v with 3 ok", show(st), done1)
	}

	// A redelivered manifest of the current generation does not reopen the batch.
	apply(t, s, ManifestEvent(m1))
	if st2 := batch(t, s, id); !reflect.DeepEqual(st2, st) {
		t.Fatalf("after a redelivered manifest of generation 1: %s, want unchanged %s", show(st2), show(st))
	}

	// A whole generation in one call: manifest, results, completion.
	m2 := NewManifest(id, 3, base.Add(3*time.Hour))
	m2.Generation, m2.Seqs = 2, []int{1}
	done2 := base.Add(4 * time.Hour)
	apply(t, s, ManifestEvent(m2), ResultEvent(NewFailed(id, 1, 2)), CompleteEvent(id, 2, 1, done2))
	st = batch(t, s, id)
	if st.State != flashpipe.BatchComplete || !st.CompletedAt.Equal(done2) || st.Manifest.Generation != 2 || st.Failed != 1 {
		t.Fatalf("after generation 2 in one call: %s", show(st))
	}
}

func testResultsOrderAndFilter(t *testing.T, s flashpipe.Store) {
	const id = "order"
	const n = 60
	apply(t, s, ManifestEvent(NewManifest(id, n, base)))
	all := make([]*flashpipe.Result, n)
	var okWant, failedWant []*flashpipe.Result
	for i := range all {
		seq := i + 1
		if seq%7 == 0 {
			all[i] = NewFailed(id, seq, 0)
			failedWant = append(failedWant, all[i])
		} else {
			all[i] = NewResult(id, seq, 0)
			okWant = append(okWant, all[i])
		}
		// Positions need not follow Seq: Seq orders the results.
		all[i].Position = int64((n - i) * 3)
	}
	shuffled := append([]*flashpipe.Result(nil), all...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for len(shuffled) > 0 {
		k := min(len(shuffled), 7)
		var events []flashpipe.Event
		for _, r := range shuffled[:k] {
			events = append(events, ResultEvent(r))
		}
		apply(t, s, events...)
		shuffled = shuffled[k:]
	}
	equal(t, "all results", results(t, s, id, flashpipe.ResultFilter{}), wants(all...))
	equal(t, "ok results", results(t, s, id, flashpipe.ResultFilter{Status: flashpipe.StatusOK}), wants(okWant...))
	equal(t, "failed results", results(t, s, id, flashpipe.ResultFilter{Status: flashpipe.StatusFailed}), wants(failedWant...))
	if got := results(t, s, "no-such-batch", flashpipe.ResultFilter{}); len(got) != 0 {
		t.Fatalf("results of an unknown batch: %d, want none", len(got))
	}
}

func testResultsStopsAtCallbackError(t *testing.T, s flashpipe.Store) {
	const id = "stop"
	events := []flashpipe.Event{ManifestEvent(NewManifest(id, 10, base))}
	for seq := 1; seq <= 10; seq++ {
		events = append(events, ResultEvent(NewResult(id, seq, 0)))
	}
	apply(t, s, events...)
	stop := errors.New("stop here")
	calls := 0
	err := s.Results(context.Background(), id, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		calls++
		if calls == 3 {
			return fmt.Errorf("callback: %w", stop)
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("Results = %v after %d calls, want the callback's error after 3", err, calls)
	}
}

func testBatchCountsAndNotFound(t *testing.T, s flashpipe.Store) {
	const id = "counts"
	ctx := context.Background()
	if _, err := s.Batch(ctx, id); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Batch of an unknown batch: %v, want ErrNotFound", err)
	}
	apply(t, s, ManifestEvent(NewManifest(id, 10, base)))
	st := batch(t, s, id)
	if st.Done != 0 || st.OK != 0 || st.Failed != 0 || st.Usage != (flashpipe.Usage{}) || st.StartedAt != nil ||
		st.State != flashpipe.BatchRunning {
		t.Fatalf("new batch: %s, want running with nothing done and no StartedAt", show(st))
	}
	if got := results(t, s, id, flashpipe.ResultFilter{}); len(got) != 0 {
		t.Fatalf("results of a batch with none stored: %d, want none", len(got))
	}

	var total flashpipe.Usage
	var events []flashpipe.Event
	for seq := 1; seq <= 7; seq++ {
		r := NewResult(id, seq, 0)
		if seq%3 == 0 {
			r = NewFailed(id, seq, 0)
		}
		// Dyadic costs add up exactly in any order.
		r.Usage = flashpipe.Usage{Stage1Calls: seq, Stage2Calls: 2 * seq, CacheHits: seq % 2, CacheMisses: 3 * seq,
			PromptTokens: int64(seq) << 33, CompletionTokens: int64(seq) * 1000, Cost: float64(seq) / 64}
		total = total.Add(r.Usage)
		events = append(events, ResultEvent(r))
	}
	apply(t, s, events...)
	// A result of another batch must not count here.
	apply(t, s, ResultEvent(NewResult(id+"-other", 1, 0)))

	st = batch(t, s, id)
	if st.Done != 7 || st.OK != 5 || st.Failed != 2 {
		t.Fatalf("counts: done %d ok %d failed %d, want 7, 5, 2", st.Done, st.OK, st.Failed)
	}
	equal(t, "usage", st.Usage, total)
	// StartedAt is the earliest processed time of the batch's results (seq 1's).
	if first := UTCMicroOf(NewResult(id, 1, 0).ProcessedAt); st.StartedAt == nil || !st.StartedAt.Equal(first) {
		t.Fatalf("StartedAt = %v, want the first result's processed time %v", st.StartedAt, first)
	}
	if st.StartedAt.Location() != time.UTC {
		t.Errorf("StartedAt location = %v, want UTC", st.StartedAt.Location())
	}
	started := *st.StartedAt
	apply(t, s, ResultEvent(NewResult(id, 8, 0))) // processed later
	if st = batch(t, s, id); !st.StartedAt.Equal(started) {
		t.Fatalf("StartedAt moved from %v to %v with a later result", started, st.StartedAt)
	}
	if _, err := s.Batch(ctx, "counts-missing"); !errors.Is(err, flashpipe.ErrNotFound) ||
		!strings.Contains(err.Error(), `"counts-missing"`) {
		t.Fatalf("Batch of an unknown batch: %v, want ErrNotFound naming the batch", err)
	}
}

func testBatchesOrderAndLimit(t *testing.T, s flashpipe.Store) {
	ctx := context.Background()
	// Applied out of submission order; b and b2 tie on time and order by id, descending.
	apply(t, s, ManifestEvent(NewManifest("b", 1, base.Add(2*time.Hour))))
	apply(t, s, ManifestEvent(NewManifest("a", 1, base)), ResultEvent(NewResult("a", 1, 0)))
	apply(t, s, ManifestEvent(NewManifest("c", 1, base.Add(time.Hour))))
	apply(t, s, ManifestEvent(NewManifest("b2", 1, base.Add(2*time.Hour))))
	ids := func(sts []flashpipe.BatchStatus) []string {
		var out []string
		for _, st := range sts {
			out = append(out, st.Manifest.BatchID)
		}
		return out
	}
	all, err := s.Batches(ctx, 0)
	if err != nil {
		t.Fatalf("Batches(0): %v", err)
	}
	equal(t, "Batches(0)", ids(all), []string{"b2", "b", "c", "a"})
	if all[3].Done != 1 || all[3].OK != 1 || all[3].StartedAt == nil {
		t.Fatalf("batch a in the list: %s, want 1 ok with StartedAt", show(all[3]))
	}
	one, err := s.Batch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Batches entry", all[3], one)
	two, err := s.Batches(ctx, 2)
	if err != nil {
		t.Fatalf("Batches(2): %v", err)
	}
	equal(t, "Batches(2)", ids(two), []string{"b2", "b"})
	ten, err := s.Batches(ctx, 10)
	if err != nil {
		t.Fatalf("Batches(10): %v", err)
	}
	equal(t, "Batches(10)", ids(ten), ids(all))
	negative, err := s.Batches(ctx, -1)
	if err != nil {
		t.Fatalf("Batches(-1): %v", err)
	}
	equal(t, "Batches(-1)", ids(negative), ids(all))
}

func testResultsBeforeManifest(t *testing.T, s flashpipe.Store) {
	const id = "replayed"
	r1, r2 := NewResult(id, 1, 0), NewFailed(id, 2, 0)
	apply(t, s, ResultEvent(r1), ResultEvent(r2))
	if _, err := s.Batch(context.Background(), id); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Batch before its manifest: %v, want ErrNotFound", err)
	}
	equal(t, "results before the manifest", results(t, s, id, flashpipe.ResultFilter{}), wants(r1, r2))
	apply(t, s, ManifestEvent(NewManifest(id, 2, base)), CompleteEvent(id, 0, 2, base.Add(time.Minute)))
	st := batch(t, s, id)
	if st.Done != 2 || st.OK != 1 || st.Failed != 1 || st.State != flashpipe.BatchComplete {
		t.Fatalf("status: %s, want 2 done, complete", show(st))
	}
	if st.StartedAt == nil {
		t.Fatal("StartedAt is nil: a batch stored after its results starts when the first was written")
	}
}

func testRejectsInvalidEvents(t *testing.T, s flashpipe.Store) {
	const id = "invalid"
	good := []flashpipe.Event{ManifestEvent(NewManifest(id, 2, base)), ResultEvent(NewResult(id, 1, 0))}
	m := NewManifest(id, 2, base)
	bad := []struct {
		name  string
		event flashpipe.Event
		kind  string
	}{
		{"result kind without result", flashpipe.Event{Kind: flashpipe.EventResult}, "result"},
		{"manifest kind with a result", flashpipe.Event{Kind: flashpipe.EventManifest, Result: NewResult(id, 2, 0)}, "manifest"},
		{"two pointers", flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m, Result: NewResult(id, 2, 0)}, "manifest"},
		{"complete kind with a manifest", flashpipe.Event{Kind: flashpipe.EventComplete, Manifest: &m}, "complete"},
		{"unknown kind", flashpipe.Event{Kind: "bogus", Result: NewResult(id, 2, 0)}, "bogus"},
		{"empty kind", flashpipe.Event{Result: NewResult(id, 2, 0)}, `""`},
		{"bad status", ResultEvent(&flashpipe.Result{BatchID: id, Seq: 2, Status: "maybe"}), "result"},
		{"bad seq", ResultEvent(&flashpipe.Result{BatchID: id, Seq: 0, Status: flashpipe.StatusOK}), "result"},
		{"bad batch id", ResultEvent(&flashpipe.Result{BatchID: "a b", Seq: 1, Status: flashpipe.StatusOK}), "result"},
		{"negative emitted", CompleteEvent(id, 0, -1, base), "complete"},
	}
	for _, b := range bad {
		events := append(append([]flashpipe.Event(nil), good...), b.event)
		err := s.Apply(context.Background(), events)
		if err == nil {
			t.Fatalf("%s: Apply succeeded", b.name)
		}
		if !errors.Is(err, store.ErrInvalidEvent) || !flashpipe.IsPermanent(err) {
			t.Errorf("%s: error %v does not wrap ErrInvalidEvent as permanent", b.name, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "event 2") || !strings.Contains(msg, b.kind) {
			t.Errorf("%s: error %q does not name event 2 and its kind %s", b.name, msg, b.kind)
		}
	}
	if _, err := s.Batch(context.Background(), id); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Batch after rejected calls: %v, want ErrNotFound", err)
	}
	if got := results(t, s, id, flashpipe.ResultFilter{}); len(got) != 0 {
		t.Fatalf("rejected calls stored %d results", len(got))
	}
}

func testAtomicOnDatabaseError(t *testing.T, s flashpipe.Store) {
	const id = "atomic"
	m := NewManifest(id, 3, base)
	apply(t, s, ManifestEvent(m), ResultEvent(NewResult(id, 1, 0)))
	before := batch(t, s, id)
	beforeResults := results(t, s, id, flashpipe.ResultFilter{})

	// The last event is valid on its own but breaks the database's rule that a Seq
	// names one item (same Seq as item 2, another position): the whole call must fail
	// and leave no trace, including the rewrite of item 1 and the completion.
	r1 := NewFailed(id, 1, 1)
	dup := NewResult(id, 2, 0)
	dup.Position = 999
	m1 := m
	m1.Generation, m1.Seqs = 1, []int{1}
	err := s.Apply(context.Background(), []flashpipe.Event{
		ManifestEvent(m1), ResultEvent(r1), ResultEvent(NewResult(id, 2, 0)), ResultEvent(NewResult("atomic-2", 1, 0)),
		CompleteEvent(id, 1, 1, base.Add(time.Hour)), ResultEvent(dup),
	})
	if err == nil {
		t.Fatal("Apply with two items of one Seq succeeded")
	}
	equal(t, "status after a failed Apply", batch(t, s, id), before)
	equal(t, "results after a failed Apply", results(t, s, id, flashpipe.ResultFilter{}), beforeResults)
	if got := results(t, s, "atomic-2", flashpipe.ResultFilter{}); len(got) != 0 {
		t.Fatalf("failed Apply stored %d results of another batch", len(got))
	}
	// The store still works after the failure.
	apply(t, s, ResultEvent(NewResult(id, 2, 0)))
	if st := batch(t, s, id); st.Done != 2 {
		t.Fatalf("Done = %d after a good Apply, want 2", st.Done)
	}
}

func testConcurrentApply(t *testing.T, s flashpipe.Store) {
	const (
		writers = 6
		groups  = 5
		size    = 40
	)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			id := fmt.Sprintf("conc-%d", w)
			if err := s.Apply(ctx, []flashpipe.Event{ManifestEvent(NewManifest(id, groups*size, base.Add(time.Duration(w)*time.Second)))}); err != nil {
				errs <- err
				return
			}
			for g := range groups {
				events := make([]flashpipe.Event, 0, size+1)
				for i := range size {
					events = append(events, ResultEvent(NewResult(id, g*size+i+1, 0)))
				}
				if g == groups-1 {
					events = append(events, CompleteEvent(id, 0, groups*size, base.Add(time.Hour)))
				}
				if err := s.Apply(ctx, events); err != nil {
					errs <- fmt.Errorf("writer %d group %d: %w", w, g, err)
					return
				}
			}
		})
	}
	// Reads run alongside the writes.
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Batches(ctx, 0)
		readErr <- err
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-readErr; err != nil {
		t.Errorf("Batches during writes: %v", err)
	}
	for w := range writers {
		id := fmt.Sprintf("conc-%d", w)
		st := batch(t, s, id)
		if st.Done != groups*size || st.State != flashpipe.BatchComplete {
			t.Errorf("%s: done %d state %s, want %d complete", id, st.Done, st.State, groups*size)
		}
		rs := results(t, s, id, flashpipe.ResultFilter{})
		for i, r := range rs {
			if r.Seq != i+1 || len(r.Cards) != 3 {
				t.Fatalf("%s: result %d has seq %d and %d cards", id, i, r.Seq, len(r.Cards))
			}
		}
	}
}

func testLargeBatchStreams(t *testing.T, s flashpipe.Store) {
	const (
		id    = "large"
		n     = 20000
		group = 2000
	)
	apply(t, s, ManifestEvent(NewManifest(id, n, base)))
	// Small results keep the test fast; the streaming path is what is under test.
	mk := func(seq int) *flashpipe.Result {
		r := &flashpipe.Result{
			BatchID: id, Seq: seq, Item: flashpipe.Item{Position: int64(seq), Term: fmt.Sprint("단어", seq), Type: "noun"},
			Status: flashpipe.StatusOK, Attempts: 1, ProcessedAt: base,
			Cards: []flashpipe.Card{{TabName: "Scene", Front: fmt.Sprint("front ", seq), Back: "back"}, {TabName: "Hanja", Front: fmt.Sprint(seq)}},
		}
		if seq%1000 == 0 {
			r.Status, r.Cards, r.Failure = flashpipe.StatusFailed, nil, &flashpipe.Failure{Stage: "stage2", Reason: "timeout"}
		}
		return r
	}
	// Groups applied in reverse order, so storage order is not Seq order.
	for start := n - group + 1; start >= 1; start -= group {
		events := make([]flashpipe.Event, 0, group)
		for seq := start; seq < start+group; seq++ {
			events = append(events, ResultEvent(mk(seq)))
		}
		apply(t, s, events...)
	}
	next := 1
	err := s.Results(context.Background(), id, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		if r.Seq != next {
			return fmt.Errorf("got seq %d, want %d", r.Seq, next)
		}
		if w := want(mk(next)); !reflect.DeepEqual(r, w) {
			return fmt.Errorf("seq %d differs\n got: %s\nwant: %s", next, show(r), show(w))
		}
		next++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != n+1 {
		t.Fatalf("streamed %d results, want %d", next-1, n)
	}
	failed := results(t, s, id, flashpipe.ResultFilter{Status: flashpipe.StatusFailed})
	equal(t, "failed seqs", seqsOf(failed), []int{1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000,
		11000, 12000, 13000, 14000, 15000, 16000, 17000, 18000, 19000, 20000})
	if st := batch(t, s, id); st.Done != n || st.Failed != 20 {
		t.Fatalf("status: done %d failed %d, want %d and 20", st.Done, st.Failed, n)
	}
}
