// Package apptest is the whole-pipeline test fixture: the four services wired by the
// application layer (package app) against an embedded NATS server of the test's own,
// the API simulator and a store, so that a test starts, stops and restarts any
// service, submits batches through the same client every door uses, and reads what
// was stored. Every test gets its own subject prefix and database schema.
package apptest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// APIKey is the key the fixture's processors present to the simulator.
const APIKey = "test-key"

// Config configures a Pipeline. The zero value is a Postgres store, a simulator that
// answers at once, and the default stream settings.
type Config struct {
	Sim llmsim.Config
	// Contract shapes the streams; the prefix is always the test's own.
	Contract contract.Config
	// SQLite stores rows in a SQLite file instead of a Postgres schema (Postgres needs
	// pgtest.Main in the package's TestMain).
	SQLite bool
	// URL, when set, is a NATS server (a cluster) to use instead of an embedded one.
	URL string
}

// Pipeline is a pipeline under test. Its fields are set by New.
type Pipeline struct {
	T        testing.TB
	Server   *natsx.Embedded // nil when Config.URL was given
	URL      string
	JS       jetstream.JetStream
	Contract *contract.Contract
	Sim      *llmsim.Simulator
	APIURL   string
	Store    flashpipe.Store
	// PostgresURL is the store's database (its own schema), "" with SQLite.
	PostgresURL string
	// SQLitePath is the store's database file, "" with Postgres.
	SQLitePath string
	// Client is the client side of batches, with the store.
	Client *app.Client
	// Stages are the processors' stages (the defaults).
	Stages stages.Config
}

// New starts the NATS server (unless Config.URL), the simulator and the store, and
// creates the streams. No service runs until started.
func New(t testing.TB, cfg Config) *Pipeline {
	t.Helper()
	p := &Pipeline{T: t, URL: cfg.URL, Stages: stages.DefaultConfig()}
	if p.URL == "" {
		p.Server = natstest.Server(t)
		p.URL = p.Server.ClientURL()
	}
	_, p.JS = natstest.Connect(t, p.URL)
	p.Contract = natstest.ContractWith(t, p.JS, cfg.Contract)
	var err error
	if p.Sim, err = llmsim.New(cfg.Sim); err != nil {
		t.Fatal(err)
	}
	if p.APIURL, err = p.Sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Sim.Close() })
	ctx := context.Background()
	if cfg.SQLite {
		p.SQLitePath = filepath.Join(t.TempDir(), "flashpipe.db")
		p.Store, err = sqlite.Open(ctx, sqlite.Config{Path: p.SQLitePath})
	} else {
		p.PostgresURL = pgtest.URL(t)
		p.Store, err = postgres.Open(ctx, p.PostgresURL, postgres.Config{AutoMigrate: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Store.Close() })
	if p.Client, err = app.NewClient(p.JS, p.Contract, app.ClientConfig{Store: p.Store}); err != nil {
		t.Fatal(err)
	}
	return p
}

// Deps returns what a service needs: on the pipeline's connection, or with own set on
// a connection of its own (closed when the test ends).
func (p *Pipeline) Deps(own bool) app.Deps {
	js := p.JS
	if own {
		_, js = natstest.Connect(p.T, p.URL)
	}
	return app.Deps{JS: js, Contract: p.Contract, Replica: p.T.Name()}
}

// ProcessorConfig is a processor configuration against the simulator with the
// default stages and no rate limit, around cfg.
func (p *Pipeline) ProcessorConfig(cfg processor.Config) app.ProcessorConfig {
	return app.ProcessorConfig{API: llm.Config{BaseURL: p.APIURL, APIKey: APIKey}, Stages: p.Stages, Processor: cfg}
}

// StartProcessor starts processor replicas (on a connection of their own) until the
// returned stop function is called or the test ends.
func (p *Pipeline) StartProcessor(cfg app.ProcessorConfig) (stop func()) {
	p.T.Helper()
	svc, err := app.NewProcessor(context.Background(), p.Deps(true), cfg)
	if err != nil {
		p.T.Fatal(err)
	}
	return p.Run(svc)
}

// StartSequencer starts a sequencer replica, with its scheduler replica (on a
// connection of their own).
func (p *Pipeline) StartSequencer(cfg sequencer.Config) (stop func()) {
	p.T.Helper()
	return p.StartSequencerWith(app.SequencerConfig{Sequencer: cfg})
}

// StartSequencerWith is StartSequencer with the scheduler's configuration too.
func (p *Pipeline) StartSequencerWith(cfg app.SequencerConfig) (stop func()) {
	p.T.Helper()
	svc, err := app.NewSequencer(context.Background(), p.Deps(true), cfg)
	if err != nil {
		p.T.Fatal(err)
	}
	return p.Run(svc)
}

// StartSink starts a sink replica (on a connection of its own).
func (p *Pipeline) StartSink(cfg sink.Config) (stop func()) {
	p.T.Helper()
	svc, err := app.NewSink(context.Background(), p.Deps(true), p.Store, cfg)
	if err != nil {
		p.T.Fatal(err)
	}
	return p.Run(svc)
}

// StartAll starts one replica of each service with the default configuration.
func (p *Pipeline) StartAll() {
	p.T.Helper()
	p.StartProcessor(p.ProcessorConfig(processor.Config{}))
	p.StartSequencer(sequencer.Config{})
	p.StartSink(sink.Config{})
}

// Run runs a service until the returned stop function is called (or the test ends);
// stop waits for it to drain, and the test fails if it returns an error.
func (p *Pipeline) Run(svc *app.Service) (stop func()) { return Run(p.T, svc) }

// Run runs a service until the returned stop function is called (or the test ends);
// stop waits for it to drain, and the test fails if it returns an error.
func Run(t testing.TB, svc *app.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", svc.Name, err)
				}
			case <-time.After(time.Minute):
				t.Errorf("%s did not stop", svc.Name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Submit submits a batch through the client, failing the test on error.
func (p *Pipeline) Submit(id string, items []flashpipe.Item) *ingest.Submission {
	p.T.Helper()
	sub, err := p.Client.Submit(context.Background(), ingest.Batch{ID: id, Source: "test", Items: ingest.SliceItems(items)})
	if err != nil {
		p.T.Fatal(err)
	}
	return sub
}

// WaitStored waits until the store holds the batch's generation gen (or a later one)
// complete, failing the test after within.
func (p *Pipeline) WaitStored(id string, gen int, within time.Duration) flashpipe.BatchStatus {
	p.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	st, err := p.Client.WaitStored(ctx, id, gen)
	if err != nil {
		p.T.Fatalf("batch %s generation %d not stored complete within %s: %v (status %+v)", id, gen, within, err, st)
	}
	return st
}

// Results reads the stored results of a batch, in order.
func (p *Pipeline) Results(id string) []flashpipe.Result {
	p.T.Helper()
	var out []flashpipe.Result
	if err := p.Store.Results(context.Background(), id, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		out = append(out, r)
		return nil
	}); err != nil {
		p.T.Fatal(err)
	}
	return out
}
