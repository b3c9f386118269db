package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// publisher publishes raw messages as an upstream in any language would, mistakes
// included.
type publisher struct {
	t  *testing.T
	js jetstream.JetStream
	c  *contract.Contract
}

func (p publisher) manifest(m flashpipe.Manifest) {
	p.manifestWithID(m, contract.ManifestMsgID(m.BatchID, m.Generation))
}

// manifestWithID publishes a manifest under the given message id.
func (p publisher) manifestWithID(m flashpipe.Manifest, id string) {
	p.t.Helper()
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	if m.ContentHash == "" {
		m.ContentHash = "hash-" + m.BatchID
	}
	msg, err := p.c.ManifestMsg(m)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(msg, id)
}

// item publishes an item; tweak, when set, changes the message before it is sent.
func (p publisher) item(batch string, seq int, pos int64, term string, tweak func(*nats.Msg)) {
	p.t.Helper()
	msg, err := p.c.ItemMsg(flashpipe.WorkItem{BatchID: batch, Seq: seq, Item: flashpipe.Item{Position: pos, Term: term, Type: "noun"}})
	if err != nil {
		p.t.Fatal(err)
	}
	if tweak != nil {
		tweak(msg)
	}
	p.publish(msg, contract.ItemMsgID(batch, seq, 0)) // the contract's id, as an upstream would
}

func (p publisher) publish(msg *nats.Msg, id string) {
	p.t.Helper()
	if _, err := p.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(id)); err != nil {
		p.t.Fatal(err)
	}
}

