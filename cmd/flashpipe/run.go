package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/outfile"
)

// summary is what a finished batch reports (app.Summary).
type summary = app.Summary

// InputFlags read a batch file.
type InputFlags struct {
	File        string `arg:"" help:"Batch file: CSV (simple or rich layout) or JSON Lines; - reads standard input." type:"existingfile"`
	Batch       string `help:"Batch id (default: the file name and a hash of its items, so the same file is the same batch; stdin-HASH for standard input)." env:"FLASHPIPE_BATCH"`
	Format      string `help:"Input format: csv or jsonl (default: from the file name, else sniffed from the content, as for standard input)." enum:",csv,jsonl" default:""`
	SkipBadRows bool   `help:"Leave bad rows out (listing them) instead of rejecting the batch."`
	Tenant      string `help:"Who the batch is for (an upstream system, a team, a user): the processors share their capacity between tenants first, then between a tenant's batches (default: the default tenant)." env:"FLASHPIPE_TENANT"`
	Priority    int    `help:"The batch's priority among its tenant's batches: higher is served first (-1000 to 1000)." default:"0"`
	APIMode     string `name:"api-mode" help:"How the processors send this batch to the LLM API: sync (at once) or batch (gathered into provider batches: about half the price, within hours); empty: the processors' own --api-mode." env:"FLASHPIPE_BATCH_API_MODE"`
	MaxCost     string `help:"Spend cap of the batch in USD (its manifest's max_cost): at the cap the batch pauses, its items held and nothing more paid, until the cap is raised (flashpipe cap set). Empty: no cap." env:"FLASHPIPE_MAX_COST"`
}

// settings are the batch's manifest settings the flags choose (nil: none).
func (f InputFlags) settings() map[string]string {
	var s map[string]string
	set := func(k, v string) {
		if v != "" {
			if s == nil {
				s = map[string]string{}
			}
			s[k] = v
		}
	}
	set(flashpipe.SettingAPIMode, f.APIMode)
	set(flashpipe.SettingMaxCost, f.MaxCost)
	return s
}

// source names the input in messages and default batch ids.
func (f InputFlags) source() string {
	if f.File == "-" {
		return "stdin"
	}
	return filepath.Base(f.File)
}

// load validates the batch in one pass and returns it open (the caller closes it):
// its items stay in the file, or for "-" in a temporary copy of standard input, and
// are read again when published. A rejected batch is reported row by row and nothing
// is started or published.
func (f InputFlags) load(ctx context.Context) (*ingest.File, string, error) {
	opts := ingest.ParseOptions{Format: ingest.Format(f.Format), SkipBadRows: f.SkipBadRows}
	var batch *ingest.File
	var err error
	if f.File == "-" {
		opts.Source = f.source()
		batch, err = ingest.Spool(os.Stdin, opts)
	} else {
		batch, err = ingest.OpenFile(f.File, opts)
	}
	if err != nil {
		return nil, "", &exitError{code: 2, err: err}
	}
	for _, re := range batch.Skipped {
		fmt.Fprintf(os.Stderr, "%s: skipped %s\n", f.source(), re.Error())
	}
	id := f.Batch
	if id == "" {
		hash, err := batch.Hash(ctx)
		if err != nil {
			batch.Close()
			return nil, "", err
		}
		id = app.DefaultBatchID(f.source(), hash)
	}
	if err := flashpipe.ValidateBatchID(id); err != nil {
		batch.Close()
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--batch: %w", err)}
	}
	if err := flashpipe.ValidateTenant(f.Tenant); err != nil {
		batch.Close()
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--tenant: %w", err)}
	}
	if f.Priority < -flashpipe.MaxPriority || f.Priority > flashpipe.MaxPriority {
		batch.Close()
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--priority %d: want %d to %d", f.Priority, -flashpipe.MaxPriority, flashpipe.MaxPriority)}
	}
	if err := flashpipe.ValidateAPIMode(f.APIMode); err != nil {
		batch.Close()
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--api-mode: %w", err)}
	}
	if err := flashpipe.ValidateSettings(f.settings()); err != nil {
		batch.Close()
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--max-cost: %w", err)}
	}
	return batch, id, nil
}

