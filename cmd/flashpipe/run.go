package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/ingest"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/outfile"
)

// InputFlags read a batch file.
type InputFlags struct {
	File        string `arg:"" help:"Batch file: CSV (simple or rich layout) or JSON Lines." type:"existingfile"`
	Batch       string `help:"Batch id (default: the file name and a hash of its items, so the same file is the same batch)." env:"FLASHPIPE_BATCH"`
	Format      string `help:"Input format: csv or jsonl (default: from the file name)." enum:",csv,jsonl" default:""`
	SkipBadRows bool   `help:"Leave bad rows out (listing them) instead of rejecting the batch."`
}

// load parses and validates the file; a rejected batch is reported row by row and
// nothing is started or published.
func (f InputFlags) load() (*ingest.Parsed, string, error) {
	parsed, err := ingest.ParseFile(f.File, ingest.ParseOptions{Format: ingest.Format(f.Format), SkipBadRows: f.SkipBadRows})
	if err != nil {
		return nil, "", &exitError{code: 2, err: err}
	}
	for _, re := range parsed.Skipped {
		fmt.Fprintf(os.Stderr, "%s: skipped %s\n", filepath.Base(f.File), re.Error())
	}
	id := f.Batch
	if id == "" {
		id = defaultBatchID(f.File, parsed.Items)
	}
	if err := flashpipe.ValidateBatchID(id); err != nil {
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--batch: %w", err)}
	}
	return parsed, id, nil
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// defaultBatchID names a batch after its file and items: submitting the same file
// again is the same batch (no new work), a changed file is a new one.
func defaultBatchID(path string, items []flashpipe.Item) string {
	stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	stem = strings.Trim(unsafeID.ReplaceAllString(stem, "-"), "-_")
	if len(stem) > 40 {
		stem = stem[:40]
	}
	if stem == "" {
		stem = "batch"
	}
	return stem + "-" + flashpipe.HashItems(items)[:10]
}

// RunCmd runs the whole pipeline in one process.
type RunCmd struct {
	InputFlags
	Output  string `short:"o" help:"Where to write the flashcards (- for stdout; a device or FIFO is written through)." default:"cards.tsv"`
	DataDir string `help:"Where the embedded NATS server and SQLite database keep their state (reused by the next run)." default:".flashpipe" env:"FLASHPIPE_DATA_DIR"`
	JSON    bool   `help:"Print the summary as one JSON object on stdout."`
	Quiet   bool   `help:"No progress display."`
	OutputFlags
	StoreFlags
	APIFlags
	ProcessorFlags
	RateLimitFlags
	SequencerFlags
	SinkFlags
	SimFlags
	StreamFlags
	SyncFlags
}

// Run runs the batch through the embedded stack and writes the TSV.
func (r *RunCmd) Run(ctx context.Context, log *slog.Logger) error {
	parsed, id, err := r.load()
	if err != nil {
		return err
	}
	target := r.target(r.Output)
	if err := target.check(); err != nil {
		return err
	}
	c, err := r.contract()
	if err != nil {
		return err
	}
	start := time.Now()
	st, err := startStack(ctx, stackConfig{
		DataDir: r.DataDir, NATSPort: -1, Sync: r.SyncFlags, Contract: c, Store: r.StoreFlags, API: r.APIFlags,
		Sim: r.SimFlags.config(log), Processor: r.ProcessorFlags, RateLimit: r.RateLimitFlags, Processors: 1,
		Sequencer: r.SequencerFlags, Sink: r.SinkFlags, Logger: log,
	})
	if err != nil {
		return err
	}
	defer st.stop()
	fmt.Fprintf(os.Stderr, "flashpipe: batch %s, %d items from %s\n", id, len(parsed.Items), filepath.Base(r.File))
	fmt.Fprintf(os.Stderr, "flashpipe: using %s\n", apiMode(st.Sim, st.APIURL))
	fmt.Fprintf(os.Stderr, "flashpipe: state in %s (%s)\n", r.DataDir, st.StoreName)
	sum, err := runBatch(ctx, st, ingest.Batch{ID: id, Source: filepath.Base(r.File), Items: parsed.Items}, target, r.Quiet)
	if err != nil {
		return err
	}
	sum.Simulated = st.Sim != nil
	sum.Elapsed = time.Since(start).Seconds()
	if sum.Elapsed > 0 {
		sum.ItemsPerSecond = float64(sum.Items) / sum.Elapsed
	}
	return sum.print(r.JSON)
}

// runBatch submits a batch to a running stack, follows it to completion writing its
// output, and waits until the store holds it too.
func runBatch(ctx context.Context, st *stack, b ingest.Batch, output exportTarget, quiet bool) (*summary, error) {
	pub, err := ingest.NewPublisher(st.JS, st.Contract, nil)
	if err != nil {
		return nil, err
	}
	sub, err := pub.Submit(ctx, b)
	if err != nil {
		return nil, err
	}
	latest, err := pub.Manifest(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	type outcome struct {
		sum *summary
		err error
	}
	done := make(chan outcome, 1)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		sum, err := followBatch(fctx, st.JS, st.Contract, latest, output, quiet)
		done <- outcome{sum, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case err := <-st.Err():
		cancel()
		<-done
		return nil, fmt.Errorf("a service failed, the batch cannot finish: %w", err)
	}
	if o.err != nil {
		if ctx.Err() != nil {
			return nil, &exitError{code: 130, err: fmt.Errorf("interrupted; run again to resume batch %s", b.ID)}
		}
		return nil, o.err
	}
	wctx, stopWait := context.WithCancelCause(ctx)
	defer stopWait(nil)
	go func() {
		select {
		case err := <-st.Err():
			stopWait(fmt.Errorf("a service failed before the batch was stored: %w", err))
		case <-wctx.Done():
		}
	}()
	if _, err := waitStored(wctx, st.Store, b.ID, latest.Generation); err != nil {
		if cause := context.Cause(wctx); cause != nil && ctx.Err() == nil {
			return nil, cause
		}
		return nil, err
	}
	o.sum.Resubmitted = sub.Resubmitted
	return o.sum, nil
}

// followBatch shows a batch's progress until it completes and writes its results to
// output: streamed from the ordered log while the batch runs (one generation), or read
// once it is complete (retry generations replace results).
func followBatch(ctx context.Context, js jetstream.JetStream, c *contract.Contract, latest flashpipe.Manifest, output exportTarget, quiet bool) (*summary, error) {
	var usage flashpipe.Usage
	t, err := writeExport(output, latest, func(write func(flashpipe.Result) error) error {
		view := newProgress(ctx, js, c, latest.Expected(), quiet)
		defer view.finish()
		counted := func(r flashpipe.Result) error {
			usage = usage.Add(r.Usage)
			view.addUsage(r.Usage.Cost, r.Usage.CacheHits)
			return write(r)
		}
		if latest.Generation == 0 {
			_, err := batchlog.Follow(ctx, js, c, latest, view.update, counted)
			return err
		}
		if _, err := batchlog.Watch(ctx, js, c, latest, view.update); err != nil {
			return err
		}
		return batchlog.Results(ctx, js, c, latest.BatchID, counted)
	})
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", latest.BatchID, err)
	}
	sum := &summary{BatchID: latest.BatchID, Items: latest.Count, Output: output.path, Cards: t.Cards}
	sum.setUsage(usage)
	for _, f := range t.Failed {
		sum.FailedItems = append(sum.FailedItems, failedItem(f))
	}
	sum.Failed = len(sum.FailedItems)
	sum.OK = t.Items - sum.Failed
	return sum, nil
}

// waitStored waits until the store holds the batch's generation complete.
func waitStored(ctx context.Context, store flashpipe.Store, id string, gen int) (flashpipe.BatchStatus, error) {
	for {
		status, err := store.Batch(ctx, id)
		if err == nil && status.State == flashpipe.BatchComplete && status.Manifest.Generation >= gen {
			return status, nil
		}
		if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
			return status, err
		}
		select {
		case <-ctx.Done():
			return status, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// summary is what a finished batch reports.
type summary struct {
	BatchID          string   `json:"batch_id"`
	Items            int      `json:"items"`
	OK               int      `json:"ok"`
	Failed           int      `json:"failed"`
	Cards            int      `json:"cards"`
	APICalls         apiCalls `json:"api_calls"`
	CacheHits        int      `json:"cache_hits"`
	CacheMisses      int      `json:"cache_misses"`
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	CostUSD          float64  `json:"cost_usd"`
	Elapsed          float64  `json:"elapsed_seconds"`
	ItemsPerSecond   float64  `json:"items_per_second"`
	Resubmitted      bool     `json:"resubmitted"`
	// Simulated is true when the built-in simulator answered: its prices are made up.
	Simulated   bool         `json:"simulated"`
	Output      string       `json:"output,omitempty"`
	FailedItems []failedInfo `json:"failed_items"`
}

type apiCalls struct {
	Stage1 int `json:"stage1"`
	Stage2 int `json:"stage2"`
	Total  int `json:"total"`
}

type failedInfo struct {
	Position int64  `json:"position"`
	Term     string `json:"term"`
	Stage    string `json:"stage"`
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	NextStep string `json:"next_step"`
}

func failedItem(r flashpipe.Result) failedInfo {
	fi := failedInfo{Position: r.Position, Term: r.Term, Attempts: r.Attempts}
	if r.Failure != nil {
		fi.Stage, fi.Reason, fi.NextStep = r.Failure.Stage, r.Failure.Reason, r.Failure.NextStep
	}
	return fi
}

func (s *summary) setUsage(u flashpipe.Usage) {
	s.APICalls = apiCalls{Stage1: u.Stage1Calls, Stage2: u.Stage2Calls, Total: u.Stage1Calls + u.Stage2Calls}
	s.CacheHits, s.CacheMisses = u.CacheHits, u.CacheMisses
	s.PromptTokens, s.CompletionTokens, s.CostUSD = u.PromptTokens, u.CompletionTokens, u.Cost
}

func (s *summary) print(asJSON bool) error {
	if s.FailedItems == nil {
		s.FailedItems = []failedInfo{}
	}
	w := os.Stdout
	if s.Output == outfile.Stdout {
		w = os.Stderr // stdout carries the flashcards
	}
	if asJSON {
		enc := json.NewEncoder(w)
		return enc.Encode(s)
	}
	fmt.Fprintf(w, "batch %s complete: %d items, %d ok, %d failed, %d cards", s.BatchID, s.Items, s.OK, s.Failed, s.Cards)
	if s.Output != "" {
		fmt.Fprintf(w, " -> %s", s.Output)
	}
	fmt.Fprintln(w)
	if s.Resubmitted {
		fmt.Fprintln(w, "  (already submitted: nothing was published again)")
	}
	fmt.Fprintf(w, "  API calls: %d (stage 1: %d, stage 2: %d), cache hits: %d, misses: %d\n", s.APICalls.Total, s.APICalls.Stage1, s.APICalls.Stage2, s.CacheHits, s.CacheMisses)
	note := ""
	if s.Simulated {
		note = " (simulated: the built-in simulator answered, nothing was paid)"
	}
	fmt.Fprintf(w, "  tokens: %d prompt, %d completion; cost: $%.4f%s\n", s.PromptTokens, s.CompletionTokens, s.CostUSD, note)
	if s.Elapsed > 0 {
		fmt.Fprintf(w, "  elapsed: %.1fs, %.0f items/s\n", s.Elapsed, s.ItemsPerSecond)
	}
	for _, f := range s.FailedItems {
		fmt.Fprintf(w, "  failed: position %d %q at %s after %d attempts: %s (next: %s)\n", f.Position, f.Term, f.Stage, f.Attempts, f.Reason, f.NextStep)
	}
	return nil
}
