package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
)

// The subtests of this file check that Apply is commutative: a batch's state depends
// on which events are stored, not on the order they were stored in.

// wantState fails the test unless batch id reads state, with CompletedAt equal to
// completedAt (zero: none), in both Batch and Batches.
func wantState(t *testing.T, s flashpipe.Store, id, when, state string, completedAt time.Time) flashpipe.BatchStatus {
	t.Helper()
	st := batch(t, s, id)
	ok := st.State == state
	if completedAt.IsZero() {
		ok = ok && st.CompletedAt == nil
	} else {
		ok = ok && st.CompletedAt != nil && st.CompletedAt.Equal(store.UTCMicro(completedAt))
	}
	if !ok {
		t.Fatalf("%s: %s\nwant state %q, CompletedAt %v (zero: none)", when, show(st), state, store.UTCMicro(completedAt))
	}
	all, err := s.Batches(context.Background(), 0)
	if err != nil {
		t.Fatalf("%s: Batches: %v", when, err)
	}
	for _, b := range all {
		if b.Manifest.BatchID == id {
			equal(t, when+": Batches entry", b, st)
			return st
		}
	}
	t.Fatalf("%s: batch %q is not in Batches", when, id)
	return st
}

// (a) A completion stored before the last results of its generation leaves the batch
// running until they are all stored.
func testCompletionBeforeLastResults(t *testing.T, s flashpipe.Store) {
	const id = "early-completion"
	apply(t, s, ManifestEvent(NewManifest(id, 3, base)), ResultEvent(NewResult(id, 1, 0)))
	done := base.Add(time.Minute + 123456789)
	apply(t, s, CompleteEvent(id, 0, 3, done))
	wantState(t, s, id, "completion with 1 of 3 results", flashpipe.BatchRunning, time.Time{})
	apply(t, s, ResultEvent(NewFailed(id, 2, 0)))
	wantState(t, s, id, "completion with 2 of 3 results", flashpipe.BatchRunning, time.Time{})
	apply(t, s, ResultEvent(NewResult(id, 3, 0)))
	st := wantState(t, s, id, "completion with 3 of 3 results", flashpipe.BatchComplete, done)
	if st.Done != 3 || st.OK != 2 || st.Failed != 1 {
		t.Fatalf("counts: %s, want 3 done, 2 ok, 1 failed", show(st))
	}
	// Replays of anything change nothing.
	apply(t, s, ResultEvent(NewFailed(id, 2, 0)), CompleteEvent(id, 0, 3, done), ManifestEvent(NewManifest(id, 3, base)))
	wantState(t, s, id, "after replays", flashpipe.BatchComplete, done)
}

// (b) A retry generation's completion may be stored before its results: the batch
// stays running until they are all stored.
func testRetryCompletionBeforeResults(t *testing.T, s flashpipe.Store) {
	const id = "retry-early"
	done0 := base.Add(time.Minute)
	apply(t, s, ManifestEvent(NewManifest(id, 3, base)), ResultEvent(NewResult(id, 1, 0)),
		ResultEvent(NewFailed(id, 2, 0)), ResultEvent(NewFailed(id, 3, 0)), CompleteEvent(id, 0, 3, done0))
	wantState(t, s, id, "generation 0 complete", flashpipe.BatchComplete, done0)

	m1 := NewManifest(id, 3, base.Add(time.Hour))
	m1.Generation, m1.Seqs = 1, []int{2, 3}
	apply(t, s, ManifestEvent(m1))
	wantState(t, s, id, "generation 1 manifest", flashpipe.BatchRunning, time.Time{})

	done1 := base.Add(2 * time.Hour)
	apply(t, s, CompleteEvent(id, 1, 2, done1))
	wantState(t, s, id, "generation 1 completion before its results", flashpipe.BatchRunning, time.Time{})
	apply(t, s, ResultEvent(NewResult(id, 3, 1)))
	wantState(t, s, id, "generation 1 completion with 1 of 2 results", flashpipe.BatchRunning, time.Time{})
	apply(t, s, ResultEvent(NewResult(id, 2, 1)))
	st := wantState(t, s, id, "generation 1 completion with 2 of 2 results", flashpipe.BatchComplete, done1)
	if st.OK != 3 || st.Failed != 0 || st.Manifest.Generation != 1 {
		t.Fatalf("after generation 1: %s, want generation 1 with 3 ok", show(st))
	}
}

