package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/ingest"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/processor"
	"github.com/flashpipe/flashpipe/sink"
)

// DevCmd keeps the embedded stack running.
type DevCmd struct {
	DataDir  string `help:"Where the embedded NATS server and SQLite database keep their state." default:".flashpipe" env:"FLASHPIPE_DATA_DIR"`
	NATSPort int    `name:"nats-port" help:"Port of the embedded NATS server (0: a free port)." default:"0" env:"FLASHPIPE_NATS_PORT"`
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

// Run starts the stack and waits for an interrupt.
func (d *DevCmd) Run(ctx context.Context, log *slog.Logger) error {
	c, err := d.contract()
	if err != nil {
		return err
	}
	port := d.NATSPort // 0: a free port, never the 4222 of a NATS already running
	st, err := startStack(ctx, stackConfig{
		DataDir: d.DataDir, NATSPort: port, Sync: d.SyncFlags, Contract: c, Store: d.StoreFlags, API: d.APIFlags,
		Sim: d.SimFlags.config(log), Processor: d.ProcessorFlags, RateLimit: d.RateLimitFlags, Processors: 1,
		Sequencer: d.SequencerFlags, Sink: d.SinkFlags, Logger: log,
	})
	if err != nil {
		return err
	}
	defer st.stop()
	fmt.Printf("NATS:  %s\n", st.NATS.ClientURL())
	fmt.Printf("API:   %s\n", apiMode(st.Sim, st.APIURL))
	fmt.Printf("Store: %s\n", st.StoreName)
	fmt.Printf("\nSubmit with:  flashpipe submit FILE --nats-url %s --wait -o cards.tsv\n", st.NATS.ClientURL())
	fmt.Println("Stop with Ctrl-C.")
	select {
	case <-ctx.Done():
		return nil
	case err := <-st.Err():
		return err
	}
}

// SubmitCmd validates and publishes a batch.
type SubmitCmd struct {
	InputFlags
	NATSFlags
	DryRun bool `help:"Estimate API calls, tokens and cost (cached answers are free) and publish nothing. Give it the processors' model and prompt settings."`
	PriceFlags
	Models ModelFlags `embed:""`
	Wait   bool       `help:"Wait for the batch to complete, showing progress, and write the flashcards."`
	Output string     `short:"o" help:"With --wait: where to write the flashcards (- for stdout)." default:"cards.tsv"`
	Quiet  bool       `help:"No progress display."`
	JSON   bool       `help:"With --wait: print the summary as one JSON object on stdout."`
	OutputFlags
}

// Run publishes the batch, and with --wait follows it to the end.
func (s *SubmitCmd) Run(ctx context.Context, log *slog.Logger) error {
	parsed, id, err := s.load()
	if err != nil {
		return err
	}
	if s.Wait {
		if err := s.target(s.Output).check(); err != nil {
			return err
		}
	}
	start := time.Now()
	nc, js, c, err := s.connect(ctx, "flashpipe-submit", log)
	if err != nil {
		if s.DryRun {
			log.Warn("NATS unreachable: estimating without the cache", "err", err)
			return s.dryRun(ctx, nil, parsed.Items)
		}
		return err
	}
	defer nc.Close()
	if s.DryRun {
		answers, err := cache.Open(ctx, js, c, cache.Config{Logger: log})
		if errors.Is(err, cache.ErrNoCache) {
			return s.dryRun(ctx, nil, parsed.Items)
		}
		if err != nil {
			return err
		}
		return s.dryRun(ctx, answers, parsed.Items)
	}
	pub, err := ingest.NewPublisher(js, c, log)
	if err != nil {
		return err
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: id, Source: filepath.Base(s.File), Items: parsed.Items})
	if err != nil {
		return err
	}
	if sub.Resubmitted {
		fmt.Fprintf(os.Stderr, "batch %s was already submitted: %d missing items published, nothing else to do\n", id, sub.Published)
	} else {
		fmt.Fprintf(os.Stderr, "batch %s submitted: %d items\n", id, sub.Published)
	}
	if !s.Wait {
		fmt.Println(id)
		return nil
	}
	latest, err := pub.Manifest(ctx, id)
	if err != nil {
		return err
	}
	sum, err := followBatch(ctx, js, c, latest, s.target(s.Output), s.Quiet)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, err: fmt.Errorf("interrupted; the batch %s goes on: submit again with --wait to follow it", id)}
		}
		return err
	}
	sum.Resubmitted = sub.Resubmitted
	sum.Elapsed = time.Since(start).Seconds()
	sum.ItemsPerSecond = float64(sum.Items) / max(sum.Elapsed, 1e-9)
	return sum.print(s.JSON)
}

// dryRun prints the estimate of a batch; nothing is published.
func (s *SubmitCmd) dryRun(ctx context.Context, answers *cache.Cache, items []flashpipe.Item) error {
	st, err := s.Models.stagesConfig()
	if err != nil {
		return err
	}
	var lookup processor.Lookup
	if answers != nil {
		lookup = answers
	}
	est, err := processor.EstimateBatch(ctx, lookup, st, items, s.prices())
	if err != nil {
		return err
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(est)
	}
	fmt.Println("dry run, nothing published:", est)
	return nil
}

