//go:build scale

// The scale tests run long and print the measurements docs/capacity.md quotes:
//
//	go test -tags scale -run Scale -v -timeout 60m ./cmd/flashpipe/
//
// FLASHPIPE_SCALE_BATCHES and FLASHPIPE_SCALE_BATCH_SIZE size the long run (default 500
// batches of 100 items), FLASHPIPE_SCALE_SUBJECTS the subject index measurement
// (default 1,000,000).

package main

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

// 100 processor replicas, each with a NATS connection, a rate limiter and a cache
// client of its own, share one limit against an API enforcing it, on ten batches of the
// same 1,000 words: the API never answers 429, and each distinct answer is paid once
// although up to ten replicas ask for it at the same moment.
func TestScaleHundredProcessors(t *testing.T) {
	const (
		replicas = 100
		rpm      = 6000 // 100 requests per second
		batches  = 10
		words    = 1000
	)
	p := newPipeline(t, llmsim.Config{RPM: rpm})
	ctx := context.Background()
	api, err := llm.New(llm.Config{BaseURL: p.APIURL, APIKey: apptest.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	var limiters []*ratelimit.Limiter
	for i := range replicas {
		_, js := natstest.Connect(t, p.URL)
		l, err := ratelimit.New(ctx, js, p.c, ratelimit.Config{RPM: rpm, Buffer: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		limiters = append(limiters, l)
		ch, err := cache.New(ctx, js, p.c, cache.Config{})
		if err != nil {
			t.Fatal(err)
		}
		proc, err := processor.New(js, p.c, api, ch, processor.Config{
			Limiter: l, Stages: p.Stages, ConcurrentMax: 200, Workers: 4, ID: fmt.Sprintf("p%d", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		p.service(fmt.Sprintf("processor %d", i), proc.Run)
	}
	p.startSequencer(sequencer.Config{})
	p.startSink(sink.Config{})

	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:words]
	start := time.Now()
	for b := range batches {
		p.submit(fmt.Sprintf("same-%d", b), items)
	}
	for b := range batches {
		if st := p.waitStored(fmt.Sprintf("same-%d", b), 10*time.Minute); st.OK != words {
			t.Fatalf("batch %d: %+v", b, st)
		}
	}
	elapsed := time.Since(start)
	s := p.sim.Stats()
	var conflicts, leases int64
	for _, l := range limiters {
		st := l.Stats()
		conflicts += st.Conflicts
		leases += st.Leases
	}
	t.Logf("%d replicas, %d items (%d distinct words) in %s: %d API calls, %d rate-limited; %.0f calls/min against %d RPM; %d leases, %d conflicts (%.1f/s)",
		replicas, batches*words, words, elapsed.Round(time.Millisecond), s.Requests, s.RateLimited,
		float64(s.Requests)/elapsed.Minutes(), rpm, leases, conflicts, float64(conflicts)/elapsed.Seconds())
	if s.RateLimited != 0 {
		t.Errorf("the API answered %d 429s: the replicas exceeded the shared limit", s.RateLimited)
	}
	if s.Requests != 2*words {
		t.Errorf("%d API calls for %d distinct words, want %d: identical look-ups paid more than once", s.Requests, words, 2*words)
	}
}

// sample is one measurement of the long run.
type sample struct {
	at                 time.Duration
	stored             int
	heapMB, rssMB      float64
	goroutines         int
	streams            map[string]streamSize
	pgItems, pgCards   int64
	pgBatches, pgTotal int64
}

type streamSize struct {
	msgs, subjects uint64
	bytes          uint64 // logical, as JetStream counts them
	disk           int64  // on disk, compressed blocks and indexes included
}

func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dirSize sums the sizes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func measureStreams(js jetstream.JetStream, c *contract.Contract, srv *natsx.Embedded) (map[string]streamSize, error) {
	ctx := context.Background()
	out := map[string]streamSize{}
	for _, name := range []string{c.BatchesStream(), c.ItemsStream(), c.ResultsStream(), c.OrderedStream()} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, err
		}
		out[name] = streamSize{msgs: info.State.Msgs, subjects: info.State.NumSubjects, bytes: info.State.Bytes,
			disk: dirSize(filepath.Join(srv.Server().StoreDir(), "$G", "streams", name))}
	}
	return out, nil
}

// A long run of many batches of distinct words through 4 processors, a sequencer and a
// sink into Postgres, sampling the process's memory, the streams' sizes and the
// database's tables as it goes: what a day of ten million items needs is extrapolated
// from the per-item figures it prints (docs/capacity.md).
func TestScaleLongRun(t *testing.T) {
	batches := envInt(t, "FLASHPIPE_SCALE_BATCHES", 500)
	size := envInt(t, "FLASHPIPE_SCALE_BATCH_SIZE", 100)
	compression := os.Getenv("FLASHPIPE_SCALE_COMPRESSION") // "" (s2) or "none"
	p := newPipelineWith(t, apptest.Config{Contract: contract.Config{Compression: compression}})
	for range 4 {
		p.startProcessor(processor.Config{ConcurrentMax: 100, Workers: 25})
	}
	p.startSequencer(sequencer.Config{})
	p.startSink(sink.Config{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	vocab := loadItems(t, "../../examples/vocabulary_1000.csv")
	batchItems := func(b int) []flashpipe.Item {
		its := make([]flashpipe.Item, size)
		for i := range its {
			w := vocab[(b*size+i)%len(vocab)]
			its[i] = flashpipe.Item{Position: int64(i + 1), Term: fmt.Sprintf("%s%d", w.Term, b*size+i), Type: w.Type}
		}
		return its
	}

	var mu sync.Mutex
	stored := 0
	start := time.Now()
	measure := func() (sample, error) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := sample{at: time.Since(start), heapMB: float64(ms.HeapInuse) / 1e6, rssMB: float64(rssBytes()) / 1e6,
			goroutines: runtime.NumGoroutine()}
		var err error
		if s.streams, err = measureStreams(p.js, p.c, p.Server); err != nil {
			return s, err
		}
		mu.Lock()
		s.stored = stored
		mu.Unlock()
		err = conn.QueryRow(ctx, `SELECT pg_total_relation_size('batches'), pg_total_relation_size('items'),
			pg_total_relation_size('flashcards')`).Scan(&s.pgBatches, &s.pgItems, &s.pgCards)
		s.pgTotal = s.pgBatches + s.pgItems + s.pgCards
		return s, err
	}
	var samples []sample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				s, err := measure()
				if err != nil {
					t.Errorf("sample: %v", err)
					return
				}
				samples = append(samples, s)
			}
		}
	}()

	// Submit in waves of 20 batches in flight, as upstream systems would.
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for b := range batches {
		sem <- struct{}{}
		p.submit(fmt.Sprintf("long-%04d", b), batchItems(b))
		wg.Go(func() {
			defer func() { <-sem }()
			p.waitStored(fmt.Sprintf("long-%04d", b), 30*time.Minute)
			mu.Lock()
			stored += size
			mu.Unlock()
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	elapsed := time.Since(start)
	final, err := measure()
	if err != nil {
		t.Fatal(err)
	}
	samples = append(samples, final)

	n := batches * size
	t.Logf("%d batches of %d items (%d items) in %s: %.0f items/s (compression %q)", batches, size, n,
		elapsed.Round(time.Second), float64(n)/elapsed.Seconds(), compression)
	t.Logf("%8s %8s %8s %8s %6s %12s %12s %12s %10s", "at", "stored", "heap MB", "RSS MB", "gor", "items MB", "results MB", "ordered MB", "pg MB")
	for _, s := range samples {
		t.Logf("%8s %8d %8.0f %8.0f %6d %12.1f %12.1f %12.1f %10.1f", s.at.Round(time.Second), s.stored, s.heapMB, s.rssMB, s.goroutines,
			float64(s.streams[p.c.ItemsStream()].disk)/1e6, float64(s.streams[p.c.ResultsStream()].disk)/1e6,
			float64(s.streams[p.c.OrderedStream()].disk)/1e6, float64(s.pgTotal)/1e6)
	}
	for _, name := range []string{p.c.BatchesStream(), p.c.ItemsStream(), p.c.ResultsStream(), p.c.OrderedStream()} {
		s := final.streams[name]
		t.Logf("%-40s %8d msgs %8d subjects %8.0f logical B/item %8.0f disk B/item (disk/logical %.2f)", name, s.msgs, s.subjects,
			float64(s.bytes)/float64(n), float64(s.disk)/float64(n), float64(s.disk)/float64(s.bytes))
	}
	t.Logf("postgres: batches %.0f B/batch, items %.0f B/item, flashcards %.0f B/item; %.0f B per item in all",
		float64(final.pgBatches)/float64(batches), float64(final.pgItems)/float64(n), float64(final.pgCards)/float64(n), float64(final.pgTotal)/float64(n))
}

// The memory a JetStream file stream's subject index costs per subject: the items and
// results streams hold one subject per item for their whole window.
func TestScaleSubjectIndexMemory(t *testing.T) {
	n := envInt(t, "FLASHPIPE_SCALE_SUBJECTS", 1_000_000)
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	payload := make([]byte, 300)
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range n {
		// Subjects as the items stream has them: a batch id of 30 characters, a seq.
		f, err := js.PublishAsync(c.ItemSubject(fmt.Sprintf("vocabulary-1000-csv-%010x", i/100), i%100+1), payload,
			jetstream.WithStallWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == 2000 {
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					t.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}
	<-js.PublishAsyncComplete()
	after := heap()
	st, _ := js.Stream(ctx, c.ItemsStream())
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d subjects in %s: the server's heap grew %.0f MB, %.0f bytes per subject",
		info.State.NumSubjects, time.Since(start).Round(time.Second), float64(after-before)/1e6, float64(after-before)/float64(n))
}
