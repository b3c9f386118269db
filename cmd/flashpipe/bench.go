package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/natsx"
)

// BenchCmd measures end-to-end throughput on the embedded stack with the simulator.
type BenchCmd struct {
	Items          int           `help:"Items of the zero-latency run." default:"20000"`
	ZeroConcurrent int           `help:"CONCURRENT_MAX of the zero-latency run (with no latency to hide, more items in flight only help to overlap the NATS round trips)." default:"100"`
	Latency        time.Duration `help:"Simulated latency per API call of the concurrency runs." default:"200ms"`
	Concurrent     int           `help:"CONCURRENT_MAX of the concurrent run." default:"50"`
	ParItems       int           `help:"Items of the concurrent run." default:"1000"`
	SeqItems       int           `help:"Items of the sequential run (CONCURRENT_MAX=1)." default:"50"`
	SkipLatency    bool          `help:"Only the zero-latency run."`
	PostgresURL    string        `name:"postgres-url" help:"Store rows in this Postgres instead of SQLite." env:"FLASHPIPE_BENCH_POSTGRES_URL"`
	JSON           bool          `help:"Print the results as one JSON object."`
	CPUProfile     string        `help:"Write a CPU profile of the runs to this file." type:"path"`
	Sections       []string      `help:"What to measure: throughput (one batch: zero latency, sequential, concurrent), wait (a small batch alone and beside a big one, fair share), many (many small batches against one big one, batches queued first)." default:"throughput" enum:"throughput,wait,many"`
	SmallItems     int           `help:"Items of the small batch of the wait section." default:"3"`
	BigItems       int           `help:"Items of the big batch of the wait section." default:"1000"`
	WaitLatency    time.Duration `help:"Simulated latency per API call of the wait section." default:"100ms"`
	WaitConcurrent int           `help:"CONCURRENT_MAX of the wait section." default:"10"`
	ManyBatches    int           `help:"Batches of the many section." default:"2000"`
	ManyItems      int           `help:"Items per batch of the many section (the one big batch has batches x items)." default:"5"`
}

type benchRun struct {
	Name          string  `json:"name"`
	Items         int     `json:"items"`
	ConcurrentMax int     `json:"concurrent_max"`
	LatencyMS     float64 `json:"latency_ms"`
	Seconds       float64 `json:"seconds"`
	ItemsPerSec   float64 `json:"items_per_second"`
}

// Run runs the benchmark.
func (b *BenchCmd) Run(ctx context.Context, log *slog.Logger) error {
	quiet := slog.New(slog.DiscardHandler)
	if b.CPUProfile != "" {
		f, err := os.Create(b.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	out := map[string]any{}
	for _, sec := range b.Sections {
		var err error
		switch sec {
		case "throughput":
			err = b.throughput(ctx, quiet, out)
		case "wait":
			err = b.waitSection(ctx, quiet, out)
		case "many":
			err = b.manySection(ctx, quiet, out)
		}
		if err != nil {
			return fmt.Errorf("bench %s: %w", sec, err)
		}
	}
	if b.JSON {
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	return nil
}

// throughput runs one batch through a fresh stack: zero latency, then sequential and
// concurrent at the configured latency.
func (b *BenchCmd) throughput(ctx context.Context, quiet *slog.Logger, out map[string]any) error {
	var runs []benchRun
	add := func(r benchRun, err error) error {
		if err != nil {
			return err
		}
		runs = append(runs, r)
		if !b.JSON {
			fmt.Printf("%-28s %6d items  CONCURRENT_MAX=%-3d latency %-6s  %7.2fs  %8.1f items/s\n",
				r.Name, r.Items, r.ConcurrentMax, time.Duration(r.LatencyMS*float64(time.Millisecond)), r.Seconds, r.ItemsPerSec)
		}
		return nil
	}
	if err := add(b.once(ctx, "zero latency, end to end", b.Items, b.ZeroConcurrent, 0, quiet)); err != nil {
		return err
	}
	out["runs"] = &runs
	if !b.SkipLatency {
		if err := add(b.once(ctx, "sequential", b.SeqItems, 1, b.Latency, quiet)); err != nil {
			return err
		}
		if err := add(b.once(ctx, "concurrent", b.ParItems, b.Concurrent, b.Latency, quiet)); err != nil {
			return err
		}
		ratio := runs[2].ItemsPerSec / runs[1].ItemsPerSec
		out["speedup"] = ratio
		if !b.JSON {
			fmt.Printf("speed-up of CONCURRENT_MAX=%d over sequential at %s per call: %.1fx\n", b.Concurrent, b.Latency, ratio)
		}
	}
	return nil
}

// once runs n synthetic items through a fresh embedded stack and times submit to
// stored completion.
func (b *BenchCmd) once(ctx context.Context, name string, n, concurrent int, latency time.Duration, log *slog.Logger) (benchRun, error) {
	dir, err := os.MkdirTemp("", "flashpipe-bench-*")
	if err != nil {
		return benchRun{}, err
	}
	defer os.RemoveAll(dir)
	st, err := b.stack(ctx, dir, concurrent, latency, false, log)
	if err != nil {
		return benchRun{}, err
	}
	defer st.Stop()
	items := syntheticItems(n)
	id := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	start := time.Now()
	if _, err := st.RunBatch(ctx, app.BatchRun{Batch: ingest.Batch{ID: id, Source: "bench", Items: ingest.SliceItems(items)}}); err != nil {
		return benchRun{}, err
	}
	el := time.Since(start).Seconds()
	return benchRun{Name: name, Items: n, ConcurrentMax: concurrent, LatencyMS: float64(latency) / float64(time.Millisecond),
		Seconds: el, ItemsPerSec: float64(n) / el}, nil
}

// stack starts an embedded stack in dir with the simulator at latency per call and
// CONCURRENT_MAX concurrent; hold builds it without starting the services.
func (b *BenchCmd) stack(ctx context.Context, dir string, concurrent int, latency time.Duration, hold bool, log *slog.Logger) (*app.Stack, error) {
	var api APIFlags
	api.Stage1Model, api.Stage2Model, api.StructuredOutputs = benchModel, benchModel, true
	pc, err := api.processorConfig(ProcessorFlags{ConcurrentMax: concurrent, RetryMaxAttempts: 3, AckWait: time.Minute, MaxDeliveries: 10},
		RateLimitFlags{RateLimitRPM: -1})
	if err != nil {
		return nil, err
	}
	return app.StartStack(ctx, app.StackConfig{
		DataDir: dir, NATS: natsx.EmbeddedConfig{Port: -1}, Store: app.StoreConfig{PostgresURL: b.PostgresURL},
		Processor: pc, Sim: SimFlags{SimLatency: latency}.config(log), Hold: hold, Logger: log,
	})
}

const benchModel = "bench/simulated"

// syntheticItems returns n distinct Korean-looking items.
func syntheticItems(n int) []flashpipe.Item { return syntheticFrom(0, n) }

// syntheticFrom returns n distinct Korean-looking items, the from-th on (items of
// different ranges never share a term, so no answer comes from the cache).
func syntheticFrom(from, n int) []flashpipe.Item {
	syll := []rune("가나다라마바사아자차카타파하거너더러머버서어저처")
	types := []string{"noun", "verb", "adjective", "adverb", "particle", "pronoun"}
	items := make([]flashpipe.Item, n)
	for i := range items {
		var term []rune
		for v := from + i + 1; v > 0; v /= len(syll) {
			term = append(term, syll[v%len(syll)])
		}
		items[i] = flashpipe.Item{Position: int64(i + 1), Term: string(term), Type: types[i%len(types)]}
	}
	return items
}
