package main

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// bench --sections wait,many, small: the small batch completes beside the big one
// before it, and the many-batches section runs every batch to the store.
func TestBenchFairSections(t *testing.T) {
	t.Parallel()
	b := &BenchCmd{JSON: true, ZeroConcurrent: 20, SmallItems: 3, BigItems: 200, WaitLatency: 20 * time.Millisecond,
		WaitConcurrent: 10, ManyBatches: 20, ManyItems: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := map[string]any{}
	quiet := slog.New(slog.DiscardHandler)
	if err := b.waitSection(ctx, quiet, out); err != nil {
		t.Fatal(err)
	}
	w := out["wait"].(waitRun)
	t.Logf("wait: %+v", w)
	if w.AloneSeconds <= 0 || w.BesideSeconds <= 0 || w.BesideSeconds >= w.BigSeconds {
		t.Errorf("the small batch took %.2fs alone and %.2fs beside a big batch of %.2fs; want it done before the big one",
			w.AloneSeconds, w.BesideSeconds, w.BigSeconds)
	}
	if err := b.manySection(ctx, quiet, out); err != nil {
		t.Fatal(err)
	}
	m := out["many"].(map[string]any)
	runs := m["runs"].([]manyRun)
	t.Logf("many: %+v, ratio %.2f", runs, m["ratio"])
	if runs[0].Items != 60 || runs[1].Batches != 20 || runs[1].Items != 60 || runs[1].ItemsPerSec <= 0 || m["ratio"].(float64) <= 0 {
		t.Errorf("many runs %+v; want one batch of 60 and 20 batches of 3, each with a rate", runs)
	}
}