// RunCmd runs the whole pipeline in one process.
type RunCmd struct {
	InputFlags
	Output  string `short:"o" help:"Where to write the flashcards (- for stdout; a device or FIFO is written through)." default:"cards.tsv"`
	DataDir string `help:"Where the embedded NATS server and SQLite database keep their state (reused by the next run)." default:".flashpipe" env:"FLASHPIPE_DATA_DIR"`
	JSON    bool   `help:"Print the summary as one JSON object on stdout."`
	Quiet   bool   `help:"No progress display."`
	Replace bool   `help:"If the batch id is already used by other items, replace that batch (its old rows are dropped) instead of refusing."`
	APIAddr string `name:"api-addr" help:"Also serve the HTTP API and the web page here while the batch runs (empty: not)." env:"FLASHPIPE_API_ADDR"`
	HTTPAPIFlags
	OutputFlags
	StackFlags
}

// StackFlags configure the single-process stack of run and dev.
type StackFlags struct {
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

// stackConfig maps the flags to app's stack configuration.
func (f StackFlags) stackConfig(dataDir string, natsPort int, log *slog.Logger) (app.StackConfig, error) {
	pc, err := f.processorConfig(f.ProcessorFlags, f.RateLimitFlags)
	if err != nil {
		return app.StackConfig{}, err
	}
	return app.StackConfig{
		DataDir: dataDir, NATS: f.embedded(natsPort), Contract: f.contractConfig(), Store: f.storeConfig(""),
		Processor: pc, Sim: f.SimFlags.config(log), Sequencer: f.SequencerFlags.config(), Sink: f.SinkFlags.config(),
		Logger: log,
	}, nil
}

// Run runs the batch through the embedded stack and writes the flashcards.
func (r *RunCmd) Run(ctx context.Context, log *slog.Logger) error {
	batch, id, err := r.load(ctx)
	if err != nil {
		return err
	}
	defer batch.Close()
	out := r.output(r.Output)
	if err := checkOutput(out); err != nil {
		return err
	}
	cfg, err := r.stackConfig(r.DataDir, -1, log)
	if err != nil {
		return err
	}
	start := time.Now()
	st, err := app.StartStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Stop()
	fmt.Fprintf(os.Stderr, "flashpipe: batch %s, %d items from %s\n", id, batch.Len(), r.source())
	fmt.Fprintf(os.Stderr, "flashpipe: using %s\n", st.APIMode())
	fmt.Fprintf(os.Stderr, "flashpipe: state in %s (%s)\n", r.DataDir, st.StoreName)
	if r.APIAddr != "" {
		srv, err := r.serveAPI(st.Client, r.APIAddr, os.Stderr, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	view := newProgress(batch.Len(), r.Quiet)
	sum, err := st.RunBatch(ctx, app.BatchRun{
		Batch: ingest.Batch{ID: id, Source: r.source(), Items: batch, Replace: r.Replace, Tenant: r.Tenant, Priority: r.Priority,
			Settings: r.settings()},
		Output: &out, OnProgress: view.update,
	})
	view.finish()
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, err: fmt.Errorf("interrupted; run again to resume batch %s", id)}
		}
		return err
	}
	sum.Simulated = st.Sim != nil
	sum.Timed(time.Since(start), sum.Items)
	return printSummary(sum, r.JSON)
}

// DevCmd keeps the embedded stack running.
type DevCmd struct {
	DataDir  string `help:"Where the embedded NATS server and SQLite database keep their state." default:".flashpipe" env:"FLASHPIPE_DATA_DIR"`
	NATSPort int    `name:"nats-port" help:"Port of the embedded NATS server (0: a free port)." default:"0" env:"FLASHPIPE_NATS_PORT"`
	NATSOnly bool   `name:"nats-only" help:"Run only the NATS server (with the streams): no services, no simulator, no database, for services started as processes of their own."`
	APIAddr  string `name:"api-addr" help:"Address of the HTTP API and the web page (port 0: a free port; empty: none; a non-loopback one needs tokens; not with --nats-only)." default:"127.0.0.1:8080" env:"FLASHPIPE_API_ADDR"`
	HTTPAPIFlags
	StackFlags
}

