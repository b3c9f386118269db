package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/processor"
	"github.com/flashpipe/flashpipe/sequencer"
	"github.com/flashpipe/flashpipe/sink"
)

// replicaID names this process in logs: host and pid.
func replicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// ProcessorCmd runs one processor replica.
type ProcessorCmd struct {
	NATSFlags
	APIFlags
	ProcessorFlags
	RateLimitFlags
	MetricsFlags
}

// Run runs the processor until interrupted.
func (p *ProcessorCmd) Run(ctx context.Context, log *slog.Logger) error {
	if p.APIKey == "" && p.APIBaseURL == llm.DefaultBaseURL {
		return errors.New("no API key: set OPENROUTER_API_KEY (or FLASHPIPE_API_KEY), or point --api-base-url at an API that needs none, such as `flashpipe simulate-api`")
	}
	nc, js, c, err := p.connect(ctx, "flashpipe-processor", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := p.client(p.APIBaseURL, log)
	if err != nil {
		return err
	}
	st, err := p.stagesConfig()
	if err != nil {
		return err
	}
	answers, err := cache.New(ctx, js, c, cache.Config{Logger: log})
	if err != nil {
		return err
	}
	reg, err := p.serve(ctx, log)
	if err != nil {
		return err
	}
	cfg := p.config(st, replicaID(), log)
	cfg.Redactor = p.redactor
	if reg != nil {
		cfg.Metrics = processor.NewMetrics(reg)
	}
	limiter, err := p.limiter(ctx, js, c, DefaultRateLimitRPM, log)
	if err != nil {
		return err
	}
	if limiter != nil {
		defer limiter.Close()
		cfg.Limiter = limiter
	}
	proc, err := processor.New(js, c, client, answers, cfg)
	if err != nil {
		return err
	}
	return proc.Run(ctx)
}

// SequencerCmd runs one sequencer replica.
type SequencerCmd struct {
	NATSFlags
	SequencerFlags
	MetricsFlags
}

// Run runs the sequencer until interrupted.
func (s *SequencerCmd) Run(ctx context.Context, log *slog.Logger) error {
	nc, js, c, err := s.connect(ctx, "flashpipe-sequencer", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, err := s.serve(ctx, log)
	if err != nil {
		return err
	}
	cfg := s.config(replicaID(), log)
	if reg != nil {
		cfg.Metrics = sequencer.NewMetrics(reg)
	}
	seq, err := sequencer.New(js, c, cfg)
	if err != nil {
		return err
	}
	return seq.Run(ctx)
}

// SinkCmd runs one sink replica.
type SinkCmd struct {
	NATSFlags
	StoreFlags
	SinkFlags
	MetricsFlags
	AutoMigrate bool `help:"Apply database migrations at start-up (otherwise run flashpipe migrate first)." env:"FLASHPIPE_AUTO_MIGRATE"`
}

// Run runs the sink until interrupted.
func (s *SinkCmd) Run(ctx context.Context, log *slog.Logger) error {
	if s.PostgresURL == "" && s.SQLite == "" {
		return errors.New("no database: give --postgres-url (FLASHPIPE_POSTGRES_URL) or --sqlite")
	}
	store, name, err := s.open(ctx, "", s.AutoMigrate, log)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("sink store", "store", name)
	nc, js, c, err := s.connect(ctx, "flashpipe-sink", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg, err := s.serve(ctx, log)
	if err != nil {
		return err
	}
	cfg := s.config(log)
	if reg != nil {
		cfg.Metrics = sink.NewMetrics(reg)
	}
	snk, err := sink.New(js, c, store, cfg)
	if err != nil {
		return err
	}
	return snk.Run(ctx)
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
}

// Run serves until interrupted.
func (s *SimulateAPICmd) Run(ctx context.Context, log *slog.Logger) error {
	sim, err := llmsim.New(s.config(log))
	if err != nil {
		return err
	}
	url, err := sim.Start(s.Addr)
	if err != nil {
		return err
	}
	fmt.Printf("API simulator listening: use --api-base-url %s\n", url)
	<-ctx.Done()
	return sim.Close()
}
