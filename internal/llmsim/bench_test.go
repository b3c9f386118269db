package llmsim_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/stages"
)

func benchSetup(b *testing.B) *llm.Client {
	b.Helper()
	sim, err := llmsim.New(llmsim.Config{})
	if err != nil {
		b.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sim.Close() })
	c, err := llm.New(llm.Config{BaseURL: url, APIKey: "sk-bench"})
	if err != nil {
		b.Fatal(err)
	}
	// Warm up: open the connections the benchmark keeps in flight.
	var wg sync.WaitGroup
	req := stages.Stage1Request(stages.DefaultConfig(), benchTerms[0])
	for i := 0; i < 160; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Complete(context.Background(), req); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	return c
}

var benchTerms = []flashpipe.Item{
	{Position: 1, Term: "내가", Type: "pronoun"},
	{Position: 2, Term: "남성", Type: "noun"},
	{Position: 3, Term: "빠르다", Type: "adjective"},
	{Position: 4, Term: "먹다", Type: "verb"},
	{Position: 5, Term: "에서", Type: "particle"},
}

// BenchmarkRoundTrip measures chat completions through the real client and the
// simulator over loopback, 128 requests in flight, alternating stage 1 and stage 2.
// It reports completions per second.
func BenchmarkRoundTrip(b *testing.B) {
	c := benchSetup(b)
	cfg := stages.DefaultConfig()
	reqs := make([]llm.Request, 0, 2*len(benchTerms))
	for _, it := range benchTerms {
		reqs = append(reqs, stages.Stage1Request(cfg, it))
		resp, err := c.Complete(context.Background(), reqs[len(reqs)-1])
		if err != nil {
			b.Fatal(err)
		}
		a, err := stages.ParseStage1(resp.Content, it)
		if err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, stages.Stage2Request(cfg, it, a))
	}
	var n atomic.Uint64
	b.SetParallelism(128 / max(1, testingProcs()))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := c.Complete(context.Background(), reqs[i%uint64(len(reqs))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRates(b, "completions", start, cpu0)
}

// BenchmarkItem measures one item end to end at the LLM edge: build, send and parse
// stage 1, then stage 2, 64 items in flight. It reports items per second.
func BenchmarkItem(b *testing.B) {
	c := benchSetup(b)
	cfg := stages.DefaultConfig()
	var n atomic.Int64
	b.SetParallelism(64 / max(1, testingProcs()))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			i := n.Add(1)
			it := benchTerms[i%int64(len(benchTerms))]
			it.Position = i
			resp, err := c.Complete(ctx, stages.Stage1Request(cfg, it))
			if err != nil {
				b.Error(err)
				return
			}
			a, err := stages.ParseStage1(resp.Content, it)
			if err != nil {
				b.Error(err)
				return
			}
			resp, err = c.Complete(ctx, stages.Stage2Request(cfg, it, a))
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := stages.ParseStage2(resp.Content, it, a); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRates(b, "items", start, cpu0)
}

// BenchmarkHandler measures the simulator's own work per answer (decode the request,
// build the answer), without the network: ServeHTTP on an in-memory request.
func BenchmarkHandler(b *testing.B) {
	sim, err := llmsim.New(llmsim.Config{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := stages.DefaultConfig()
	it := benchTerms[1]
	a, _ := stages.ParseStage1(stage1Content(b, sim, it), it)
	for _, stage := range []int{1, 2} {
		req := stages.Stage1Request(cfg, it)
		if stage == 2 {
			req = stages.Stage2Request(cfg, it, a)
		}
		body := requestBody(b, req)
		b.Run("stage"+string(rune('0'+stage)), func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			loop(b, func() {
				r := httptest.NewRequest(http.MethodPost, "/api/v1/chat/completions", bytes.NewReader(body))
				clear(w.h)
				sim.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			})
		})
	}
}
