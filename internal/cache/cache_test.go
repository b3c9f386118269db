package cache_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func open(t *testing.T) *cache.Cache {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c, err := cache.New(context.Background(), js, natstest.Contract(t, js), cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func entry(stage int, model, value string) cache.Entry {
	raw, _ := json.Marshal(value)
	return cache.Entry{Stage: stage, Model: model, Value: raw, Usage: flashpipe.Usage{Stage1Calls: 1, CompletionTokens: 10}}
}

func TestDoComputesOnceThenHits(t *testing.T) {
	t.Parallel()
	c := open(t)
	ctx := context.Background()
	key := cache.Key(1, "anthropic/claude-sonnet-4.5", "abc")
	calls := 0
	compute := func() (cache.Entry, error) { calls++; return entry(1, "m", "answer"), nil }
	e, hit, err := c.Do(ctx, key, compute)
	if err != nil || hit || calls != 1 {
		t.Fatalf("first Do: hit %v, calls %d, err %v", hit, calls, err)
	}
	e2, hit, err := c.Do(ctx, key, compute)
	if err != nil || !hit || calls != 1 {
		t.Fatalf("second Do: hit %v, calls %d, err %v", hit, calls, err)
	}
	if string(e2.Value) != string(e.Value) || e2.Usage != e.Usage || e2.CreatedAt.IsZero() {
		t.Fatalf("cached entry %+v differs from %+v", e2, e)
	}
}

func TestDoSharesOneComputationInFlight(t *testing.T) {
	t.Parallel()
	c := open(t)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	hits := atomic.Int32{}
	for range 10 {
		wg.Go(func() {
			_, hit, err := c.Do(context.Background(), "s1.m.same", func() (cache.Entry, error) {
				calls.Add(1)
				<-release
				return entry(1, "m", "v"), nil
			})
			if err != nil {
				t.Error(err)
			}
			if hit {
				hits.Add(1)
			}
		})
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return calls.Load() == 1 }, "no computation started")
	// Look-ups that join the computation in flight and those that arrive after it
	// (and read the stored entry) must all be hits: one computation in all.
	close(release)
	wg.Wait()
	if calls.Load() != 1 || hits.Load() != 9 {
		t.Fatalf("%d computations and %d hits for 10 identical look-ups, want 1 and 9", calls.Load(), hits.Load())
	}
}

func TestDoDoesNotCacheFailures(t *testing.T) {
	t.Parallel()
	c := open(t)
	boom := errors.New("boom")
	if _, _, err := c.Do(context.Background(), "s1.m.fail", func() (cache.Entry, error) { return cache.Entry{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if _, found, err := c.Get(context.Background(), "s1.m.fail"); found || err != nil {
		t.Fatalf("a failure was cached (found %v, err %v)", found, err)
	}
}

func TestClearByStageAndModelAndStats(t *testing.T) {
	t.Parallel()
	c := open(t)
	ctx := context.Background()
	put := func(stage int, model, hash string) {
		t.Helper()
		if err := c.Put(ctx, cache.Key(stage, model, hash), entry(stage, model, hash)); err != nil {
			t.Fatal(err)
		}
	}
	put(1, "vendor/model-a.1", "h1")
	put(1, "vendor/model-b", "h2")
	put(2, "vendor/model-a.1", "h3")
	put(2, "vendor/model-b", "h4")
	put(2, "vendor/model-b", "h5")

	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 5 || st.ByStage["s1"] != 2 || st.ByStage["s2"] != 3 || st.ByModel[cache.ModelToken("vendor/model-b")] != 3 || st.Bytes == 0 {
		t.Fatalf("stats %+v", st)
	}
	n, err := c.Clear(ctx, 2, "vendor/model-b")
	if err != nil || n != 2 {
		t.Fatalf("clear stage 2 of model-b: %d, %v", n, err)
	}
	if n, err = c.Clear(ctx, 0, "vendor/model-a.1"); err != nil || n != 2 {
		t.Fatalf("clear model-a.1: %d, %v", n, err)
	}
	left := func(stage int, model, hash string) bool {
		_, found, err := c.Get(ctx, cache.Key(stage, model, hash))
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	if !left(1, "vendor/model-b", "h2") || left(1, "vendor/model-a.1", "h1") || left(2, "vendor/model-b", "h4") || left(2, "vendor/model-a.1", "h3") {
		t.Fatal("clear removed the wrong entries")
	}
	if n, err = c.Clear(ctx, 0, ""); err != nil || n != 1 {
		t.Fatalf("clear all: %d, %v", n, err)
	}
	if st, _ = c.Stats(ctx); st.Entries != 0 {
		t.Fatalf("%d entries after clearing all", st.Entries)
	}
}

func TestKeyTokens(t *testing.T) {
	t.Parallel()
	if got := cache.Key(2, "anthropic/claude-sonnet-4.5", "ff"); got != "s2.anthropic_claude-sonnet-4_5.ff" {
		t.Fatalf("key %q", got)
	}
	if cache.ModelToken("") != "_" {
		t.Fatal("empty model token")
	}
}
