package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Deps are what the services of one process share.
type Deps struct {
	JS       jetstream.JetStream
	Contract *contract.Contract
	// Replica names this process's replicas in logs, results and beacons (default:
	// host and pid).
	Replica string
	// Metrics, when set, registers each service's Prometheus metrics.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

func (d Deps) withDefaults() Deps {
	d.Replica = cmp.Or(d.Replica, DefaultReplica())
	d.Logger = orDiscard(d.Logger)
	return d
}

func (d Deps) validate() error {
	if d.JS == nil || d.Contract == nil {
		return errors.New("app: Deps.JS and Deps.Contract are required")
	}
	return nil
}

// DefaultReplica names a process's replica: host and pid.
func DefaultReplica() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// Service is one running part of the pipeline: Run blocks until ctx ends, then lets
// the work in hand finish (each service's drain rule) and returns; an error means the
// service stopped on its own (its consumer was deleted, a dependency failed for
// good). Run is called at most once.
type Service struct {
	// Name is "processor", "sequencer" or "sink".
	Name string

	run    func(ctx context.Context) error
	beacon *beacon.Beacon
	close  []func() error
}

// Run runs the service and its beacon until ctx ends, then releases what the service
// opened (the rate limiter's watches).
func (s *Service) Run(ctx context.Context) error {
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { s.beacon.Run(bctx) })
	err := s.run(ctx)
	stop()
	wg.Wait()
	for _, c := range s.close {
		_ = c()
	}
	return err
}

func newBeacon(ctx context.Context, d Deps, service string) (*beacon.Beacon, error) {
	return beacon.New(ctx, d.JS, d.Contract, beacon.Config{Service: service, Replica: d.Replica, Logger: d.Logger})
}

// ProcessorConfig configures processor replicas.
type ProcessorConfig struct {
	// API is the LLM API client's configuration (base URL, key, timeouts).
	API llm.Config
	// Stages are the models, prompts and limits of the two stages.
	Stages stages.Config
	// Processor configures each replica (its Stages, Limiter, Metrics, ID and Logger
	// are set from the rest).
	Processor processor.Config
	// RateLimit is the API rate limit all replicas share; with RPM and TPM both zero
	// there is none.
	RateLimit ratelimit.Config
	// Cache configures the answer cache.
	Cache cache.Config
	// Replicas is how many replicas this process runs (default 1); they share one
	// API client, cache and limiter.
	Replicas int
	// BatchAPI names the provider's batch API shape for batch mode: "openrouter"
	// (the default), "openai", or "none" (no batch mode: batch-mode batches run in
	// sync mode). Processor.Batch.Provider, if set, is used instead.
	BatchAPI string
	// Spend configures the prices and the spend caps.
	Spend SpendSettings
}

// SpendSettings configure the prices of the API calls and the spend caps the
// processor replicas share (see internal/spend): a batch's cap comes from its
// manifest's max_cost or `flashpipe cap set`; the overall cap per period from
// PeriodCapUSD or `flashpipe cap set --period` (the command's wins).
type SpendSettings struct {
	// Prices: overrides of the model list's prices, the fallback, the batch rate.
	Prices PriceSettings
	// Ledger configures the ledger (its bucket, how long a reservation holds).
	Ledger SpendLedgerSettings
	// PeriodCapUSD, when above 0, caps what all replicas spend per Period together
	// (0: leave the period cap as it is, none unless a command set one).
	PeriodCapUSD float64
	// Period is the length of a spend period (0: spend.DefaultPeriod, UTC days).
	Period time.Duration
}

// NewProcessor returns processor replicas: the LLM client, the answer cache, the
// shared rate limiter and the replicas themselves.
func NewProcessor(ctx context.Context, d Deps, cfg ProcessorConfig) (*Service, error) {
	d = d.withDefaults()
	if err := d.validate(); err != nil {
		return nil, err
	}
	cfg.API.Logger = cmp.Or(cfg.API.Logger, d.Logger)
	client, err := llm.New(cfg.API)
	if err != nil {
		return nil, err
	}
	cfg.Cache.Logger = cmp.Or(cfg.Cache.Logger, d.Logger)
	answers, err := cache.New(ctx, d.JS, d.Contract, cfg.Cache)
	if err != nil {
		return nil, err
	}
	b, err := newBeacon(ctx, d, "processor")
	if err != nil {
		return nil, err
	}
	svc := &Service{Name: "processor", beacon: b}
	pcfg := cfg.Processor
	pcfg.Stages, pcfg.Logger = cfg.Stages, cmp.Or(pcfg.Logger, d.Logger)
	if pcfg.Batch.Provider == nil && cfg.BatchAPI != "none" {
		if pcfg.Batch.Provider, err = batchapi.New(cmp.Or(cfg.BatchAPI, batchapi.ProviderOpenRouter), client); err != nil {
			return nil, err
		}
	}
	if cfg.RateLimit.RPM > 0 || cfg.RateLimit.TPM > 0 {
		cfg.RateLimit.Logger = cmp.Or(cfg.RateLimit.Logger, d.Logger)
		limiter, err := ratelimit.New(ctx, d.JS, d.Contract, cfg.RateLimit)
		if err != nil {
			return nil, err
		}
		pcfg.Limiter = limiter
		svc.close = append(svc.close, limiter.Close)
	}
	if d.Metrics != nil {
		pcfg.Metrics = processor.NewMetrics(d.Metrics)
	}
	if cfg.Spend.Ledger.HoldTTL == 0 && cfg.API.Timeout+time.Minute > spend.DefaultHoldTTL {
		// A reservation outlives the longest call, with room to settle.
		cfg.Spend.Ledger.HoldTTL = cfg.API.Timeout + time.Minute
	}
	if pcfg.Prices, pcfg.Spend, err = newSpend(ctx, d, client, cfg.Spend); err != nil {
		return nil, err
	}
	var runs []func(context.Context) error
	n := max(cfg.Replicas, 1)
	for i := range n {
		rcfg := pcfg
		rcfg.ID = d.Replica
		if n > 1 {
			rcfg.ID = fmt.Sprintf("%s/p%d", d.Replica, i+1)
		}
		p, err := processor.New(d.JS, d.Contract, client, answers, rcfg)
		if err != nil {
			return nil, err
		}
		runs = append(runs, p.Run)
	}
	svc.run = all(runs)
	return svc, nil
}

