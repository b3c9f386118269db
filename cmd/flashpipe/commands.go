package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/processor"
)

// SubmitCmd validates and publishes a batch.
type SubmitCmd struct {
	InputFlags
	NATSFlags
	DryRun bool `help:"Estimate API calls, tokens and cost (cached answers are free) and publish nothing. Give it the processors' model and prompt settings."`
	PriceFlags
	Models  ModelFlags `embed:""`
	Replace bool       `help:"If the batch id is already used by other items, replace that batch (a new generation; its old rows are dropped, never mixed with the new ones) instead of refusing."`
	Wait    bool       `help:"Wait for the batch to complete, showing progress, and write the flashcards."`
	Output  string     `short:"o" help:"With --wait: where to write the flashcards (- for stdout)." default:"cards.tsv"`
	Quiet   bool       `help:"No progress display."`
	JSON    bool       `help:"With --wait: print the summary as one JSON object on stdout."`
	OutputFlags
}

// Run publishes the batch, and with --wait follows it to the end.
func (s *SubmitCmd) Run(ctx context.Context, log *slog.Logger) error {
	batch, id, err := s.load(ctx)
	if err != nil {
		return err
	}
	defer batch.Close()
	out := s.output(s.Output)
	if s.Wait {
		if err := checkOutput(out); err != nil {
			return err
		}
	}
	start := time.Now()
	nc, js, c, err := s.connect(ctx, "flashpipe-submit", log)
	if err != nil {
		if s.DryRun {
			log.Warn("NATS unreachable: estimating without the cache", "err", err)
			return s.dryRun(ctx, nil, batch)
		}
		return err
	}
	defer nc.Close()
	if s.DryRun {
		answers, err := cache.Open(ctx, js, c, cache.Config{Logger: log})
		if errors.Is(err, cache.ErrNoCache) {
			return s.dryRun(ctx, nil, batch)
		}
		if err != nil {
			return err
		}
		return s.dryRun(ctx, answers, batch)
	}
	client, err := app.NewClient(js, c, app.ClientConfig{Logger: log})
	if err != nil {
		return err
	}
	sub, err := client.Submit(ctx, ingest.Batch{ID: id, Source: s.source(), Items: batch, Replace: s.Replace, Tenant: s.Tenant, Priority: s.Priority,
		Settings: s.settings()})
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, describeSubmission(id, sub))
	if !s.Wait {
		fmt.Println(id)
		return nil
	}
	if sub.Expired {
		return nil // nothing runs: the rows are in the database
	}
	view := newProgress(sub.Manifest.Expected(), s.Quiet)
	sum, err := client.FollowTo(ctx, sub.Manifest, &out, view.update)
	view.finish()
	if err != nil {
		return interrupted(ctx, err, fmt.Sprintf("interrupted; the batch %s goes on: submit again with --wait to follow it", id))
	}
	sum.Resubmitted = sub.Resubmitted
	if sub.Resubmitted {
		sum.Republished = sub.Published
	}
	sum.Timed(time.Since(start), sub.Manifest.Expected())
	return printSummary(sum, s.JSON)
}

// describeSubmission says what a submit did.
func describeSubmission(id string, sub *ingest.Submission) string {
	switch {
	case sub.Expired:
		return fmt.Sprintf("batch %s was already submitted (%s); its messages have expired from the streams and its rows are in the database: nothing to publish (flashpipe export --batch %s)",
			id, sub.Manifest.CreatedAt.Local().Format(time.DateTime), id)
	case sub.Replaced:
		old := ""
		if sub.Previous != nil {
			old = fmt.Sprintf(" (it held %d items from %q)", sub.Previous.Count, sub.Previous.Source)
		}
		return fmt.Sprintf("batch %s replaced%s: generation %d runs %d new items; the old rows are dropped", id, old, sub.Manifest.Generation, sub.Published)
	case sub.Resubmitted && sub.Published > 0:
		return fmt.Sprintf("batch %s was already submitted; %d items an interrupted submit had left out are now published", id, sub.Published)
	case sub.Resubmitted:
		return fmt.Sprintf("batch %s was already submitted: nothing to publish", id)
	}
	return fmt.Sprintf("batch %s submitted: %d items", id, sub.Published)
}