// Run starts the stack and waits for an interrupt.
func (d *DevCmd) Run(ctx context.Context, log *slog.Logger) error {
	cfg, err := d.stackConfig(d.DataDir, d.NATSPort, log) // port 0: never the 4222 of a NATS already running
	if err != nil {
		return err
	}
	cfg.NATSOnly = d.NATSOnly
	st, err := app.StartStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Stop()
	if d.NATSOnly {
		fmt.Printf("NATS:  %s (JetStream, streams created; no services run here)\n", st.NATS.ClientURL())
		fmt.Printf("\nStart the services with --nats-url %s (or FLASHPIPE_NATS_URL).\nStop with Ctrl-C.\n", st.NATS.ClientURL())
		select {
		case <-ctx.Done():
			return nil
		case err := <-st.Err():
			return err
		}
	}
	fmt.Printf("NATS:  %s\n", st.NATS.ClientURL())
	fmt.Printf("API:   %s\n", st.APIMode())
	fmt.Printf("Store: %s\n", st.StoreName)
	if d.APIAddr != "" {
		srv, err := d.serveAPI(st.Client, d.APIAddr, os.Stdout, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	fmt.Printf("\nSubmit with:  flashpipe submit FILE --nats-url %s --wait -o cards.tsv\n", st.NATS.ClientURL())
	fmt.Println("Stop with Ctrl-C.")
	select {
	case <-ctx.Done():
		return nil
	case err := <-st.Err():
		return err
	}
}

// printSummary prints a finished batch's summary on stdout (stderr when the
// flashcards went to stdout), as text or one JSON object.
func printSummary(s *summary, asJSON bool) error {
	if s.FailedItems == nil {
		s.FailedItems = []app.FailedItem{}
	}
	var w io.Writer = os.Stdout
	if s.Output == outfile.Stdout {
		w = os.Stderr // stdout carries the flashcards
	}
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	fmt.Fprintf(w, "batch %s complete: %d items, %d ok, %d failed, %d cards", s.BatchID, s.Items, s.OK, s.Failed, s.Cards)
	if s.Output != "" {
		fmt.Fprintf(w, " -> %s", s.Output)
	}
	fmt.Fprintln(w)
	switch {
	case s.Resubmitted && s.Republished > 0:
		fmt.Fprintf(w, "  (already submitted; %d items an interrupted submit had left out were published)\n", s.Republished)
	case s.Resubmitted:
		fmt.Fprintln(w, "  (already submitted: nothing was published again)")
	}
	fmt.Fprintf(w, "  API calls: %d (stage 1: %d, stage 2: %d), cache hits: %d, misses: %d\n", s.APICalls.Total, s.APICalls.Stage1, s.APICalls.Stage2, s.CacheHits, s.CacheMisses)
	note := ""
	if s.Simulated {
		note = " (simulated: the built-in simulator answered, nothing was paid)"
	}
	fmt.Fprintf(w, "  tokens: %d prompt, %d completion; cost: $%.4f%s\n", s.PromptTokens, s.CompletionTokens, s.CostUSD, note)
	if s.Elapsed > 0 {
		fmt.Fprintf(w, "  elapsed: %.1fs, %s items/s\n", s.Elapsed, rate(s.ItemsPerSecond))
	}
	for _, f := range s.FailedItems {
		fmt.Fprintf(w, "  failed: position %d %q at %s after %d attempts: %s (next: %s)\n", f.Position, f.Term, f.Stage, f.Attempts, f.Reason, f.NextStep)
	}
	return nil
}

// rate formats items per second with the digits a small rate needs (0.15, not 0).
func rate(perSecond float64) string {
	switch {
	case perSecond >= 100:
		return fmt.Sprintf("%.0f", perSecond)
	case perSecond >= 1:
		return fmt.Sprintf("%.1f", perSecond)
	}
	return fmt.Sprintf("%.2f", perSecond)
}

// interrupted turns an error after ctx was cancelled into the exit code 130.
func interrupted(ctx context.Context, err error, msg string) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return &exitError{code: 130, err: errors.New(msg)}
	}
	return err
}