// (c) A completion of an older generation than the stored manifest's, even with all
// its results stored, never makes the batch complete, nor undoes a newer completion.
func testOldCompletionAfterRetryManifest(t *testing.T, s flashpipe.Store) {
	const id = "old-completion"
	apply(t, s, ManifestEvent(NewManifest(id, 2, base)), ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewFailed(id, 2, 0)))
	m1 := NewManifest(id, 2, base.Add(time.Hour))
	m1.Generation, m1.Seqs = 1, []int{2}
	apply(t, s, ManifestEvent(m1))
	done0 := base.Add(time.Minute)
	apply(t, s, CompleteEvent(id, 0, 2, done0))
	wantState(t, s, id, "generation 0 completion after generation 1 manifest", flashpipe.BatchRunning, time.Time{})
	apply(t, s, ResultEvent(NewResult(id, 2, 1)))
	wantState(t, s, id, "generation 1 result without its completion", flashpipe.BatchRunning, time.Time{})

	done1 := base.Add(2 * time.Hour)
	apply(t, s, CompleteEvent(id, 1, 1, done1))
	wantState(t, s, id, "generation 1 complete", flashpipe.BatchComplete, done1)
	// A duplicate of generation 0's completion, even one stamped later, changes nothing.
	apply(t, s, CompleteEvent(id, 0, 2, done0))
	apply(t, s, CompleteEvent(id, 0, 2, base.Add(3*time.Hour)))
	wantState(t, s, id, "generation 0 completion replayed", flashpipe.BatchComplete, done1)
	// Of two completions of one generation, the earliest counts, in either order.
	apply(t, s, CompleteEvent(id, 1, 1, done1.Add(time.Hour)))
	wantState(t, s, id, "later duplicate of generation 1 completion", flashpipe.BatchComplete, done1)
	earlier := done1.Add(-time.Second)
	apply(t, s, CompleteEvent(id, 1, 1, earlier))
	wantState(t, s, id, "earlier duplicate of generation 1 completion", flashpipe.BatchComplete, earlier)
}

// A completion stored before its batch's manifest is kept, unseen, until the manifest
// arrives.
func testCompletionBeforeManifest(t *testing.T, s flashpipe.Store) {
	ctx := context.Background()
	const id = "completion-first"
	done := base.Add(time.Minute)
	apply(t, s, CompleteEvent(id, 0, 2, done))
	if _, err := s.Batch(ctx, id); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Batch with only a completion stored: %v, want ErrNotFound", err)
	}
	if all, err := s.Batches(ctx, 0); err != nil || len(all) != 0 {
		t.Fatalf("Batches with only a completion stored: %s, %v; want none", show(all), err)
	}
	apply(t, s, ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewResult(id, 2, 0)))
	if _, err := s.Batch(ctx, id); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Fatalf("Batch with no manifest stored: %v, want ErrNotFound", err)
	}
	m := NewManifest(id, 2, base)
	apply(t, s, ManifestEvent(m))
	st := wantState(t, s, id, "manifest after completion and results", flashpipe.BatchComplete, done)
	equal(t, "manifest", st.Manifest, wantManifest(m))
	if !st.SubmittedAt.Equal(m.CreatedAt) || st.StartedAt == nil || st.Done != 2 {
		t.Fatalf("status: %s, want SubmittedAt %v, a StartedAt and 2 done", show(st), m.CreatedAt)
	}

	// An empty batch completes with its completion alone, in either order.
	apply(t, s, CompleteEvent("empty-1", 0, 0, done), ManifestEvent(NewManifest("empty-1", 0, base)))
	wantState(t, s, "empty-1", "empty batch, completion first", flashpipe.BatchComplete, done)
	apply(t, s, ManifestEvent(NewManifest("empty-2", 0, base)))
	wantState(t, s, "empty-2", "empty batch before its completion", flashpipe.BatchRunning, time.Time{})
	apply(t, s, CompleteEvent("empty-2", 0, 0, done))
	wantState(t, s, "empty-2", "empty batch, manifest first", flashpipe.BatchComplete, done)
}

// Two generations of a batch, their events applied in many orders and groupings,
// leave the same status and results as the events applied in log order.
func testAnyOrderSameOutcome(t *testing.T, s flashpipe.Store) {
	m0Created, m1Created := base, base.Add(time.Hour)
	done0, done1 := base.Add(time.Minute), base.Add(2*time.Hour)
	events := func(id string) []flashpipe.Event {
		m0 := NewManifest(id, 4, m0Created)
		m1 := NewManifest(id, 4, m1Created)
		m1.Generation, m1.Seqs = 1, []int{3, 4}
		return []flashpipe.Event{
			ManifestEvent(m0),
			ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewResult(id, 2, 0)),
			ResultEvent(NewFailed(id, 3, 0)), ResultEvent(NewFailed(id, 4, 0)),
			CompleteEvent(id, 0, 4, done0),
			ManifestEvent(m1),
			ResultEvent(NewResult(id, 3, 1)), ResultEvent(NewFailed(id, 4, 1)),
			CompleteEvent(id, 1, 2, done1),
		}
	}
	// outcome returns what a batch's id does not change: its status without the
	// wall-clock StartedAt, and its results.
	outcome := func(id string) (flashpipe.BatchStatus, []flashpipe.Result) {
		t.Helper()
		st := batch(t, s, id)
		if st.StartedAt == nil {
			t.Fatalf("%s: StartedAt is nil", id)
		}
		st.StartedAt, st.Manifest.BatchID = nil, ""
		rs := results(t, s, id, flashpipe.ResultFilter{})
		for i := range rs {
			rs[i].BatchID = ""
		}
		return st, rs
	}

	for _, e := range events("in-order") {
		apply(t, s, e)
	}
	wantSt, wantRs := outcome("in-order")
	if wantSt.State != flashpipe.BatchComplete || !wantSt.CompletedAt.Equal(done1) || !wantSt.SubmittedAt.Equal(m0Created) ||
		wantSt.Manifest.Generation != 1 || wantSt.OK != 3 || wantSt.Failed != 1 {
		t.Fatalf("in log order: %s, want generation 1 complete at %v, submitted at %v, 3 ok and 1 failed",
			show(wantSt), done1, m0Created)
	}

	rng := rand.New(rand.NewPCG(3, 4))
	for run := range 12 {
		id := fmt.Sprintf("any-order-%d", run)
		evs := events(id)
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		var order []string
		for len(evs) > 0 {
			k := min(len(evs), 1+rng.IntN(3))
			apply(t, s, evs[:k]...)
			var group []string
			for _, e := range evs[:k] {
				group = append(group, describe(e))
			}
			order = append(order, fmt.Sprint(group))
			evs = evs[k:]
		}
		gotSt, gotRs := outcome(id)
		if !equalValues(gotSt, wantSt) || !equalValues(gotRs, wantRs) {
			t.Errorf("events applied as %v:\n got: %s\nwant: %s", order, show(gotSt), show(wantSt))
			equal(t, "results", gotRs, wantRs)
		}
	}
}

