package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
)

// testPrune: Prune deletes complete batches submitted and completed before the cutoff,
// with their items and cards, in chunks, and keeps every running batch and every
// recent one.
func testPrune(t *testing.T, s flashpipe.Store) {
	p, ok := s.(store.Pruner)
	if !ok {
		t.Fatalf("%T does not implement store.Pruner", s)
	}
	ctx := context.Background()
	old, cutoff, recent := base, base.Add(90*24*time.Hour), base.Add(100*24*time.Hour)
	complete := func(id string, n int, submitted, completed time.Time) {
		t.Helper()
		events := []flashpipe.Event{ManifestEvent(NewManifest(id, n, submitted))}
		for seq := 1; seq <= n; seq++ {
			events = append(events, ResultEvent(NewResult(id, seq, 0)))
		}
		apply(t, s, append(events, CompleteEvent(id, 0, n, completed))...)
	}
	// Five old complete batches (pruned in chunks of two), one completed recently, one
	// submitted recently.
	for i := range 5 {
		complete(fmt.Sprintf("old%d", i), 3, old, old.Add(time.Hour))
	}
	complete("fixed-recently", 3, old, recent)
	complete("new", 3, recent, recent)
	// Old but running: no completion; a retry generation started; a completion stored
	// before a result it counts; a completion without its manifest.
	apply(t, s, ManifestEvent(NewManifest("running", 3, old)), ResultEvent(NewResult("running", 1, 0)))
	complete("retrying", 3, old, old.Add(time.Hour))
	m := NewManifest("retrying", 3, old.Add(2*time.Hour))
	m.Generation, m.Seqs = 1, []int{2}
	apply(t, s, ManifestEvent(m))
	apply(t, s, ManifestEvent(NewManifest("early-completion", 2, old)), ResultEvent(NewResult("early-completion", 1, 0)),
		CompleteEvent("early-completion", 0, 2, old.Add(time.Hour)))
	apply(t, s, CompleteEvent("no-manifest", 0, 1, old.Add(time.Hour)))

	got, err := p.Prune(ctx, cutoff, 2)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if got != (store.Pruned{Batches: 5, Items: 15}) {
		t.Errorf("Prune deleted %+v, want 5 batches and 15 items", got)
	}
	for i := range 5 {
		id := fmt.Sprintf("old%d", i)
		if _, err := s.Batch(ctx, id); !errors.Is(err, flashpipe.ErrNotFound) {
			t.Errorf("pruned batch %s: %v, want ErrNotFound", id, err)
		}
		if rs := results(t, s, id, flashpipe.ResultFilter{}); len(rs) != 0 {
			t.Errorf("pruned batch %s still has %d results", id, len(rs))
		}
	}
	for id, want := range map[string]int{"fixed-recently": 3, "new": 3, "running": 1, "retrying": 3, "early-completion": 1} {
		if st := batch(t, s, id); st.Done != want {
			t.Errorf("kept batch %s: %d results, want %d", id, st.Done, want)
		}
		if rs := results(t, s, id, flashpipe.ResultFilter{}); len(rs) != want || (len(rs) > 0 && len(rs[0].Cards) != 3) {
			t.Errorf("kept batch %s: %d results (cards %v), want %d with their cards", id, len(rs), rs, want)
		}
	}
	// The manifest-less completion is still there: its manifest makes a batch of it.
	apply(t, s, ManifestEvent(NewManifest("no-manifest", 1, old)), ResultEvent(NewResult("no-manifest", 1, 0)))
	if st := batch(t, s, "no-manifest"); st.State != flashpipe.BatchComplete {
		t.Errorf("a completion stored before its manifest was pruned: %s", show(st))
	}
	// A pruned batch can be stored again (a replay), and a second Prune finds nothing
	// else to delete before the cutoff.
	complete("old0", 3, old, old.Add(time.Hour))
	if st := batch(t, s, "old0"); st.State != flashpipe.BatchComplete || st.Done != 3 {
		t.Errorf("replayed batch: %s", show(st))
	}
	if got, err := p.Prune(ctx, old, 0); err != nil || got != (store.Pruned{}) {
		t.Errorf("Prune before everything: %+v, %v; want nothing deleted", got, err)
	}
}
