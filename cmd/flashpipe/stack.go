package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/processor"
	"github.com/flashpipe/flashpipe/sequencer"
	"github.com/flashpipe/flashpipe/sink"
)

// stackConfig configures the single-process stack: an embedded NATS server and every
// service in one process.
type stackConfig struct {
	// DataDir holds the JetStream store (nats/) and the SQLite database.
	DataDir string
	// NATSPort: 0 picks a free port, negative serves in-process connections only.
	NATSPort int
	// Sync configures the embedded server's fsync (see docs/durability.md).
	Sync     SyncFlags
	Contract *contract.Contract
	Store    StoreFlags
	// APIKey empty: use the built-in simulator.
	API        APIFlags
	Sim        llmsim.Config
	Processor  ProcessorFlags
	RateLimit  RateLimitFlags
	Processors int
	Sequencer  SequencerFlags
	Sink       SinkFlags
	Logger     *slog.Logger
}

// stack is a running single-process pipeline.
type stack struct {
	NATS      *natsx.Embedded
	NC        *nats.Conn
	JS        jetstream.JetStream
	Contract  *contract.Contract
	Store     flashpipe.Store
	StoreName string
	Sim       *llmsim.Simulator // nil when a real API is used
	APIURL    string

	cancel  context.CancelFunc
	closers []func() error
	wg      sync.WaitGroup
	errc    chan error
	once    sync.Once
}

// startStack starts NATS, the simulator (unless an API key is set), the store and all
// four services. Stop it with stop.
func startStack(ctx context.Context, cfg stackConfig) (_ *stack, err error) {
	log := cfg.Logger
	s := &stack{Contract: cfg.Contract, errc: make(chan error, 8)}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	s.NATS, err = natsx.StartEmbedded(natsx.EmbeddedConfig{
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Port: cfg.NATSPort, Logger: log,
		SyncInterval: cfg.Sync.NATSSyncInterval, SyncAlways: cfg.Sync.NATSSyncAlways,
	})
	if err != nil {
		return nil, err
	}
	if s.NC, err = s.NATS.ConnectInProcess("flashpipe", log); err != nil {
		return nil, err
	}
	if s.JS, err = natsx.JetStream(s.NC); err != nil {
		return nil, err
	}
	if err = s.Contract.EnsureStreams(ctx, s.JS, log); err != nil {
		return nil, err
	}
	s.Store, s.StoreName, err = cfg.Store.open(ctx, filepath.Join(cfg.DataDir, "flashpipe.db"), true, log)
	if err != nil {
		return nil, err
	}

	s.APIURL = cfg.API.APIBaseURL
	if cfg.API.APIKey == "" {
		if s.Sim, err = llmsim.New(cfg.Sim); err != nil {
			return nil, err
		}
		if s.APIURL, err = s.Sim.Start("127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	client, err := cfg.API.client(s.APIURL, log)
	if err != nil {
		return nil, err
	}
	stCfg, err := cfg.API.stagesConfig()
	if err != nil {
		return nil, err
	}

	answers, err := cache.New(ctx, s.JS, s.Contract, cache.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	auto := DefaultRateLimitRPM
	if s.Sim != nil {
		auto = cfg.Sim.RPM // the simulator's own limit (none by default)
	}
	limiter, err := cfg.RateLimit.limiter(ctx, s.JS, s.Contract, auto, log)
	if err != nil {
		return nil, err
	}
	if limiter != nil {
		s.closers = append(s.closers, limiter.Close)
	}
	var services []func(context.Context) error
	for i := range max(cfg.Processors, 1) {
		pcfg := cfg.Processor.config(stCfg, fmt.Sprintf("p%d", i+1), log)
		pcfg.Redactor = cfg.API.redactor
		if limiter != nil {
			pcfg.Limiter = limiter
		}
		p, err := processor.New(s.JS, s.Contract, client, answers, pcfg)
		if err != nil {
			return nil, err
		}
		services = append(services, p.Run)
	}
	seq, err := sequencer.New(s.JS, s.Contract, cfg.Sequencer.config("s1", log))
	if err != nil {
		return nil, err
	}
	snk, err := sink.New(s.JS, s.Contract, s.Store, cfg.Sink.config(log))
	if err != nil {
		return nil, err
	}
	services = append(services, seq.Run, snk.Run)

	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for _, run := range services {
		s.wg.Go(func() {
			if err := run(rctx); err != nil && rctx.Err() == nil {
				s.errc <- err
			}
		})
	}
	return s, nil
}

// Err reports a service that failed.
func (s *stack) Err() <-chan error { return s.errc }

// stop stops the services (each drains its in-flight work), then the store, the
// simulator and NATS. Safe to call more than once and on a partly started stack.
func (s *stack) stop() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
		}
		for _, c := range s.closers {
			_ = c()
		}
		if s.Store != nil {
			_ = s.Store.Close()
		}
		if s.Sim != nil {
			_ = s.Sim.Close()
		}
		if s.NC != nil {
			_ = s.NC.Drain()
		}
		if s.NATS != nil {
			s.NATS.Shutdown()
		}
	})
}

// apiMode describes which API the stack talks to, for the user.
func apiMode(sim *llmsim.Simulator, url string) string {
	if sim != nil {
		return "the built-in API simulator at " + url + " (no API key set: no real API calls, no cost)"
	}
	return "the API at " + url
}
