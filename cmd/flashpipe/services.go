package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
)

// ProcessorCmd runs one processor replica.
type ProcessorCmd struct {
	NATSFlags
	APIFlags
	APIMode string `name:"api-mode" help:"How this replica sends the items of batches that do not choose (submit --api-mode): sync, or batch (provider batches: about half the price, within hours)." enum:"sync,batch" default:"sync" env:"FLASHPIPE_API_MODE"`
	ProcessorFlags
	RateLimitFlags
	MetricsFlags
	ServiceFlags
}

// Run runs the processor until interrupted, then drains its items in flight.
func (p *ProcessorCmd) Run(ctx context.Context, log *slog.Logger) error {
	if p.APIKey == "" && p.APIBaseURL == llm.DefaultBaseURL {
		return errors.New("no API key: set OPENROUTER_API_KEY (or FLASHPIPE_API_KEY), or point --api-base-url at an API that needs none, such as `flashpipe simulate-api`")
	}
	cfg, err := p.processorConfig(p.ProcessorFlags, p.RateLimitFlags)
	if err != nil {
		return err
	}
	if cfg.RateLimit.RPM < 0 {
		cfg.RateLimit.RPM = app.DefaultRateLimitRPM
	}
	cfg.Processor.Batch.Mode = p.APIMode
	nc, js, c, err := p.connectService(ctx, "flashpipe-processor", p.ServiceFlags, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, err := p.serve(ctx, log, processorChecks(nc, js, c)...)
	if err != nil {
		return err
	}
	svc, err := app.NewProcessor(ctx, app.Deps{JS: js, Contract: c, Metrics: reg, Logger: log}, cfg)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// SequencerCmd runs one sequencer replica.
type SequencerCmd struct {
	NATSFlags
	SequencerFlags
	MetricsFlags
	ServiceFlags
}

// Run runs the sequencer until interrupted, then hands its batches back.
func (s *SequencerCmd) Run(ctx context.Context, log *slog.Logger) error {
	nc, js, c, err := s.connectService(ctx, "flashpipe-sequencer", s.ServiceFlags, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, err := s.serve(ctx, log, sequencerChecks(nc, js, c)...)
	if err != nil {
		return err
	}
	svc, err := app.NewSequencer(ctx, app.Deps{JS: js, Contract: c, Metrics: reg, Logger: log}, s.config())
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// SinkCmd runs one sink replica.
type SinkCmd struct {
	NATSFlags
	StoreFlags
	SinkFlags
	MetricsFlags
	ServiceFlags
	AutoMigrate bool `help:"Apply database migrations at start-up (otherwise run flashpipe migrate first; the sink waits for it)." env:"FLASHPIPE_AUTO_MIGRATE"`
}

// Run runs the sink until interrupted; the write in progress is committed first.
func (s *SinkCmd) Run(ctx context.Context, log *slog.Logger) error {
	if s.PostgresURL == "" && s.SQLite == "" {
		return errors.New("no database: give --postgres-url (FLASHPIPE_POSTGRES_URL) or --sqlite")
	}
	cfg := s.storeConfig("")
	cfg.AutoMigrate, cfg.Wait = s.AutoMigrate, !s.FailFast
	store, name, err := app.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("sink store", "store", name)
	nc, js, c, err := s.connectService(ctx, "flashpipe-sink", s.ServiceFlags, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, err := s.serve(ctx, log, sinkChecks(nc, js, c, store)...)
	if err != nil {
		return err
	}
	svc, err := app.NewSink(ctx, app.Deps{JS: js, Contract: c, Metrics: reg, Logger: log}, store, s.config())
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// MigrateCmd applies the Postgres migrations.
type MigrateCmd struct {
	PostgresURL string `name:"postgres-url" required:"" help:"Postgres URL." env:"FLASHPIPE_POSTGRES_URL,DATABASE_URL"`
}

// Run applies the migrations.
func (m *MigrateCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := postgres.Open(ctx, m.PostgresURL, postgres.Config{AutoMigrate: true, Logger: log})
	if err != nil {
		return err
	}
	fmt.Println("migrations applied")
	return st.Close()
}

// SimulateAPICmd serves the API simulator.
type SimulateAPICmd struct {
	Addr string `help:"Address to listen on." default:"127.0.0.1:8089" env:"FLASHPIPE_SIM_ADDR"`
	SimFlags
	SimFaultFlags
}

// simConfig is the simulator's configuration: latency and rate limit (SimFlags) and
// every fault knob (SimFaultFlags).
func (s *SimulateAPICmd) simConfig(log *slog.Logger) llmsim.Config {
	cfg := s.config(log)
	s.SimFaultFlags.apply(&cfg)
	return cfg
}

// Run serves until interrupted.
func (s *SimulateAPICmd) Run(ctx context.Context, log *slog.Logger) error {
	sim, err := llmsim.New(s.simConfig(log))
	if err != nil {
		return err
	}
	url, err := sim.Start(s.Addr)
	if err != nil {
		return err
	}
	// The processors' rate limit must be the simulator's, not the real API's default.
	fmt.Printf("API simulator listening: point the processors at it with --api-base-url %s --rate-limit-rpm %d\n", url, s.SimRPM)
	if s.SimRPM == 0 {
		fmt.Println("(it has no rate limit: --rate-limit-rpm 0 lets them go as fast as it answers)")
	}
	<-ctx.Done()
	return sim.Close()
}
