package contract_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// realisticResult returns a result with the simulator's stage 1 and stage 2 answers.
func realisticResult(tb testing.TB) *flashpipe.Result {
	tb.Helper()
	sim, err := llmsim.New(llmsim.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer sim.Close()
	client, _ := llm.New(llm.Config{BaseURL: url, APIKey: "k"})
	it := flashpipe.Item{Position: 42, Term: "사람", Type: "noun", Metadata: map[string]string{"Definition": "person", "TOPIK_Level": "1"}}
	cfg := stages.DefaultConfig()
	ctx := context.Background()
	r1, err := client.Complete(ctx, stages.Stage1Request(cfg, it))
	if err != nil {
		tb.Fatal(err)
	}
	a, err := stages.ParseStage1(r1.Content, it)
	if err != nil {
		tb.Fatal(err)
	}
	r2, err := client.Complete(ctx, stages.Stage2Request(cfg, it, a))
	if err != nil {
		tb.Fatal(err)
	}
	cards, err := stages.ParseStage2(r2.Content, it, a)
	if err != nil {
		tb.Fatal(err)
	}
	return &flashpipe.Result{BatchID: "b", Seq: 42, Item: it, Status: flashpipe.StatusOK, Analysis: a, Cards: cards,
		Attempts: 1, Usage: flashpipe.Usage{Stage1Calls: 1, Stage2Calls: 1, PromptTokens: 2000, CompletionTokens: 1000, Cost: 0.02}, ProcessedAt: time.Now()}
}

func BenchmarkResultMsg(b *testing.B) {
	c, _ := contract.New(contract.Config{})
	r := realisticResult(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ResultMsg(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	c, _ := contract.New(contract.Config{})
	r := realisticResult(b)
	m, _ := c.ResultMsg(r)
	k, _ := contract.KeysOf(m.Header)
	ev := c.ResultEventMsg(k, m.Data)
	b.SetBytes(int64(len(ev.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := contract.DecodeEvent(ev.Header, ev.Data); err != nil {
			b.Fatal(err)
		}
	}
}