// localStore is the database flags of the user commands, defaulting to the SQLite
// file of `flashpipe run` in --data-dir.
type localStore struct {
	DataDir string `help:"Data directory of flashpipe run/dev (its SQLite database is used when no other is given)." default:".flashpipe" env:"FLASHPIPE_DATA_DIR"`
	StoreFlags
}

func (l localStore) open(ctx context.Context, log *slog.Logger) (flashpipe.Store, error) {
	if l.PostgresURL == "" && l.SQLite == "" {
		path := filepath.Join(l.DataDir, "flashpipe.db")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no database: %s does not exist; give --postgres-url, --sqlite or --data-dir", path)
		}
		l.SQLite = path
	}
	st, _, err := l.StoreFlags.open(ctx, "", false, log)
	return st, err
}

// ExportCmd writes a stored batch in one of the export formats.
type ExportCmd struct {
	Batch       string `help:"Batch id (required)."`
	Output      string `short:"o" help:"Where to write it (- for stdout; a device or FIFO is written through)." default:"cards.tsv"`
	Format      string `help:"Format: ${formats} (default: from the -o file name, else tsv; --list-formats describes them)." aliases:"output-format"`
	ListFormats bool   `help:"List the export formats and exit."`
	DeckFlags
	Partial bool `help:"Export a batch that is not complete yet (what is stored so far)."`
	localStore
}

// Run exports the batch.
func (e *ExportCmd) Run(ctx context.Context, log *slog.Logger) error {
	if e.ListFormats {
		return printFormats()
	}
	if e.Batch == "" {
		return &exitError{code: 2, err: errors.New("export: give --batch ID (flashpipe status lists the batches)")}
	}
	target := exportTarget{path: e.Output, format: e.Format, deck: e.DeckFlags}
	if err := target.check(); err != nil {
		return err
	}
	store, err := e.open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	status, err := store.Batch(ctx, e.Batch)
	if err != nil {
		return err
	}
	if status.State != flashpipe.BatchComplete && !e.Partial {
		return fmt.Errorf("batch %s is not complete (%d of %d items stored): wait, or use --partial", e.Batch, status.Done, status.Manifest.Count)
	}
	sum := &summary{BatchID: e.Batch, Items: status.Manifest.Count, OK: status.OK, Failed: status.Failed}
	sum.setUsage(status.Usage)
	if err := writeStored(ctx, store, status.Manifest, target, sum); err != nil {
		return err
	}
	if e.Output == "-" {
		return nil
	}
	return sum.print(false)
}

// StatusCmd shows batches.
type StatusCmd struct {
	ID    string `arg:"" optional:"" help:"Batch id (omit to list recent batches)."`
	Limit int    `help:"How many batches to list." default:"20"`
	JSON  bool   `help:"Print JSON."`
	localStore
}

// Run prints the status.
func (s *StatusCmd) Run(ctx context.Context, log *slog.Logger) error {
	store, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	if s.ID == "" {
		list, err := store.Batches(ctx, s.Limit)
		if err != nil {
			return err
		}
		if s.JSON {
			return json.NewEncoder(os.Stdout).Encode(list)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BATCH\tSTATE\tITEMS\tDONE\tOK\tFAILED\tCOST\tSUBMITTED")
		for _, b := range list {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t$%.4f\t%s\n", b.Manifest.BatchID, b.State, b.Manifest.Count, b.Done, b.OK, b.Failed,
				b.Usage.Cost, b.SubmittedAt.Local().Format(time.DateTime))
		}
		return tw.Flush()
	}
	b, err := store.Batch(ctx, s.ID)
	if err != nil {
		return err
	}
	var failed []failedInfo
	err = store.Results(ctx, s.ID, flashpipe.ResultFilter{Status: flashpipe.StatusFailed}, func(r flashpipe.Result) error {
		failed = append(failed, failedItem(r))
		return nil
	})
	if err != nil {
		return err
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(struct {
			flashpipe.BatchStatus
			FailedItems []failedInfo `json:"failed_items"`
		}{b, failed})
	}
	fmt.Printf("batch %s: %s, generation %d\n", s.ID, b.State, b.Manifest.Generation)
	fmt.Printf("  items: %d, done %d, ok %d, failed %d\n", b.Manifest.Count, b.Done, b.OK, b.Failed)
	fmt.Printf("  API calls: stage 1 %d, stage 2 %d; cache hits %d, misses %d; tokens %d prompt, %d completion; cost $%.4f\n",
		b.Usage.Stage1Calls, b.Usage.Stage2Calls, b.Usage.CacheHits, b.Usage.CacheMisses, b.Usage.PromptTokens, b.Usage.CompletionTokens, b.Usage.Cost)
	fmt.Printf("  submitted %s", b.SubmittedAt.Local().Format(time.DateTime))
	if b.CompletedAt != nil {
		fmt.Printf(", completed %s (%s)", b.CompletedAt.Local().Format(time.DateTime), b.CompletedAt.Sub(b.SubmittedAt).Round(time.Millisecond))
	}
	fmt.Println()
	for _, f := range failed {
		fmt.Printf("  failed: position %d %q at %s after %d attempts: %s\n    next: %s\n", f.Position, f.Term, f.Stage, f.Attempts, f.Reason, f.NextStep)
	}
	return nil
}