// describe names an event for a failure message.
func describe(e flashpipe.Event) string {
	switch {
	case e.Manifest != nil:
		return fmt.Sprintf("manifest/%d", e.Manifest.Generation)
	case e.Result != nil:
		return fmt.Sprintf("result/%d/seq%d", e.Result.Generation, e.Result.Seq)
	case e.Completion != nil:
		return fmt.Sprintf("complete/%d", e.Completion.Generation)
	}
	return string(e.Kind)
}

// NUL, which PostgreSQL refuses in text and jsonb, and invalid UTF-8 in any stored
// string become U+FFFD, in every driver alike; the caller's values are not modified.
func testCleansText(t *testing.T, s flashpipe.Store) {
	const id = "nul"
	m := NewManifest(id, 2, base)
	m.Source, m.ContentHash = "up\x00load.csv", "sha256:\x00"
	m.Settings = map[string]string{"no\x00te": "a\x00b"}

	r := NewResult(id, 1, 0)
	r.Term, r.Type = "남\x00성", "no\x00un"
	r.Metadata = map[string]string{"k\x00": "v\x00", "plain": "text"}
	r.Analysis.Metaphor = "a\x00b\x00"
	r.Analysis.Explanation = `the six characters \u0000 are text and stay`
	r.Analysis.IPA = "back\\\x00slash" // a backslash before a NUL
	r.Analysis.KoreanKeywords = []string{"\x00", "남자"}
	r.Analysis.Comparison.Nuance = "x\x00"
	r.Cards[0].Front = "\x00front"
	r.Cards[1].Back = "in\xffvalid"
	r.Cards[2].Tags, r.Cards[2].HonorificLevel = "t\x00", "\x00"

	f := NewFailed(id, 2, 0)
	f.Failure.Reason, f.Failure.Stage, f.Failure.NextStep = "the model said \x00\x00", "stage\x00", "re\xfftry"

	apply(t, s, ManifestEvent(m), ResultEvent(r), ResultEvent(f))

	const x = "\uFFFD"
	wr, wf := want(r), want(f)
	wr.Term, wr.Type = "남"+x+"성", "no"+x+"un"
	wr.Metadata = map[string]string{"k" + x: "v" + x, "plain": "text"}
	a := *r.Analysis
	a.Metaphor = "a" + x + "b" + x
	a.IPA = "back\\" + x + "slash"
	a.KoreanKeywords = []string{x, "남자"}
	a.Comparison = &flashpipe.Comparison{Vs: r.Analysis.Comparison.Vs, Nuance: "x" + x}
	wr.Analysis = &a
	wr.Cards = append([]flashpipe.Card(nil), r.Cards...)
	wr.Cards[0].Front, wr.Cards[1].Back, wr.Cards[2].Tags, wr.Cards[2].HonorificLevel = x+"front", "in"+x+"valid", "t"+x, x
	failure := *f.Failure
	failure.Reason, failure.Stage, failure.NextStep = "the model said "+x+x, "stage"+x, "re"+x+"try"
	wf.Failure = &failure
	equal(t, "results", results(t, s, id, flashpipe.ResultFilter{}), []flashpipe.Result{wr, wf})
	equal(t, "failed results", results(t, s, id, flashpipe.ResultFilter{Status: flashpipe.StatusFailed}), []flashpipe.Result{wf})

	st := batch(t, s, id)
	wm := wantManifest(m)
	wm.Source, wm.ContentHash, wm.Settings = "up"+x+"load.csv", "sha256:"+x, map[string]string{"no" + x + "te": "a" + x + "b"}
	equal(t, "manifest", st.Manifest, wm)

	if r.Term != "남\x00성" || r.Cards[0].Front != "\x00front" || r.Cards[1].Back != "in\xffvalid" || f.Failure.Reason != "the model said \x00\x00" {
		t.Fatal("Apply modified the caller's result")
	}
}
