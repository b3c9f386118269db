package spend_test

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

func simClient(t *testing.T, cfg llmsim.Config) (*llmsim.Simulator, *llm.Client) {
	t.Helper()
	sim, err := llmsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	client, err := llm.New(llm.Config{BaseURL: url, APIKey: "sk-test"})
	if err != nil {
		t.Fatal(err)
	}
	return sim, client
}

// The prices come from the simulator's model list, fetched once and kept; they agree
// with the cost it reports per call, and the worst case bounds it.
func TestPricesFromTheModelListAgreeWithTheSimulatorsCost(t *testing.T) {
	t.Parallel()
	_, client := simClient(t, llmsim.Config{PricePromptPerM: 2, PriceCompletionPerM: 8, Models: []string{"m/one", stages.DefaultModel}})
	book, err := spend.NewPriceBook(client, spend.PriceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 50 {
		if p := book.Sync(ctx, "m/one"); p != (spend.Prices{PromptPerM: 2, CompletionPerM: 8}) {
			t.Fatalf("sync prices %+v", p)
		}
	}
	if b := book.Batch(ctx, "m/one"); b != (spend.Prices{PromptPerM: 1, CompletionPerM: 4}) {
		t.Fatalf("batch prices %+v, want half", b)
	}
	if n := book.Fetches(); n != 1 {
		t.Fatalf("the model list was fetched %d times, want once", n)
	}
	cfg := stages.DefaultConfig()
	cfg.Model1 = "m/one"
	req := stages.Stage1Request(cfg, flashpipe.Item{Position: 1, Term: "사과", Type: "noun"})
	resp, err := client.Complete(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	p := book.Sync(ctx, "m/one")
	if got := p.Cost(resp.Usage.PromptTokens, resp.Usage.CompletionTokens); math.Abs(got-resp.Usage.Cost) > 1e-12 {
		t.Fatalf("cost at the listed prices $%g, the simulator reported $%g", got, resp.Usage.Cost)
	}
	if w := spend.WorstCase(req, p); w < resp.Usage.Cost {
		t.Fatalf("worst case $%g below the cost $%g", w, resp.Usage.Cost)
	}
}

// An unreachable model list falls back to the fallback prices, with a warning; flags
// override what the list says.
func TestPricesFallBackAndOverride(t *testing.T) {
	t.Parallel()
	client, err := llm.New(llm.Config{BaseURL: "http://127.0.0.1:1/api/v1"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	book, err := spend.NewPriceBook(client, spend.PriceConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if p := book.Sync(context.Background(), "x"); p != (spend.Prices{PromptPerM: spend.DefaultPricePromptPerM, CompletionPerM: spend.DefaultPriceCompletionPerM}) {
		t.Fatalf("fallback %+v", p)
	}
	if !strings.Contains(logs.String(), "model list could not be fetched") {
		t.Fatalf("no warning: %s", logs.String())
	}
	_, sim := simClient(t, llmsim.Config{})
	book, _ = spend.NewPriceBook(sim, spend.PriceConfig{Override: spend.Prices{CompletionPerM: 20}, BatchRate: 0.4})
	if p := book.Batch(context.Background(), stages.DefaultModel); math.Abs(p.PromptPerM-1.2) > 1e-12 || math.Abs(p.CompletionPerM-8) > 1e-12 {
		t.Fatalf("override and batch rate: %+v", p)
	}
	if _, err := spend.NewPriceBook(nil, spend.PriceConfig{BatchRate: 1.5}); err == nil || !strings.Contains(err.Error(), "BatchRate") {
		t.Fatalf("a batch rate above 1: %v", err)
	}
}
