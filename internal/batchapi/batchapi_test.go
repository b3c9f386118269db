package batchapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/stages"
)

const testKey = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"

func setup(t *testing.T, provider string, bc llmsim.BatchConfig) (batchapi.Provider, *llmsim.Simulator) {
	t.Helper()
	sim, err := llmsim.New(llmsim.Config{Batch: bc, RequireKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	c, err := llm.New(llm.Config{BaseURL: url, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	p, err := batchapi.New(provider, c)
	if err != nil {
		t.Fatal(err)
	}
	return p, sim
}

func spec(key string, n int) batchapi.Spec {
	st := stages.DefaultConfig()
	s := batchapi.Spec{Key: key, Model: st.Model1}
	for i := range n {
		it := flashpipe.Item{Position: int64(i + 1), Term: fmt.Sprintf("단어%d", i), Type: "noun"}
		s.Requests = append(s.Requests, batchapi.Request{CustomID: batchapi.CustomID(key, i), Body: stages.Stage1Request(st, it)})
	}
	return s
}

func waitTerminal(t *testing.T, p batchapi.Provider, id string) batchapi.Batch {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := p.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.State.Terminal() {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s still %s", id, b.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProviders is the conformance suite both shapes pass against the simulator.
func TestProviders(t *testing.T) {
	for _, name := range []string{batchapi.ProviderOpenRouter, batchapi.ProviderOpenAI} {
		t.Run(name, func(t *testing.T) {
			t.Run("complete", func(t *testing.T) {
				p, sim := setup(t, name, llmsim.BatchConfig{Delay: 100 * time.Millisecond})
				ctx := context.Background()
				since := time.Now()
				b, err := p.Submit(ctx, spec("k1", 20))
				if err != nil {
					t.Fatal(err)
				}
				if b.State != batchapi.StateValidating || b.ID == "" {
					t.Fatalf("submitted batch %+v: want validating with an id", b)
				}
				if f, err := p.Find(ctx, "k1", since, nil); name == batchapi.ProviderOpenAI && (err != nil || f == nil || f.ID != b.ID) {
					t.Fatalf("Find while running = %+v, %v; want %s", f, err, b.ID)
				} else if name == batchapi.ProviderOpenRouter && (err == nil || !(flashpipe.ClassOf(err) == flashpipe.Transient)) {
					t.Fatalf("Find of a running inline batch without metadata = %+v, %v; want a transient 'cannot tell yet'", f, err)
				}
				end := waitTerminal(t, p, b.ID)
				if end.State != batchapi.StateCompleted || end.Total != 20 || end.Completed != 20 {
					t.Fatalf("terminal batch %+v", end)
				}
				res, err := p.Results(ctx, b.ID)
				if err != nil || len(res) != 20 {
					t.Fatalf("Results = %d, %v", len(res), err)
				}
				cost := 0.0
				for _, r := range res {
					if r.Err != nil || r.Response == nil || r.Response.Content == "" || r.Response.Usage.Cost <= 0 {
						t.Fatalf("result %s: %+v %v", r.CustomID, r.Response, r.Err)
					}
					cost += r.Response.Usage.Cost
				}
				if f, err := p.Find(ctx, "k1", since, nil); err != nil || f == nil || f.ID != b.ID {
					t.Fatalf("Find after the end = %+v, %v; want %s", f, err, b.ID)
				}
				if f, err := p.Find(ctx, "other", since, nil); err != nil || f != nil {
					t.Fatalf("Find(other) = %+v, %v; want none", f, err)
				}
				// A running batch the caller knows (its own other batch) is no candidate.
				if err := sim.SetBatch(llmsim.BatchConfig{Delay: time.Hour}); err != nil {
					t.Fatal(err)
				}
				mine, err := p.Submit(ctx, spec("k9", 1))
				if err != nil {
					t.Fatal(err)
				}
				if f, err := p.Find(ctx, "lost", since, map[string]bool{mine.ID: true}); err != nil || f != nil {
					t.Fatalf("Find past a known running batch = %+v, %v; want none", f, err)
				}
				bs := sim.BatchStats()
				if bs.Submitted != 2 || bs.DuplicateKeys != 0 || bs.Keys["k1"] != 1 {
					t.Fatalf("simulator counted %+v", bs)
				}
				if d := bs.Cost - cost; d > 1e-9 || d < -1e-9 {
					t.Fatalf("results cost %v, simulator billed %v", cost, bs.Cost)
				}
			})
			t.Run("partial failure", func(t *testing.T) {
				p, _ := setup(t, name, llmsim.BatchConfig{FailRate: 0.3})
				b, err := p.Submit(context.Background(), spec("k2", 50))
				if err != nil {
					t.Fatal(err)
				}
				waitTerminal(t, p, b.ID)
				res, err := p.Results(context.Background(), b.ID)
				if err != nil || len(res) != 50 {
					t.Fatalf("Results = %d, %v", len(res), err)
				}
				failed := 0
				for _, r := range res {
					if r.Err != nil {
						failed++
						if !(flashpipe.ClassOf(r.Err) == flashpipe.Transient) || strings.Contains(r.Err.Error(), testKey[:12]) {
							t.Fatalf("failed request's error %v: want transient, without the key", r.Err)
						}
					}
				}
				if failed == 0 || failed == 50 {
					t.Fatalf("%d of 50 failed at FailRate 0.3", failed)
				}
			})
			t.Run("expire and cancel", func(t *testing.T) {
				p, sim := setup(t, name, llmsim.BatchConfig{ExpireRate: 1})
				b, err := p.Submit(context.Background(), spec("k3", 10))
				if err != nil {
					t.Fatal(err)
				}
				if end := waitTerminal(t, p, b.ID); end.State != batchapi.StateExpired {
					t.Fatalf("state %s, want expired", end.State)
				}
				res, _ := p.Results(context.Background(), b.ID)
				if len(res) != 5 {
					t.Fatalf("expired batch has %d results, want 5 (the others unanswered)", len(res))
				}
				if err := sim.SetBatch(llmsim.BatchConfig{Delay: time.Hour}); err != nil {
					t.Fatal(err)
				}
				b, err = p.Submit(context.Background(), spec("k4", 10))
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Cancel(context.Background(), b.ID); err != nil {
					t.Fatal(err)
				}
				if end := waitTerminal(t, p, b.ID); end.State != batchapi.StateCancelled {
					t.Fatalf("state %s, want cancelled", end.State)
				}
			})
			t.Run("errors", func(t *testing.T) {
				p, _ := setup(t, name, llmsim.BatchConfig{})
				if _, err := p.Get(context.Background(), "batch_nope"); err == nil || !flashpipe.IsPermanent(err) {
					t.Fatalf("Get of an unknown batch: %v, want permanent", err)
				}
				bad := spec("k5", 2)
				bad.Requests[1].CustomID = "other-1"
				if _, err := p.Submit(context.Background(), bad); err == nil || !flashpipe.IsPermanent(err) {
					t.Fatalf("Submit with a custom_id not under the key: %v, want permanent", err)
				}
			})
		})
	}
}

func TestKeyNeverInErrors(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{RequireKey: "other"})
	if err != nil {
		t.Fatal(err)
	}
	url, _ := sim.Start("127.0.0.1:0")
	defer sim.Close()
	c, _ := llm.New(llm.Config{BaseURL: url, APIKey: testKey})
	p, _ := batchapi.New(batchapi.ProviderOpenAI, c)
	_, err = p.Submit(context.Background(), spec("k", 1))
	if err == nil || strings.Contains(err.Error(), testKey[:12]) || !flashpipe.IsPermanent(err) {
		t.Fatalf("Submit with a bad key: %v; want a permanent error without the key", err)
	}
}
