package storetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe"
)

// replacement returns the events of a batch's generation 0 (three items at positions
// 10, 20, 30, content A) and of its replacement, generation 1 (two other items, at
// positions 15 and 25, content B: seq 1 and 2 now name other positions).
func replacement(id string) (gen0, gen1 []flashpipe.Event, newResults []*flashpipe.Result) {
	m0 := NewManifest(id, 3, base)
	gen0 = []flashpipe.Event{ManifestEvent(m0),
		ResultEvent(NewResult(id, 1, 0)), ResultEvent(NewResult(id, 2, 0)), ResultEvent(NewFailed(id, 3, 0)),
		CompleteEvent(id, 0, 3, base.Add(1e9))}
	m1 := NewManifest(id, 2, base.Add(5e9))
	m1.Generation, m1.Base, m1.ContentHash = 1, 1, "sha256:"+strings.Repeat("cd", 16)
	gen1 = []flashpipe.Event{ManifestEvent(m1)}
	for seq := 1; seq <= 2; seq++ {
		r := NewResult(id, seq, 1)
		r.Position += 5
		r.Term = "새" + r.Term
		newResults = append(newResults, r)
		gen1 = append(gen1, ResultEvent(r))
	}
	gen1 = append(gen1, CompleteEvent(id, 1, 2, base.Add(6e9)))
	return gen0, gen1, newResults
}

// A batch id names one batch: a manifest with the same base but other items is
// refused, permanently, and nothing of its call is written.
func testConflictingManifestRefused(t *testing.T, s flashpipe.Store) {
	const id = "conflict"
	gen0, _, _ := replacement(id)
	apply(t, s, gen0...)
	other := NewManifest("conflict", 4, base.Add(1e10))
	other.ContentHash = "sha256:" + strings.Repeat("ef", 16)
	err := s.Apply(context.Background(), []flashpipe.Event{ResultEvent(NewResult("bystander", 1, 0)), ManifestEvent(other)})
	if !errors.Is(err, flashpipe.ErrBatchConflict) || !flashpipe.IsPermanent(err) {
		t.Fatalf("Apply of a manifest with other items under a used id = %v, want a permanent ErrBatchConflict", err)
	}
	if st := batch(t, s, id); st.Manifest.Count != 3 || st.State != flashpipe.BatchComplete || st.Manifest.ContentHash != gen0[0].Manifest.ContentHash {
		t.Fatalf("after the refused manifest: %s", show(st))
	}
	if rs := results(t, s, "bystander", flashpipe.ResultFilter{}); len(rs) != 0 {
		t.Fatalf("the refused call stored %d results", len(rs))
	}
	// A replacement that does not come after the stored generation is refused too.
	late := other
	late.Base = 1
	if err := s.Apply(context.Background(), []flashpipe.Event{ManifestEvent(late)}); !errors.Is(err, flashpipe.ErrBatchConflict) {
		t.Fatalf("a replacement at generation 0 = %v, want ErrBatchConflict", err)
	}
	// The same manifest again (a redelivery) is no conflict.
	apply(t, s, gen0[0])
}

// A replacement drops every older generation's row, whatever order the events of both
// generations are applied in (several sink replicas, a replay): the batch never mixes
// two item lists.
func testReplacementNeverMixes(t *testing.T, s flashpipe.Store) {
	for round := range 8 {
		id := "replace" + string(rune('a'+round))
		gen0, gen1, newResults := replacement(id)
		events := append(append([]flashpipe.Event{}, gen0...), gen1...)
		if round > 0 { // round 0 in log order, the others shuffled
			rng := rand.New(rand.NewPCG(uint64(round), 7))
			rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
		}
		for _, ev := range events {
			apply(t, s, ev)
		}
		equal(t, id+" results", results(t, s, id, flashpipe.ResultFilter{}), wants(newResults...))
		st := batch(t, s, id)
		if st.State != flashpipe.BatchComplete || st.Manifest.Count != 2 || st.Done != 2 || st.OK != 2 || st.Manifest.Generation != 1 {
			t.Fatalf("%s: status %s, want the replacement's 2 items, complete", id, show(st))
		}
		// A late result of the replaced generation changes nothing.
		apply(t, s, ResultEvent(NewFailed(id, 3, 0)), ResultEvent(NewFailed(id, 1, 0)))
		equal(t, id+" results after late old results", results(t, s, id, flashpipe.ResultFilter{}), wants(newResults...))
	}
}

// Events set aside keep their event and reason, one letter per event, and make an
// incomplete batch read blocked with the reason until they are resolved.
func testDeadLetters(t *testing.T, s flashpipe.Store) {
	ctx := context.Background()
	const id = "letters"
	apply(t, s, ManifestEvent(NewManifest(id, 2, base)), ResultEvent(NewResult(id, 1, 0)))
	bad := ResultEvent(NewResult(id, 2, 0))
	letter := flashpipe.DeadLetter{Event: bad, Reason: "violates check constraint \"x\"", At: base}
	for range 2 { // setting the same event aside twice keeps one letter
		if err := s.SetAside(ctx, []flashpipe.DeadLetter{letter}); err != nil {
			t.Fatal(err)
		}
	}
	other := flashpipe.DeadLetter{Event: ResultEvent(NewResult("elsewhere", 1, 0)), Reason: "other", At: base}
	if err := s.SetAside(ctx, []flashpipe.DeadLetter{other}); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeadLetters(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Reason != letter.Reason || got[0].ID == 0 || !got[0].At.Equal(base) {
		t.Fatalf("dead letters of %s = %s", id, show(got))
	}
	equal(t, "the letter's event", want(got[0].Event.Result), want(bad.Result))
	if all, err := s.DeadLetters(ctx, ""); err != nil || len(all) != 2 {
		t.Fatalf("all dead letters: %d, %v; want 2", len(all), err)
	}
	st := batch(t, s, id)
	if st.State != flashpipe.BatchBlocked || st.SetAside != 1 || st.Problem != letter.Reason {
		t.Fatalf("status with a set-aside event = %s, want blocked with the reason", show(st))
	}
	// Replayed once fixed: stored, resolved, and the batch completes.
	apply(t, s, got[0].Event, CompleteEvent(id, 0, 2, base.Add(1e9)))
	if err := s.Resolve(ctx, []int64{got[0].ID}); err != nil {
		t.Fatal(err)
	}
	if left, err := s.DeadLetters(ctx, id); err != nil || len(left) != 0 {
		t.Fatalf("after Resolve: %d letters, %v", len(left), err)
	}
	if st := batch(t, s, id); st.State != flashpipe.BatchComplete || st.SetAside != 0 || st.Problem != "" {
		t.Fatalf("status after the replay = %s", show(st))
	}
}