// newSpend returns the price book and the spend ledger of a process's replicas, and
// applies the period cap of the flags.
func newSpend(ctx context.Context, d Deps, client *llm.Client, cfg SpendSettings) (*spend.PriceBook, *spend.Ledger, error) {
	cfg.Prices.Logger = cmp.Or(cfg.Prices.Logger, d.Logger)
	book, err := spend.NewPriceBook(client, cfg.Prices)
	if err != nil {
		return nil, nil, err
	}
	cfg.Ledger.Logger = cmp.Or(cfg.Ledger.Logger, d.Logger)
	cfg.Ledger.Holder = cmp.Or(cfg.Ledger.Holder, d.Replica)
	ledger, err := spend.New(ctx, d.JS, d.Contract, cfg.Ledger)
	if err != nil {
		return nil, nil, err
	}
	if cfg.PeriodCapUSD > 0 {
		if _, err := ledger.SetPeriodCap(ctx, spend.ByFlag, cfg.PeriodCapUSD, cfg.Period); err != nil {
			return nil, nil, fmt.Errorf("spend cap: %w", err)
		}
	}
	return book, ledger, nil
}

// SequencerConfig configures a sequencer replica and the scheduler it runs beside
// (one scheduler replica leads at a time; the others stand by).
type SequencerConfig struct {
	Sequencer sequencer.Config
	Scheduler scheduler.Config
}

// NewSequencer returns a sequencer replica, with its scheduler replica.
func NewSequencer(ctx context.Context, d Deps, cfg SequencerConfig) (*Service, error) {
	d = d.withDefaults()
	if err := d.validate(); err != nil {
		return nil, err
	}
	b, err := newBeacon(ctx, d, "sequencer")
	if err != nil {
		return nil, err
	}
	refusals := refusal.New(d.JS, d.Contract, "sequencer", d.Logger, d.Metrics)
	sc := cfg.Sequencer
	sc.ID, sc.Logger, sc.Refusals = cmp.Or(sc.ID, d.Replica), cmp.Or(sc.Logger, d.Logger), refusals
	dc := cfg.Scheduler
	dc.ID, dc.Logger = cmp.Or(dc.ID, d.Replica), cmp.Or(dc.Logger, d.Logger)
	// One lease bucket, one TTL: the scheduler's lease is the sequencers'.
	sc.LeaseTTL = cmp.Or(sc.LeaseTTL, sequencer.DefaultLeaseTTL)
	if dc.LeaseTTL != 0 && dc.LeaseTTL != sc.LeaseTTL {
		return nil, fmt.Errorf("app: SequencerConfig.Scheduler.LeaseTTL (%s) must be SequencerConfig.Sequencer.LeaseTTL (%s): both leases live in one bucket", dc.LeaseTTL, sc.LeaseTTL)
	}
	dc.LeaseTTL = sc.LeaseTTL
	dc.Refusals = refusal.New(d.JS, d.Contract, "scheduler", d.Logger, d.Metrics)
	if d.Metrics != nil {
		sc.Metrics = sequencer.NewMetrics(d.Metrics)
		dc.Metrics = scheduler.NewMetrics(d.Metrics)
	}
	seq, err := sequencer.New(d.JS, d.Contract, sc)
	if err != nil {
		return nil, err
	}
	sched, err := scheduler.New(d.JS, d.Contract, dc)
	if err != nil {
		return nil, err
	}
	return &Service{Name: "sequencer", run: all([]func(context.Context) error{seq.Run, sched.Run}), beacon: b}, nil
}

// NewSink returns a sink replica writing to st.
func NewSink(ctx context.Context, d Deps, st flashpipe.Store, cfg sink.Config) (*Service, error) {
	d = d.withDefaults()
	if err := d.validate(); err != nil {
		return nil, err
	}
	b, err := newBeacon(ctx, d, "sink")
	if err != nil {
		return nil, err
	}
	cfg.ID, cfg.Logger, cfg.Beacon = cmp.Or(cfg.ID, d.Replica), cmp.Or(cfg.Logger, d.Logger), b
	if d.Metrics != nil {
		cfg.Metrics = sink.NewMetrics(d.Metrics)
	}
	snk, err := sink.New(d.JS, d.Contract, st, cfg)
	if err != nil {
		return nil, err
	}
	return &Service{Name: "sink", run: snk.Run, beacon: b}, nil
}

// all runs every function until ctx ends and returns the first error; one stopping
// on its own stops the others.
func all(runs []func(context.Context) error) func(context.Context) error {
	if len(runs) == 1 {
		return runs[0]
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, len(runs))
		for _, run := range runs {
			go func() { errs <- run(ctx) }()
		}
		var first error
		for range runs {
			if err := <-errs; err != nil && first == nil {
				first = err
				cancel()
			}
		}
		return first
	}
}