// dryRun prints the estimate of a batch; nothing is published.
func (s *SubmitCmd) dryRun(ctx context.Context, answers *cache.Cache, items processor.Items) error {
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
	cfg := l.storeConfig("")
	if cfg.PostgresURL == "" && cfg.SQLitePath == "" {
		path := filepath.Join(l.DataDir, "flashpipe.db")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no database: %s does not exist; give --postgres-url, --sqlite or --data-dir", path)
		}
		cfg.SQLitePath = path
	}
	st, _, err := app.OpenStore(ctx, cfg, log)
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
	out := app.Output{Path: e.Output, Format: e.Format, Deck: e.Deck, SubdecksPerTab: e.SubdecksPerTab}
	if err := checkOutput(out); err != nil {
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
		return fmt.Errorf("batch %s is %s (%d of %d items stored): wait, or use --partial", e.Batch, status.State, status.Done, status.Manifest.Count)
	}
	sum := &summary{BatchID: e.Batch, Items: status.Manifest.Count, OK: status.OK, Failed: status.Failed}
	sum.SetUsage(status.Usage)
	if err := writeStored(ctx, store, status.Manifest, out, sum); err != nil {
		return err
	}
	if e.Output == "-" {
		return nil
	}
	return printSummary(sum, false)
}

// StatusCmd shows batches and, when NATS is named, the queue, the refusals and the
// services.
type StatusCmd struct {
	ID    string `arg:"" optional:"" help:"Batch id (omit to list recent batches)."`
	Limit int    `help:"How many batches to list." default:"20"`
	JSON  bool   `help:"Print JSON."`
	localStore
	NATSURL string `name:"nats-url" help:"Also show, from this NATS server, the queue (work waiting and at the processors, by tenant and batch), the refused messages and the live services (and a sink blocked by its database)." env:"FLASHPIPE_NATS_URL,NATS_URL"`
	NATSAuthFlags
	Prefix string `help:"Subject prefix." default:"flashpipe" env:"FLASHPIPE_PREFIX"`
}

// Run prints the status.
func (s *StatusCmd) Run(ctx context.Context, log *slog.Logger) error {
	store, err := s.open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	live := s.live(ctx, log)
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
		if err := tw.Flush(); err != nil {
			return err
		}
		live.print(os.Stdout)
		return nil
	}
	report, err := app.Report(ctx, store, s.ID)
	if errors.Is(err, flashpipe.ErrNotFound) && live.knows(s.ID) {
		// Submitted, not in the database yet: queued, or refused.
		fmt.Printf("batch %s: not started yet\n", s.ID)
		live.printBatch(os.Stdout, s.ID)
		return nil
	}
	if err != nil {
		return err
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(report)
	}
	b := report.BatchStatus
	fmt.Printf("batch %s: %s, generation %d\n", s.ID, b.State, b.Manifest.Generation)
	fmt.Printf("  items: %d, done %d, ok %d, failed %d\n", b.Manifest.Count, b.Done, b.OK, b.Failed)
	fmt.Printf("  API calls: stage 1 %d, stage 2 %d; cache hits %d, misses %d; tokens %d prompt, %d completion; cost $%.4f\n",
		b.Usage.Stage1Calls, b.Usage.Stage2Calls, b.Usage.CacheHits, b.Usage.CacheMisses, b.Usage.PromptTokens, b.Usage.CompletionTokens, b.Usage.Cost)
	fmt.Printf("  submitted %s", b.SubmittedAt.Local().Format(time.DateTime))
	if b.StartedAt != nil {
		fmt.Printf(", started %s", b.StartedAt.Local().Format(time.DateTime))
	}
	if b.CompletedAt != nil {
		fmt.Printf(", completed %s (%s)", b.CompletedAt.Local().Format(time.DateTime), b.CompletedAt.Sub(b.SubmittedAt).Round(time.Millisecond))
	}
	fmt.Println()
	if b.SetAside > 0 {
		fmt.Printf("  blocked: %d events the database refused are set aside (latest: %s)\n    next: fix the cause, then flashpipe deadletters replay --batch %s\n", b.SetAside, b.Problem, s.ID)
	}
	for _, f := range report.FailedItems {
		fmt.Printf("  failed: position %d %q at %s after %d attempts: %s\n    next: %s\n", f.Position, f.Term, f.Stage, f.Attempts, f.Reason, f.NextStep)
	}
	live.printBatch(os.Stdout, s.ID)
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
	op func(*app.Client, context.Context, string) (*ingest.Submission, error), describe func(*ingest.Submission) string) error {
	out := g.output(g.Output)
	if g.Wait {
		if err := checkOutput(out); err != nil {
			return err
		}
	}
	start := time.Now()
	nc, js, c, err := g.connect(ctx, "flashpipe-"+name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := app.NewClient(js, c, app.ClientConfig{Logger: log})
	if err != nil {
		return err
	}
	sub, err := op(client, ctx, g.Batch)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "batch %s: %s\n", g.Batch, describe(sub))
	if !g.Wait {
		return nil
	}
	view := newProgress(sub.Manifest.Expected(), g.Quiet)
	sum, err := client.FollowTo(ctx, sub.Manifest, &out, view.update)
	view.finish()
	if err != nil {
		return interrupted(ctx, err, fmt.Sprintf("interrupted; generation %d of %s goes on", sub.Manifest.Generation, g.Batch))
	}
	sum.Timed(time.Since(start), sub.Manifest.Expected())
	return printSummary(sum, g.JSON)
}