// generationFlags are the flags of the commands that start a new generation of a
// batch (retry, reprocess).
type generationFlags struct {
	Batch string `required:"" help:"Batch id."`
	NATSFlags
	Wait   bool   `help:"Wait for it to complete, showing progress, and write the flashcards."`
	Output string `short:"o" help:"With --wait: where to write the flashcards (- for stdout)." default:"cards.tsv"`
	Quiet  bool   `help:"No progress display."`
	JSON   bool   `help:"With --wait: print the summary as one JSON object on stdout."`
	OutputFlags
}

// start publishes a new generation with op, says what it does, and with --wait follows
// it to the end.
func (g *generationFlags) start(ctx context.Context, log *slog.Logger, name string,
	op func(*ingest.Publisher, context.Context, string) (*ingest.Submission, error), describe func(*ingest.Submission) string) error {
	if g.Wait {
		if err := g.target(g.Output).check(); err != nil {
			return err
		}
	}
	start := time.Now()
	nc, js, c, err := g.connect(ctx, "flashpipe-"+name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	pub, err := ingest.NewPublisher(js, c, log)
	if err != nil {
		return err
	}
	sub, err := op(pub, ctx, g.Batch)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "batch %s: %s\n", g.Batch, describe(sub))
	if !g.Wait {
		return nil
	}
	sum, err := followBatch(ctx, js, c, sub.Manifest, g.target(g.Output), g.Quiet)
	if err != nil {
		return err
	}
	sum.Elapsed = time.Since(start).Seconds()
	return sum.print(g.JSON)
}

// RetryCmd re-runs a batch's failed items.
type RetryCmd struct{ generationFlags }

// Run publishes the retry generation and, with --wait, follows it.
func (r *RetryCmd) Run(ctx context.Context, log *slog.Logger) error {
	return r.start(ctx, log, "retry", (*ingest.Publisher).Retry, func(sub *ingest.Submission) string {
		if sub.Resubmitted {
			return fmt.Sprintf("retry generation %d was already under way; %d missing items published", sub.Manifest.Generation, sub.Published)
		}
		return fmt.Sprintf("generation %d re-runs %d failed items", sub.Manifest.Generation, len(sub.Manifest.Seqs))
	})
}

// ReplayCmd rebuilds store rows from the ordered stream.
type ReplayCmd struct {
	Batch []string `help:"Batch id to replay (repeatable)."`
	All   bool     `help:"Replay every batch the ordered stream holds."`
	NATSFlags
	StoreFlags
}

// Run replays the batches into the store.
func (r *ReplayCmd) Run(ctx context.Context, log *slog.Logger) error {
	if len(r.Batch) == 0 && !r.All {
		return errors.New("give --batch ID (repeatable) or --all")
	}
	if r.PostgresURL == "" && r.SQLite == "" {
		return errors.New("no database: give --postgres-url or --sqlite")
	}
	store, name, err := r.open(ctx, "", true, log)
	if err != nil {
		return err
	}
	defer store.Close()
	nc, js, c, err := r.connect(ctx, "flashpipe-replay", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ids := r.Batch
	if r.All {
		if ids, err = orderedBatches(ctx, js, c); err != nil {
			return err
		}
	}
	snk, err := sink.New(js, c, store, sink.Config{Logger: log})
	if err != nil {
		return err
	}
	for _, id := range ids {
		n, err := snk.Replay(ctx, id)
		if err != nil {
			return err
		}
		fmt.Printf("batch %s: %d events replayed into %s\n", id, n, name)
	}
	return nil
}

// orderedBatches lists the batches with events in the ordered stream.
func orderedBatches(ctx context.Context, js jetstream.JetStream, c *contract.Contract) ([]string, error) {
	st, err := js.Stream(ctx, c.OrderedStream())
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.AllOrdered()))
	if err != nil {
		return nil, err
	}
	prefix := c.OrderedSubject("")
	ids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		ids = append(ids, strings.TrimPrefix(subj, prefix))
	}
	sort.Strings(ids)
	return ids, nil
}

// ReprocessCmd runs a batch again from the items stream.
type ReprocessCmd struct{ generationFlags }

// Run publishes the reprocess generation and, with --wait, follows it.
func (r *ReprocessCmd) Run(ctx context.Context, log *slog.Logger) error {
	return r.start(ctx, log, "reprocess", (*ingest.Publisher).Reprocess, func(sub *ingest.Submission) string {
		return fmt.Sprintf("generation %d runs all %d items again (cached answers are free)", sub.Manifest.Generation, sub.Manifest.Count)
	})
}
