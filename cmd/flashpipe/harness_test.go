package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/ingest"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/stages"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/processor"
	"github.com/flashpipe/flashpipe/sequencer"
	"github.com/flashpipe/flashpipe/sink"
)

// binary is the flashpipe binary built for the tests that run it as a child process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flashpipe-bin-*")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "flashpipe")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("build flashpipe: " + err.Error() + "\n" + string(out))
	}
	code := pgtest.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// pipeline is the four services wired by hand against an embedded NATS server, the
// API simulator and a Postgres schema of the test's own, so a test can stop and
// restart any one of them.
type pipeline struct {
	t      *testing.T
	srv    *natsx.Embedded
	js     jetstream.JetStream
	c      *contract.Contract
	sim    *llmsim.Simulator
	api    *llm.Client
	store  flashpipe.Store
	dbURL  string // the store's database (a schema of the test's own)
	cache  *cache.Cache
	pub    *ingest.Publisher
	stages stages.Config
}

func newPipeline(t *testing.T, sim llmsim.Config) *pipeline {
	t.Helper()
	return newPipelineWith(t, sim, contract.Config{})
}

// newPipelineWith is newPipeline with stream settings of the test's own.
func newPipelineWith(t *testing.T, sim llmsim.Config, streams contract.Config) *pipeline {
	t.Helper()
	p := &pipeline{t: t}
	p.srv = natstest.Server(t)
	_, p.js = natstest.Connect(t, p.srv.ClientURL())
	p.c = natstest.ContractWith(t, p.js, streams)
	var err error
	if p.sim, err = llmsim.New(sim); err != nil {
		t.Fatal(err)
	}
	url, err := p.sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.sim.Close() })
	if p.api, err = llm.New(llm.Config{BaseURL: url, APIKey: "test-key"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.dbURL = pgtest.URL(t)
	st, err := postgres.Open(ctx, p.dbURL, postgres.Config{AutoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	p.store = st
	if p.pub, err = ingest.NewPublisher(p.js, p.c, nil); err != nil {
		t.Fatal(err)
	}
	p.stages = stages.DefaultConfig()
	if p.cache, err = cache.New(ctx, p.js, p.c, cache.Config{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// service runs one service until its stop function is called (or the test ends).
func (p *pipeline) service(name string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					p.t.Errorf("%s: %v", name, err)
				}
			case <-time.After(time.Minute):
				p.t.Errorf("%s did not stop", name)
			}
		})
	}
	p.t.Cleanup(stop)
	return stop
}

func (p *pipeline) startProcessor(cfg processor.Config) func() {
	p.t.Helper()
	cfg.Stages = p.stages
	proc, err := processor.New(p.js, p.c, p.api, p.cache, cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.service("processor", proc.Run)
}

func (p *pipeline) startSequencer(cfg sequencer.Config) func() {
	p.t.Helper()
	seq, err := sequencer.New(p.js, p.c, cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.service("sequencer", seq.Run)
}

func (p *pipeline) startSink(cfg sink.Config) func() {
	p.t.Helper()
	snk, err := sink.New(p.js, p.c, p.store, cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.service("sink", snk.Run)
}

func (p *pipeline) startAll() {
	p.startProcessor(processor.Config{})
	p.startSequencer(sequencer.Config{})
	p.startSink(sink.Config{})
}

func (p *pipeline) submit(id string, items []flashpipe.Item) *ingest.Submission {
	p.t.Helper()
	sub, err := p.pub.Submit(context.Background(), ingest.Batch{ID: id, Source: "test", Items: items})
	if err != nil {
		p.t.Fatal(err)
	}
	return sub
}

// waitStored waits until the store holds the batch complete.
func (p *pipeline) waitStored(id string, within time.Duration) flashpipe.BatchStatus {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	st, err := waitStored(ctx, p.store, id, 0)
	if err != nil {
		p.t.Fatalf("batch %s not stored complete within %s: %v (status %+v)", id, within, err, st)
	}
	return st
}

// results reads the stored results of a batch.
func (p *pipeline) results(id string) []flashpipe.Result {
	p.t.Helper()
	var out []flashpipe.Result
	if err := p.store.Results(context.Background(), id, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		out = append(out, r)
		return nil
	}); err != nil {
		p.t.Fatal(err)
	}
	return out
}

// orderedKeys reads the headers of every event on a batch's ordered subject.
func (p *pipeline) orderedKeys(id string) []contract.Keys {
	p.t.Helper()
	return readOrdered(p.t, p.js, p.c, id)
}

func readOrdered(t *testing.T, js jetstream.JetStream, c *contract.Contract, id string) []contract.Keys {
	t.Helper()
	return natstest.OrderedKeys(t, js, c, id)
}

// checkOrdered asserts the ordered log of generation 0: the manifest, one result per
// item in ascending position, the completion.
func checkOrdered(t *testing.T, keys []contract.Keys, items []flashpipe.Item) {
	t.Helper()
	if len(keys) != len(items)+2 {
		t.Fatalf("ordered log has %d events, want %d", len(keys), len(items)+2)
	}
	if keys[0].Kind != flashpipe.EventManifest {
		t.Fatalf("ordered log starts with %q", keys[0].Kind)
	}
	for i, it := range items {
		k := keys[i+1]
		if k.Kind != flashpipe.EventResult || k.Seq != i+1 || k.Position != it.Position {
			t.Fatalf("ordered event %d = %+v, want the result of position %d (seq %d)", i+1, k, it.Position, i+1)
		}
	}
	if keys[len(keys)-1].Kind != flashpipe.EventComplete {
		t.Fatalf("ordered log ends with %q", keys[len(keys)-1].Kind)
	}
}

// checkStored asserts one stored row per item, each position once, processing order
// equal to the rank of position, and the cards.
func checkStored(t *testing.T, res []flashpipe.Result, items []flashpipe.Item, cardsPerItem int) {
	t.Helper()
	if len(res) != len(items) {
		t.Fatalf("%d item rows, want %d", len(res), len(items))
	}
	cards := 0
	for i, r := range res {
		if r.Seq != i+1 || r.Position != items[i].Position || r.Term != items[i].Term {
			t.Fatalf("row %d: seq %d position %d term %q, want seq %d position %d term %q",
				i, r.Seq, r.Position, r.Term, i+1, items[i].Position, items[i].Term)
		}
		cards += len(r.Cards)
	}
	if cardsPerItem > 0 && cards != cardsPerItem*len(items) {
		t.Fatalf("%d cards, want %d", cards, cardsPerItem*len(items))
	}
}

func loadItems(t *testing.T, path string) []flashpipe.Item {
	t.Helper()
	parsed, err := ingest.ParseFile(path, ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Items
}

// splitTSV splits a TSV into lines of fields.
func splitTSV(t *testing.T, data string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	out := make([][]string, len(lines))
	for i, l := range lines {
		out[i] = strings.Split(l, "\t")
	}
	return out
}
