// Command flashpipe turns batches of vocabulary items into study flashcards through a
// pipeline of services chained by NATS JetStream. One binary, one subcommand per
// service and per user task; see `flashpipe --help` and the README.
//
// This package is the only place that reads flags and environment variables and wires
// concrete types together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// CLI is the command line.
type CLI struct {
	LogLevel  string `help:"Log level: debug, info, warn, error (default: info for the services and dev, warn for the user commands)." env:"FLASHPIPE_LOG_LEVEL" enum:",debug,info,warn,error" default:""`
	LogFormat string `help:"Log format: text or json." default:"text" env:"FLASHPIPE_LOG_FORMAT" enum:"text,json"`

	Run         RunCmd         `cmd:"" help:"Run the whole pipeline in one process on a file and write the flashcards TSV."`
	Dev         DevCmd         `cmd:"" help:"Keep the embedded stack (NATS, all services, API simulator) running for submit and services."`
	Submit      SubmitCmd      `cmd:"" help:"Validate a batch file and publish it to the pipeline."`
	Processor   ProcessorCmd   `cmd:"" help:"Run a processor replica: items through the two LLM stages."`
	Sequencer   SequencerCmd   `cmd:"" help:"Run a sequencer replica: results back into batch order."`
	Sink        SinkCmd        `cmd:"" help:"Run a sink replica: ordered results into the database."`
	API         APICmd         `cmd:"" name:"api" help:"Serve the HTTP API and the web page: submit, follow, export and retry batches over HTTP."`
	Migrate     MigrateCmd     `cmd:"" help:"Apply the database migrations."`
	Export      ExportCmd      `cmd:"" help:"Write a stored batch as flashcards (TSV, Anki package, CSV, JSON Lines) or its failed-items report."`
	Retry       RetryCmd       `cmd:"" help:"Re-run only the failed items of a complete batch (a new generation; their rows are updated in place)."`
	Reprocess   ReprocessCmd   `cmd:"" help:"Run a complete batch again from the items stream (free through the cache)."`
	Replay      ReplayCmd      `cmd:"" help:"Rebuild the database rows of batches from the ordered stream (e.g. into an empty database after a restore)."`
	Prune       PruneCmd       `cmd:"" help:"Delete old complete batches from the database (running batches are never deleted)."`
	Status      StatusCmd      `cmd:"" help:"Show a batch's progress, totals and failed items (or list recent batches)."`
	Cache       CacheCmd       `cmd:"" help:"Inspect or clear the answer cache."`
	Cap         CapCmd         `cmd:"" help:"Show or set the spend caps: a batch's (max_cost) and the overall cap per period."`
	DeadLetters DeadLettersCmd `cmd:"" name:"deadletters" help:"List, or replay once fixed, the events the database refused (set aside with their reasons)."`
	Streams     StreamsCmd     `cmd:"" help:"Show or change the streams and KV buckets (the operator's command), or print the NATS permissions of each role."`
	SimulateAPI SimulateAPICmd `cmd:"" name:"simulate-api" help:"Serve the built-in OpenAI-compatible API simulator."`
	Bench       BenchCmd       `cmd:"" help:"Measure end-to-end throughput on the embedded stack."`
	Healthcheck HealthcheckCmd `cmd:"" help:"Ask a service's health endpoint; exit 0 when it answers 200 (for container healthchecks)."`
	Version     VersionCmd     `cmd:"" help:"Print the version."`
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run() error {
	fmt.Println("flashpipe", version)
	return nil
}

// exitError carries a process exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	var cli CLI
	// Every secret the flags and a NATS context hold goes into red while the flags are
	// parsed (the AfterApply hooks), before any logger exists.
	red := secret.New()
	kctx := kong.Parse(&cli,
		kong.Bind(red),
		kong.Name("flashpipe"),
		kong.Description("Vocabulary batches in, study flashcards out: in order, nothing lost, never paying twice."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{
			"api_base_url": llm.DefaultBaseURL,
			"model":        stages.DefaultModel,
			"temperature":  strconv.FormatFloat(stages.DefaultTemperature, 'g', -1, 64),
			"max_tokens1":  strconv.Itoa(stages.DefaultMaxTokens1),
			"max_tokens2":  strconv.Itoa(stages.DefaultMaxTokens2),
			"api_timeout":  shortDuration(llm.DefaultTimeout),
			"formats":      export.Names(),
			// The services' defaults, from their packages, so the two cannot drift.
			"sequencer_window":      strconv.Itoa(sequencer.DefaultWindow),
			"sequencer_max_batches": strconv.Itoa(sequencer.DefaultMaxBatches),
			"sequencer_lease_ttl":   shortDuration(sequencer.DefaultLeaseTTL),
			"drain_timeout":         shortDuration(processor.DefaultDrainTimeout),
			"concurrent_max":        strconv.Itoa(processor.DefaultConcurrentMax),
			"retry_max_attempts":    strconv.Itoa(processor.DefaultMaxAttempts),
			"ack_wait":              shortDuration(processor.DefaultAckWait),
			"cache_claim_ttl":       shortDuration(cache.DefaultClaimTTL),
			"max_deliveries":        strconv.Itoa(processor.DefaultMaxDeliveries),
			"breaker_threshold":     strconv.Itoa(processor.DefaultBreakerThreshold),
			"breaker_timeout":       shortDuration(processor.DefaultBreakerTimeout),
			"batch_rate":            strconv.FormatFloat(spend.DefaultBatchRate, 'g', -1, 64),
			"spend_period":          shortDuration(spend.DefaultPeriod),
			"cap_delay":             shortDuration(processor.DefaultCapDelay),
			"rate_limit_buffer":     strconv.FormatFloat(ratelimit.DefaultBuffer, 'g', -1, 64),
			"item_deadline":         shortDuration(scheduler.DefaultItemDeadline),
			"orphan_grace":          shortDuration(scheduler.DefaultOrphanGrace),
			"sink_batch_size":       strconv.Itoa(sink.DefaultBatchSize),
			"sink_ack_wait":         shortDuration(sink.DefaultAckWait),
			"stream_replicas":       strconv.Itoa(contract.DefaultReplicas),
			"stream_max_age":        shortDuration(contract.DefaultMaxAge),
			"duplicate_window":      shortDuration(contract.DefaultDuplicateWindow),
			"items_max_age":         shortDuration(contract.DefaultItemsMaxAge),
			"results_max_age":       shortDuration(contract.DefaultResultsMaxAge),
		},
		simFaultVars(),
		kong.Vars(batchVars()),
	)
	level := cli.LogLevel
	if level == "" {
		level = "warn"
		switch strings.Fields(kctx.Command())[0] {
		case "processor", "sequencer", "sink", "api", "dev", "simulate-api":
			level = "info"
		}
	}
	logger := newLogger(os.Stderr, level, cli.LogFormat, red)
	if _, set := os.LookupEnv("GOGC"); !set && hostsServices(kctx.Command()) {
		// The services' live heap is small and bounded; collecting less often saves
		// CPU on the hot path at the price of a proportionally larger heap. The user
		// commands keep the default: submit's live heap is its batch index (16 bytes
		// per item), which it should not triple.
		debug.SetGCPercent(200)
	}
	// The first SIGTERM or Ctrl-C ends ctx: the services drain (see app.Service) and
	// the commands stop cleanly. Once it has, the signals get their default action
	// again, so a second one ends the process at once (nothing is lost: every part
	// acknowledges only what is durable).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(logger)
	err := kctx.Run()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintln(os.Stderr, "flashpipe:", red.Redact(err.Error()))
	os.Exit(code)
}

// newLogger returns the process's logger, writing to w; every record passes through
// red, so no call site can log a secret.
// hostsServices reports whether a command runs pipeline services.
func hostsServices(command string) bool {
	switch strings.Fields(command)[0] {
	case "processor", "sequencer", "sink", "dev", "run", "bench", "simulate-api":
		return true
	}
	return false
}

func newLogger(w io.Writer, level, format string, red *secret.Redactor) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(secret.NewHandler(h, red))
}

// shortDuration writes d as a flag default is written: 168h, 10m, 30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
