package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// DefaultRateLimitRPM is the API rate limit against a real API when none is
// configured.
const DefaultRateLimitRPM = 600

// DefaultStopTimeout bounds how long Stack.Stop waits for the services to drain.
const DefaultStopTimeout = time.Minute

// StackConfig configures the single-process pipeline: an embedded NATS server, the
// store, the API (or the built-in simulator) and every service in one process.
type StackConfig struct {
	// DataDir holds the JetStream store (nats/) and the default SQLite database.
	DataDir string
	// NATS configures the embedded server (its StoreDir defaults to DataDir/nats; Port
	// 0 picks a free port, negative serves in-process connections only).
	NATS natsx.EmbeddedConfig
	// Contract shapes the streams.
	Contract contract.Config
	// Store is the database (default: SQLite at DataDir/flashpipe.db, migrated).
	Store StoreConfig
	// Processor configures the processors. An empty API key uses the built-in
	// simulator, configured by Sim; a negative RateLimit.RPM means "the default": the
	// simulator's own limit, or DefaultRateLimitRPM against a real API.
	Processor ProcessorConfig
	Sim       llmsim.Config
	Sequencer SequencerConfig
	Sink      sink.Config
	// NATSOnly starts the NATS server (with the streams) and nothing else: no store,
	// no simulator, no services, for services run as processes of their own.
	NATSOnly bool
	// Hold builds the services without starting them: batches submitted meanwhile
	// wait in the streams until Stack.Start, as they would for services started
	// later (e.g. to time a pipeline from batches queued first).
	Hold   bool
	Logger *slog.Logger
}

// Stack is a running single-process pipeline. Its fields are set once it started.
type Stack struct {
	NATS      *natsx.Embedded
	NC        *nats.Conn
	JS        jetstream.JetStream
	Contract  *contract.Contract
	Store     flashpipe.Store
	StoreName string
	// Sim is the built-in API simulator, nil when a real API is used; APIURL is the
	// API's base URL either way.
	Sim    *llmsim.Simulator
	APIURL string
	// Client is the client side of batches, with the store.
	Client *Client

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errc    chan error
	once    sync.Once
	start   func()
	started sync.Once
}

// StartStack starts NATS, the store, the simulator (without an API key) and the
// services. Stop stops them.
func StartStack(ctx context.Context, cfg StackConfig) (_ *Stack, err error) {
	log := orDiscard(cfg.Logger)
	s := &Stack{errc: make(chan error, 8)}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.Contract, err = contract.New(cfg.Contract); err != nil {
		return nil, err
	}
	ncfg := cfg.NATS
	ncfg.StoreDir = cmp.Or(ncfg.StoreDir, filepath.Join(cfg.DataDir, "nats"))
	ncfg.Logger = cmp.Or(ncfg.Logger, log)
	if s.NATS, err = natsx.StartEmbedded(ncfg); err != nil {
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
	if cfg.NATSOnly {
		return s, nil
	}
	store := cfg.Store
	if store.PostgresURL == "" {
		store.SQLitePath = cmp.Or(store.SQLitePath, filepath.Join(cfg.DataDir, "flashpipe.db"))
	}
	store.AutoMigrate = true
	if s.Store, s.StoreName, err = OpenStore(ctx, store, log); err != nil {
		return nil, err
	}

	pcfg := cfg.Processor
	s.APIURL = pcfg.API.BaseURL
	auto := DefaultRateLimitRPM
	if pcfg.API.APIKey == "" {
		if s.Sim, err = llmsim.New(cfg.Sim); err != nil {
			return nil, err
		}
		if s.APIURL, err = s.Sim.Start("127.0.0.1:0"); err != nil {
			return nil, err
		}
		pcfg.API.BaseURL = s.APIURL
		auto = cfg.Sim.RPM // the simulator's own limit (none by default)
	}
	if pcfg.RateLimit.RPM < 0 {
		pcfg.RateLimit.RPM = auto
	}
	deps := Deps{JS: s.JS, Contract: s.Contract, Replica: "local", Logger: log}
	proc, err := NewProcessor(ctx, deps, pcfg)
	if err != nil {
		return nil, err
	}
	seq, err := NewSequencer(ctx, deps, cfg.Sequencer)
	if err != nil {
		return nil, err
	}
	snk, err := NewSink(ctx, deps, s.Store, cfg.Sink)
	if err != nil {
		return nil, err
	}
	if s.Client, err = NewClient(s.JS, s.Contract, ClientConfig{Store: s.Store, Logger: log}); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.start = func() {
		for _, svc := range []*Service{proc, seq, snk} {
			s.wg.Go(func() {
				if err := svc.Run(rctx); err != nil && rctx.Err() == nil {
					s.errc <- fmt.Errorf("%s: %w", svc.Name, err)
				}
			})
		}
	}
	if !cfg.Hold {
		s.Start()
	}
	return s, nil
}

// Start starts the services of a stack built with StackConfig.Hold (once; a stack
// started already, or one with no services, is left as it is).
func (s *Stack) Start() {
	if s.start != nil {
		s.started.Do(s.start)
	}
}

// Err reports a service that stopped on its own.
func (s *Stack) Err() <-chan error { return s.errc }

// Stop stops the services (each drains its in-flight work, for up to
// DefaultStopTimeout), then the store, the simulator and NATS. Safe to call more than
// once and on a partly started stack.
func (s *Stack) Stop() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(DefaultStopTimeout):
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

// APIMode describes, for the user, which API the stack talks to.
func (s *Stack) APIMode() string {
	if s.APIURL == "" {
		return "none (no services run here)"
	}
	if s.Sim != nil {
		return "the built-in API simulator at " + s.APIURL + " (no API key set: no real API calls, no cost)"
	}
	return "the API at " + s.APIURL
}

// RunBatch submits a batch to the stack, follows it to completion (see Follow) and
// waits until the store holds it too. A service that stops on its own ends the wait
// with its error.
func (s *Stack) RunBatch(ctx context.Context, b BatchRun) (*Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-s.errc:
			cancel(fmt.Errorf("a service failed, the batch cannot finish: %w", err))
		case <-ctx.Done():
		}
	}()
	sum, err := s.Client.Run(ctx, b)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return nil, cause
	}
	return sum, err
}