// Every mistake an upstream can make when it publishes straight into NATS is refused
// or ends its batch visibly, with the reason, at no API cost, and a healthy batch
// published beside them completes. The services' /metrics count every refusal kept
// in the stream by service and code (flashpipe_refused_total{by,code}).
func TestMalformedPublishesAreRefusedAndNeverWedge(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{})
	reg := prometheus.NewRegistry()
	withMetrics := func() app.Deps {
		d := p.Deps(true)
		d.Metrics = reg
		return d
	}
	start := func(svc *app.Service, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		p.Run(svc)
	}
	start(app.NewProcessor(context.Background(), withMetrics(), p.ProcessorConfig(processor.Config{ConcurrentMax: 20})))
	start(app.NewSequencer(context.Background(), withMetrics(),
		app.SequencerConfig{Scheduler: scheduler.Config{OrphanGrace: time.Second, ItemDeadline: 3 * time.Second}}))
	start(app.NewSink(context.Background(), withMetrics(), p.store, sink.Config{}))
	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(metrics.Close)
	up := publisher{t: t, js: p.js, c: p.c}

	type want struct {
		refused []string // reason codes expected among the batch's refusals
		ok      int      // results ok (-1: the batch never reaches the store)
		failed  []string // reasons expected among its failed items
	}
	cases := map[string]want{}
	dispatched := 0   // valid items, each costing two API calls at most
	var free []string // the terms of the refused or failed items, which must cost nothing

	// Items with no manifest at all.
	for seq := 1; seq <= 3; seq++ {
		up.item("orphan", seq, int64(seq), fmt.Sprint("고아", seq), nil)
	}
	free = append(free, "고아1", "고아2", "고아3")
	cases["orphan"] = want{refused: []string{refusal.NoManifest, refusal.NoManifest, refusal.NoManifest}, ok: -1}

	// A manifest of 5 items, and 7 published.
	up.manifest(flashpipe.Manifest{BatchID: "extra", Count: 5})
	for seq := 1; seq <= 7; seq++ {
		up.item("extra", seq, int64(seq), fmt.Sprint("여분", seq), nil)
	}
	dispatched += 5
	free = append(free, "여분6", "여분7")
	cases["extra"] = want{refused: []string{refusal.NotInManifest, refusal.NotInManifest}, ok: 5}

	// Two items with the same position (different seqs).
	up.manifest(flashpipe.Manifest{BatchID: "dup", Count: 3})
	up.item("dup", 1, 10, "중복1", nil)
	up.item("dup", 2, 10, "중복2", nil)
	up.item("dup", 3, 30, "중복3", nil)
	dispatched += 2
	free = append(free, "중복2")
	cases["dup"] = want{refused: []string{refusal.PositionOrder}, ok: 2, failed: []string{"position 10 does not follow"}}

	// Headers that disagree with the body (the seq), and a body naming another batch.
	up.manifest(flashpipe.Manifest{BatchID: "hdr", Count: 3})
	up.item("hdr", 1, 1, "머리1", nil)
	up.item("hdr", 2, 2, "머리2", func(m *nats.Msg) { m.Header.Set(contract.HeaderSeq, "3") })
	up.item("hdr", 3, 3, "머리3", func(m *nats.Msg) {
		m.Data = []byte(strings.Replace(string(m.Data), `"batch_id":"hdr"`, `"batch_id":"phantom"`, 1))
	})
	dispatched++
	free = append(free, "머리2", "머리3")
	cases["hdr"] = want{refused: []string{refusal.Mismatch, refusal.Mismatch}, ok: 1, failed: []string{"item refused", "item refused"}}
	cases["phantom"] = want{ok: -1} // no phantom batch is made

	// An item with an empty term, and one too long.
	up.manifest(flashpipe.Manifest{BatchID: "terms", Count: 3})
	up.item("terms", 1, 1, "말", nil)
	up.item("terms", 2, 2, "   ", nil)
	up.item("terms", 3, 3, strings.Repeat("가", flashpipe.MaxTermLength+1), nil)
	dispatched++
	free = append(free, "   ", strings.Repeat("가", flashpipe.MaxTermLength+1))
	cases["terms"] = want{ok: 1, failed: []string{"term is empty", "the limit is 100"}}

	// A manifest of 7 items, and 5 published (the upstream died).
	up.manifest(flashpipe.Manifest{BatchID: "short", Count: 7})
	for seq := 1; seq <= 5; seq++ {
		up.item("short", seq, int64(seq), fmt.Sprint("짧은", seq), nil)
	}
	dispatched += 5
	cases["short"] = want{refused: []string{refusal.NeverPublished, refusal.NeverPublished}, ok: 5, failed: []string{"item never published", "item never published"}}

	// A manifest that contradicts itself, and one that contradicts the registry.
	up.manifest(flashpipe.Manifest{BatchID: "empty", Count: 0})
	up.item("empty", 1, 1, "빈", nil)
	free = append(free, "빈")
	cases["empty"] = want{refused: []string{refusal.InvalidManifest, refusal.NoManifest}, ok: -1}
	p.submit("taken", loadItems(t, "../../examples/test_5_words.csv"))
	dispatched += 5
	// (Under its own message id: under the same one JetStream drops it as a duplicate.)
	up.manifestWithID(flashpipe.Manifest{BatchID: "taken", Count: 2, Generation: 0, ContentHash: "other"}, "hostile")
	cases["taken"] = want{refused: []string{refusal.BatchConflict}, ok: 5}

	// A healthy batch beside them all.
	good := loadItems(t, "../../examples/vocabulary_1000.csv")[:30]
	p.submit("good", good)
	dispatched += len(good)
	cases["good"] = want{ok: len(good)}

	ctx := context.Background()
	for batch, w := range cases {
		if w.ok < 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		st, err := app.WaitStored(wctx, p.store, batch, 0)
		cancel()
		if err != nil {
			t.Fatalf("batch %s never completed: %v (status %+v)", batch, err, st)
		}
		if st.OK != w.ok || st.Failed != len(w.failed) {
			t.Errorf("batch %s: %d ok, %d failed; want %d and %d", batch, st.OK, st.Failed, w.ok, len(w.failed))
		}
		report, err := app.Report(ctx, p.store, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range report.FailedItems {
			if i < len(w.failed) && !strings.Contains(f.Reason, w.failed[i]) {
				t.Errorf("batch %s: failed item %d: %q, want %q", batch, i, f.Reason, w.failed[i])
			}
		}
	}
	for batch, w := range cases {
		natstest.Eventually(t, 30*time.Second, func() bool {
			counts, err := p.Client.RefusalCounts(ctx)
			return err == nil && counts[batch] >= len(w.refused)
		}, "batch %s: fewer refusals than %q", batch, w.refused)
		got, err := p.Client.Refusals(ctx, batch, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, code := range w.refused {
			if got[i].Code != code || got[i].BatchID != batch || got[i].By == "" || got[i].Subject == "" || got[i].Time.IsZero() {
				t.Errorf("batch %s: refusal %d: %+v, want code %s", batch, i, got[i], code)
			}
		}
		if w.ok < 0 {
			if _, err := p.store.Batch(ctx, batch); err == nil {
				t.Errorf("batch %s reached the store", batch)
			}
		}
	}
	// The metric counts what the stream keeps, by the service that refused and the code.
	kept := map[string]int{}
	counts, err := p.Client.RefusalCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for batch := range counts {
		got, err := p.Client.Refusals(ctx, batch, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			kept[fmt.Sprintf(`by=%q,code=%q`, r.By, r.Code)]++
		}
	}
	for _, code := range []string{refusal.NoManifest, refusal.NotInManifest, refusal.PositionOrder, refusal.Mismatch,
		refusal.NeverPublished, refusal.InvalidManifest, refusal.BatchConflict} {
		if !strings.Contains(fmt.Sprint(kept), `code="`+code+`"`) {
			t.Errorf("no refusal with code %s kept: %v", code, kept)
		}
	}
	var scraped map[string]int
	natstest.Eventually(t, 10*time.Second, func() bool {
		scraped = scrapeRefused(t, metrics.URL+"/metrics")
		return maps.Equal(scraped, kept)
	}, "flashpipe_refused_total on /metrics: %v; the refused-messages stream keeps %v", &scraped, kept)

	// Every refused or failed-in-place item cost nothing; the valid ones two calls at
	// most (fewer where the batches share a term: the cache answers).
	for _, term := range free {
		if n := p.sim.CallsFor(term); n != 0 {
			t.Errorf("%d API calls about %q, which was refused or failed in place", n, term)
		}
	}
	if p.sim.CallsFor(good[0].Term) == 0 {
		t.Errorf("no API calls counted about %q, a valid term: the count above is blind", good[0].Term)
	}
	if s := p.sim.Stats(); s.Requests > int64(2*dispatched) {
		t.Errorf("%d API calls, want at most %d (two per valid item)", s.Requests, 2*dispatched)
	}
}

// A burst of stuck batches (manifests whose last items never come) does not delay a
// healthy batch submitted after them: it completes about as fast as alone. The
// numbers: go test ./cmd/flashpipe -run TestHealthyBatchBesideFiftyStuckOnes -v
func TestHealthyBatchBesideFiftyStuckOnes(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{Sim: llmsim.Config{Latency: 50 * time.Millisecond}})
	p.startProcessor(processor.Config{ConcurrentMax: 10})
	p.startSequencer(sequencer.Config{})
	p.startSink(sink.Config{})
	words := loadItems(t, "../../examples/vocabulary_1000.csv")
	timed := func(id string, items []flashpipe.Item) time.Duration {
		start := time.Now()
		p.submit(id, items)
		p.waitStored(id, time.Minute)
		return time.Since(start)
	}
	timed("warm-up", words[:5])
	alone := timed("alone", words[5:35])

	up := publisher{t: t, js: p.js, c: p.c}
	const stuck = 50
	for i := range stuck {
		id := fmt.Sprintf("stuck%02d", i)
		up.manifest(flashpipe.Manifest{BatchID: id, Count: 5})
		for seq := 1; seq <= 2; seq++ {
			up.item(id, seq, int64(seq), fmt.Sprintf("막힌%d-%d", i, seq), nil)
		}
	}
	// Stuck: every one has its two items stored and waits for the other three.
	ctx := context.Background()
	natstest.Eventually(t, time.Minute, func() bool {
		list, err := p.store.Batches(ctx, 100)
		n := 0
		for _, b := range list {
			if strings.HasPrefix(b.Manifest.BatchID, "stuck") && b.Done == 2 && b.State != flashpipe.BatchComplete {
				n++
			}
		}
		return err == nil && n == stuck
	}, "the %d stuck batches never got their first two items stored", stuck)

	beside := timed("beside", words[35:65])
	t.Logf("a 30-item batch: %s alone, %s after %d stuck batches (%.2fx)", alone.Round(time.Millisecond), beside.Round(time.Millisecond), stuck, float64(beside)/float64(alone))
	if beside > 2*alone+time.Second {
		t.Errorf("the healthy batch took %s beside %d stuck ones, %s alone: the stuck ones held it up", beside, stuck, alone)
	}
}

var refusedSeries = regexp.MustCompile(`(?m)^flashpipe_refused_total\{(by="[^"]*",code="[^"]*")\} (\d+)$`)

// scrapeRefused reads flashpipe_refused_total from a /metrics page: its value by its
// labels, `by="...",code="..."`.
func scrapeRefused(t *testing.T, url string) map[string]int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range refusedSeries.FindAllStringSubmatch(string(body), -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}
