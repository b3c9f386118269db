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
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
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

// pipeline is the whole-pipeline fixture of the application layer (apptest), with
// the short names these tests use.
type pipeline struct {
	*apptest.Pipeline
	t     *testing.T
	js    jetstream.JetStream
	c     *contract.Contract
	sim   *llmsim.Simulator
	store flashpipe.Store
	dbURL string // the store's database (a schema of the test's own)
	pub   *app.Client
}

func newPipeline(t *testing.T, sim llmsim.Config) *pipeline {
	t.Helper()
	return newPipelineWith(t, apptest.Config{Sim: sim})
}

// newPipelineWith is newPipeline with the fixture's whole configuration.
func newPipelineWith(t *testing.T, cfg apptest.Config) *pipeline {
	t.Helper()
	p := apptest.New(t, cfg)
	return &pipeline{Pipeline: p, t: t, js: p.JS, c: p.Contract, sim: p.Sim, store: p.Store, dbURL: p.PostgresURL, pub: p.Client}
}

func (p *pipeline) startProcessor(cfg processor.Config) func() {
	p.t.Helper()
	return p.StartProcessor(p.ProcessorConfig(cfg))
}

func (p *pipeline) startSequencer(cfg sequencer.Config) func() { return p.StartSequencer(cfg) }

func (p *pipeline) startSink(cfg sink.Config) func() { return p.StartSink(cfg) }

func (p *pipeline) startAll() { p.StartAll() }

func (p *pipeline) submit(id string, items []flashpipe.Item) *ingest.Submission {
	p.t.Helper()
	return p.Submit(id, items)
}

// waitStored waits until the store holds the batch complete.
func (p *pipeline) waitStored(id string, within time.Duration) flashpipe.BatchStatus {
	p.t.Helper()
	return p.WaitStored(id, 0, within)
}

// results reads the stored results of a batch.
func (p *pipeline) results(id string) []flashpipe.Result { return p.Results(id) }

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

// service runs one hand-wired part (a test that builds replicas itself) until its stop
// function is called or the test ends.
func (p *pipeline) service(name string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				p.t.Errorf("%s: %v", name, err)
			}
		})
	}
	p.t.Cleanup(stop)
	return stop
}
