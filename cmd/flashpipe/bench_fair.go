package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/ingest"
)

// waitRun is the wait section's result: a small batch's time from submit to stored
// completion, alone and submitted right after a big batch started.
type waitRun struct {
	SmallItems    int     `json:"small_items"`
	BigItems      int     `json:"big_items"`
	ConcurrentMax int     `json:"concurrent_max"`
	LatencyMS     float64 `json:"latency_ms"`
	AloneSeconds  float64 `json:"alone_seconds"`
	BesideSeconds float64 `json:"beside_seconds"`
	Ratio         float64 `json:"ratio"`
	// BigSeconds is the big batch's own time: what the small batch would wait in
	// arrival order.
	BigSeconds float64 `json:"big_seconds"`
}

// waitSection times a small batch alone, then submitted while a big batch runs.
func (b *BenchCmd) waitSection(ctx context.Context, log *slog.Logger, out map[string]any) error {
	dir, err := os.MkdirTemp("", "flashpipe-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := b.stack(ctx, dir, b.WaitConcurrent, b.WaitLatency, false, log)
	if err != nil {
		return err
	}
	defer st.Stop()
	run := func(ctx context.Context, id string, items []flashpipe.Item) (time.Duration, error) {
		start := time.Now()
		_, err := st.RunBatch(ctx, app.BatchRun{Batch: ingest.Batch{ID: id, Source: "bench", Items: ingest.SliceItems(items)}})
		return time.Since(start), err
	}
	alone, err := run(ctx, "small-alone", syntheticFrom(0, b.SmallItems))
	if err != nil {
		return err
	}
	type done struct {
		d   time.Duration
		err error
	}
	bigc := make(chan done, 1)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		d, err := run(bctx, "big", syntheticFrom(b.SmallItems, b.BigItems))
		bigc <- done{d, err}
	}()
	// The small batch goes in once the big one is being worked on.
	for {
		if s, err := st.Store.Batch(ctx, "big"); err == nil && s.Done > 0 {
			break
		}
		select {
		case r := <-bigc:
			return fmt.Errorf("the big batch ended before the small one was submitted: %v", r.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	beside, err := run(ctx, "small-beside", syntheticFrom(b.SmallItems+b.BigItems, b.SmallItems))
	if err != nil {
		return err
	}
	big := <-bigc
	if big.err != nil {
		return big.err
	}
	r := waitRun{SmallItems: b.SmallItems, BigItems: b.BigItems, ConcurrentMax: b.WaitConcurrent,
		LatencyMS: float64(b.WaitLatency) / float64(time.Millisecond), AloneSeconds: alone.Seconds(),
		BesideSeconds: beside.Seconds(), Ratio: beside.Seconds() / alone.Seconds(), BigSeconds: big.d.Seconds()}
	out["wait"] = r
	if !b.JSON {
		fmt.Printf("a %d-item batch, CONCURRENT_MAX=%d, latency %s per call:\n", r.SmallItems, r.ConcurrentMax, b.WaitLatency)
		fmt.Printf("  alone                                   %7.2fs\n", r.AloneSeconds)
		fmt.Printf("  submitted after a %d-item batch (fair) %7.2fs  (%.1fx alone)\n", r.BigItems, r.BesideSeconds, r.Ratio)
		fmt.Printf("  the %d-item batch itself, what arrival order would make it wait: %.2fs\n", r.BigItems, r.BigSeconds)
	}
	return nil
}

// manyRun is one run of the many section: items/s from the services' start to the
// last batch stored complete, with every batch queued before.
type manyRun struct {
	Name          string  `json:"name"`
	Batches       int     `json:"batches"`
	Items         int     `json:"items"`
	SubmitSeconds float64 `json:"submit_seconds"`
	Seconds       float64 `json:"seconds"`
	ItemsPerSec   float64 `json:"items_per_second"`
	CPUSeconds    float64 `json:"cpu_seconds"`
}

// manySection runs many small batches, then the same items as one batch, each
// through a fresh stack at zero latency, batches queued before the services start.
func (b *BenchCmd) manySection(ctx context.Context, log *slog.Logger, out map[string]any) error {
	total := b.ManyBatches * b.ManyItems
	one, err := b.manyOnce(ctx, fmt.Sprintf("1 batch of %d", total), 1, total, log)
	if err != nil {
		return err
	}
	many, err := b.manyOnce(ctx, fmt.Sprintf("%d batches of %d", b.ManyBatches, b.ManyItems), b.ManyBatches, b.ManyItems, log)
	if err != nil {
		return err
	}
	ratio := many.ItemsPerSec / one.ItemsPerSec
	out["many"] = map[string]any{"runs": []manyRun{one, many}, "ratio": ratio}
	if !b.JSON {
		for _, r := range []manyRun{one, many} {
			fmt.Printf("%-22s %6d items  queued in %6.2fs, then %7.2fs  %8.1f items/s  CPU %6.2fs\n",
				r.Name, r.Items, r.SubmitSeconds, r.Seconds, r.ItemsPerSec, r.CPUSeconds)
		}
		fmt.Printf("%d batches of %d at %.0f%% of the items/s of one batch (CONCURRENT_MAX=%d, zero latency)\n",
			b.ManyBatches, b.ManyItems, 100*ratio, b.ZeroConcurrent)
	}
	return nil
}

func (b *BenchCmd) manyOnce(ctx context.Context, name string, batches, per int, log *slog.Logger) (manyRun, error) {
	dir, err := os.MkdirTemp("", "flashpipe-bench-*")
	if err != nil {
		return manyRun{}, err
	}
	defer os.RemoveAll(dir)
	st, err := b.stack(ctx, dir, b.ZeroConcurrent, 0, true, log)
	if err != nil {
		return manyRun{}, err
	}
	defer st.Stop()
	t0 := time.Now()
	for i := range batches {
		id := fmt.Sprintf("many-%05d", i)
		if _, err := st.Client.Submit(ctx, ingest.Batch{ID: id, Source: "bench", Items: ingest.SliceItems(syntheticFrom(i*per, per))}); err != nil {
			return manyRun{}, err
		}
	}
	queued := time.Since(t0)
	cpu0, start := processCPU(), time.Now()
	st.Start()
	// One batch read at a time, the first not yet seen complete: reading every
	// batch's status at each poll would cost more than the pipeline's own work.
	for i := 0; i < batches; {
		s, err := st.Store.Batch(ctx, fmt.Sprintf("many-%05d", i))
		if err == nil && s.State == flashpipe.BatchComplete {
			i++
			continue
		}
		if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
			return manyRun{}, err
		}
		select {
		case err := <-st.Err():
			return manyRun{}, fmt.Errorf("a service failed: %w", err)
		case <-ctx.Done():
			return manyRun{}, errors.Join(ctx.Err(), fmt.Errorf("%d of %d batches complete", i, batches))
		case <-time.After(20 * time.Millisecond):
		}
	}
	el := time.Since(start)
	items := batches * per
	return manyRun{Name: name, Batches: batches, Items: items, SubmitSeconds: queued.Seconds(), Seconds: el.Seconds(),
		ItemsPerSec: float64(items) / el.Seconds(), CPUSeconds: (processCPU() - cpu0).Seconds()}, nil
}