// RetryCmd re-runs a batch's failed items.
type RetryCmd struct{ generationFlags }

// Run publishes the retry generation and, with --wait, follows it.
func (r *RetryCmd) Run(ctx context.Context, log *slog.Logger) error {
	return r.start(ctx, log, "retry", (*app.Client).Retry, func(sub *ingest.Submission) string {
		if sub.Resubmitted {
			return fmt.Sprintf("retry generation %d was already under way; %d missing items published", sub.Manifest.Generation, sub.Published)
		}
		return fmt.Sprintf("generation %d re-runs %d failed items", sub.Manifest.Generation, len(sub.Manifest.Seqs))
	})
}

// ReprocessCmd runs a batch again from the items stream.
type ReprocessCmd struct{ generationFlags }

// Run publishes the reprocess generation and, with --wait, follows it.
func (r *ReprocessCmd) Run(ctx context.Context, log *slog.Logger) error {
	return r.start(ctx, log, "reprocess", (*app.Client).Reprocess, func(sub *ingest.Submission) string {
		return fmt.Sprintf("generation %d runs all %d items again (cached answers are free)", sub.Manifest.Generation, sub.Manifest.Count)
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
	cfg := r.storeConfig("")
	cfg.AutoMigrate = true
	store, name, err := app.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	nc, js, c, err := r.connect(ctx, "flashpipe-replay", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := app.NewClient(js, c, app.ClientConfig{Store: store, Logger: log})
	if err != nil {
		return err
	}
	ids := r.Batch
	if r.All {
		if ids, err = client.OrderedBatches(ctx); err != nil {
			return err
		}
	}
	for _, id := range ids {
		n, err := client.Replay(ctx, id)
		if err != nil {
			return err
		}
		fmt.Printf("batch %s: %d events replayed into %s\n", id, n, name)
	}
	return nil
}

// DeadLettersCmd lists or replays the events the database refused.
type DeadLettersCmd struct {
	List   DeadLettersListCmd   `cmd:"" default:"withargs" help:"List the events set aside, with their reasons."`
	Replay DeadLettersReplayCmd `cmd:"" help:"Write the events set aside again (after fixing their cause); those the database takes are removed."`
}

// DeadLettersListCmd lists dead letters.
type DeadLettersListCmd struct {
	Batch string `help:"Only this batch's."`
	JSON  bool   `help:"Print JSON."`
	localStore
}

// Run lists them.
func (d *DeadLettersListCmd) Run(ctx context.Context, log *slog.Logger) error {
	store, err := d.open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	letters, err := store.DeadLetters(ctx, d.Batch)
	if err != nil {
		return err
	}
	if d.JSON {
		if letters == nil {
			letters = []flashpipe.DeadLetter{}
		}
		return json.NewEncoder(os.Stdout).Encode(letters)
	}
	if len(letters) == 0 {
		fmt.Println("no events set aside")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tBATCH\tKIND\tSEQ\tSET ASIDE\tREASON")
	for _, l := range letters {
		seq := ""
		if l.Event.Result != nil {
			seq = fmt.Sprint(l.Event.Result.Seq)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Event.BatchID(), l.Event.Kind, seq, l.At.Local().Format(time.DateTime), l.Reason)
	}
	return tw.Flush()
}

// DeadLettersReplayCmd replays dead letters.
type DeadLettersReplayCmd struct {
	Batch string `help:"Only this batch's."`
	localStore
}

// Run replays them.
func (d *DeadLettersReplayCmd) Run(ctx context.Context, log *slog.Logger) error {
	store, err := d.open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	written, refused, err := app.ReplayDeadLetters(ctx, store, d.Batch)
	fmt.Printf("%d events written, %d still refused\n", written, refused)
	return err
}
