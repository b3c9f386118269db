package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// The 1,000-item list through all four services, the simulator answering in random
// order (0-50 ms per call).
func TestEndToEndThousandItems(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, llmsim.Config{LatencyJitter: 50 * time.Millisecond})
	p.startAll()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")
	p.submit("vocab", items)
	st := p.waitStored("vocab", 2*time.Minute)
	if st.OK != 1000 || st.Failed != 0 {
		t.Fatalf("status %+v, want 1000 ok", st)
	}
	checkStored(t, p.results("vocab"), items, 3)
	checkOrdered(t, p.orderedKeys("vocab"), items)
	if s := p.sim.Stats(); s.Stage1Calls != 1000 || s.Stage2Calls != 1000 {
		t.Fatalf("simulator saw %d stage 1 and %d stage 2 calls, want exactly 1000 each", s.Stage1Calls, s.Stage2Calls)
	}
	if st.Usage.Stage1Calls != 1000 || st.Usage.Stage2Calls != 1000 || st.Usage.PromptTokens == 0 || st.Usage.Cost <= 0 {
		t.Fatalf("stored usage %+v", st.Usage)
	}

	// The TSV of domain.md.
	var buf bytes.Buffer
	tsv := export.NewTSV(&buf)
	if err := p.store.Results(context.Background(), "vocab", flashpipe.ResultFilter{}, tsv.Write); err != nil {
		t.Fatal(err)
	}
	if err := tsv.Close(); err != nil {
		t.Fatal(err)
	}
	checkTSV(t, buf.String(), items, 3)
}

// checkTSV asserts the header, one line per card with nine fields, the running card
// number, and items in ascending position with their term and pronunciation.
func checkTSV(t *testing.T, data string, items []flashpipe.Item, cardsPerItem int) {
	t.Helper()
	rows := splitTSV(t, data)
	if got := strings.Join(rows[0], "\t"); got != "position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level" {
		t.Fatalf("header %q", got)
	}
	rows = rows[1:]
	if len(rows) != cardsPerItem*len(items) {
		t.Fatalf("%d card lines, want %d", len(rows), cardsPerItem*len(items))
	}
	for i, r := range rows {
		if len(r) != 9 {
			t.Fatalf("line %d has %d fields: %q", i+2, len(r), r)
		}
		it := items[i/cardsPerItem]
		if r[0] != strconv.Itoa(i+1) || r[2] != strconv.FormatInt(it.Position, 10) {
			t.Fatalf("line %d: position %s term_number %s, want %d and %d", i+2, r[0], r[2], i+1, it.Position)
		}
		if !strings.HasPrefix(r[1], it.Term+"[") || !strings.HasSuffix(r[1], "]") {
			t.Fatalf("line %d: term %q, want %q with its pronunciation in brackets", i+2, r[1], it.Term)
		}
		if !strings.Contains(r[7], "term:") || !strings.Contains(r[7], "pos:") {
			t.Fatalf("line %d: tags %q lack term: or pos:", i+2, r[7])
		}
		if r[3] == "" || r[4] == "" || r[5] == "" || r[6] == "" {
			t.Fatalf("line %d has an empty card field: %q", i+2, r)
		}
	}
}

// Submitting the same batch again publishes nothing, so it makes no rows and no calls.
func TestResubmittedBatchCausesNoNewWork(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, llmsim.Config{})
	p.startAll()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:200]
	p.submit("twice", items)
	p.waitStored("twice", time.Minute)
	calls := p.sim.Stats()
	events := len(p.orderedKeys("twice"))

	sub := p.submit("twice", items)
	if !sub.Resubmitted || sub.Published != 0 {
		t.Fatalf("second submit %+v, want a resubmission publishing nothing", sub)
	}
	// Nothing new to process: the processors' consumer has nothing pending or in hand.
	ctx := context.Background()
	cons, err := p.js.Consumer(ctx, p.c.ReadyStream(), processor.DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Fatalf("processors have %d pending and %d in hand after a resubmission", info.NumPending, info.NumAckPending)
	}
	if after := p.sim.Stats(); after.Requests != calls.Requests {
		t.Fatalf("API calls went from %d to %d", calls.Requests, after.Requests)
	}
	if n := len(p.orderedKeys("twice")); n != events {
		t.Fatalf("ordered log grew from %d to %d events", events, n)
	}
	checkStored(t, p.results("twice"), items, 3)
}

// The sequencer stopped mid-batch and started again: no gap, no duplicate.
func TestSequencerRestartedMidBatch(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, llmsim.Config{LatencyJitter: 5 * time.Millisecond})
	p.startProcessor(processor.Config{ConcurrentMax: 20})
	p.startSink(sink.Config{})
	stopSeq := p.startSequencer(sequencer.Config{Window: 16})
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:600]
	p.submit("restart", items)

	var before int
	deadline := time.Now().Add(time.Minute)
	for before = len(p.orderedKeys("restart")); before < 100; before = len(p.orderedKeys("restart")) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d events ordered within a minute", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopSeq()
	p.startSequencer(sequencer.Config{Window: 16})
	p.waitStored("restart", time.Minute)
	keys := p.orderedKeys("restart")
	if before >= len(keys) {
		t.Fatalf("the sequencer had finished (%d of %d events) before its restart", before, len(keys))
	}
	checkOrdered(t, keys, items)
	checkStored(t, p.results("restart"), items, 3)
}

// Items that fail for good hold their place; `retry` re-runs only them as a new
// generation, their rows are fixed in place, the ordered log carries the corrections
// in order after the first completion, and the TSV has every item.
func TestPermanentFailuresThenRetryFixesThem(t *testing.T) {
	t.Parallel()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:120]
	bad := map[string]int{items[5].Term: 400, items[60].Term: 400, items[119].Term: 400}
	p := newPipeline(t, llmsim.Config{Faults: llmsim.Faults{FailTerms: bad}})
	p.startAll()
	p.submit("fix", items)
	st := p.waitStored("fix", time.Minute)
	if st.OK != 117 || st.Failed != 3 {
		t.Fatalf("status %+v, want 117 ok and 3 failed", st)
	}
	res := p.results("fix")
	checkStored(t, res, items, 0)
	for _, i := range []int{5, 60, 119} {
		f := res[i].Failure
		if res[i].Status != flashpipe.StatusFailed || f == nil || !strings.Contains(f.Reason, "400") || f.NextStep == "" {
			t.Fatalf("item %d: %s %+v", i, res[i].Status, f)
		}
	}
	checkOrdered(t, p.orderedKeys("fix"), items)

	// The input problem is fixed (the API accepts those terms now): retry.
	if err := p.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	calls := p.sim.Stats().Requests
	sub, err := p.pub.Retry(context.Background(), "fix")
	if err != nil {
		t.Fatal(err)
	}
	if sub.Manifest.Generation != 1 || fmt.Sprint(sub.Manifest.Seqs) != "[6 61 120]" || sub.Published != 3 {
		t.Fatalf("retry %+v", sub)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err = app.WaitStored(ctx, p.store, "fix", 1)
	if err != nil || st.OK != 120 || st.Failed != 0 {
		t.Fatalf("after retry: %+v, %v", st, err)
	}
	if made := p.sim.Stats().Requests - calls; made != 6 {
		t.Fatalf("retry made %d API calls, want 6 (two stages of three items)", made)
	}
	res = p.results("fix")
	checkStored(t, res, items, 3)
	for _, i := range []int{5, 60, 119} {
		if res[i].Generation != 1 || res[i].Status != flashpipe.StatusOK {
			t.Fatalf("item %d after retry: generation %d, %s", i, res[i].Generation, res[i].Status)
		}
	}
	keys := p.orderedKeys("fix")
	checkOrdered(t, keys[:len(items)+2], items)
	tail := keys[len(items)+2:]
	if len(tail) != 5 || tail[0].Kind != flashpipe.EventManifest || tail[4].Kind != flashpipe.EventComplete ||
		tail[1].Seq != 6 || tail[2].Seq != 61 || tail[3].Seq != 120 || tail[1].Generation != 1 {
		t.Fatalf("corrections in the ordered log: %+v", tail)
	}
	// Retrying a batch without failures says so.
	if _, err := p.pub.Retry(context.Background(), "fix"); !errors.Is(err, ingest.ErrNothingToRetry) {
		t.Fatalf("second retry: %v", err)
	}
	var buf bytes.Buffer
	tsv := export.NewTSV(&buf)
	if err := p.store.Results(context.Background(), "fix", flashpipe.ResultFilter{}, tsv.Write); err != nil {
		t.Fatal(err)
	}
	if err := tsv.Close(); err != nil {
		t.Fatal(err)
	}
	checkTSV(t, buf.String(), items, 3)
}

// replay rebuilds an empty database from the ordered stream; reprocess runs the batch
// again from the items stream for free (the cache answers).
func TestReplayAndReprocess(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, llmsim.Config{})
	p.startAll()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:100]
	p.submit("again", items)
	p.waitStored("again", time.Minute)
	want := p.results("again")

	// Replay into an empty database (a restore lost the rows).
	ctx := context.Background()
	empty, err := postgres.Open(ctx, pgtest.URL(t), postgres.Config{AutoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	snk, err := sink.New(p.js, p.c, empty, sink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := snk.Replay(ctx, "again")
	if err != nil || n != len(items)+2 {
		t.Fatalf("replayed %d events, %v; want %d", n, err, len(items)+2)
	}
	st, err := empty.Batch(ctx, "again")
	if err != nil || st.State != flashpipe.BatchComplete || st.OK != len(items) {
		t.Fatalf("replayed batch %+v, %v", st, err)
	}
	var got []flashpipe.Result
	if err := empty.Results(ctx, "again", flashpipe.ResultFilter{}, func(r flashpipe.Result) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	checkStored(t, got, items, 3)
	for i := range want {
		if fmt.Sprint(got[i].Cards) != fmt.Sprint(want[i].Cards) || got[i].Analysis.Term != want[i].Analysis.Term {
			t.Fatalf("replayed item %d differs", i)
		}
	}

	// Reprocess: a new generation of every item, all answers from the cache.
	calls := p.sim.Stats().Requests
	sub, err := p.pub.Reprocess(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	if sub.Manifest.Generation != 1 || sub.Published != len(items) {
		t.Fatalf("reprocess %+v", sub)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if st, err = app.WaitStored(wctx, p.store, "again", 1); err != nil || st.OK != len(items) {
		t.Fatalf("after reprocess: %+v, %v", st, err)
	}
	if made := p.sim.Stats().Requests - calls; made != 0 {
		t.Fatalf("reprocess made %d API calls, want 0", made)
	}
	res := p.results("again")
	checkStored(t, res, items, 3)
	for _, r := range res {
		if r.Generation != 1 || r.Usage.CacheHits != 2 {
			t.Fatalf("item %d: generation %d, usage %+v", r.Position, r.Generation, r.Usage)
		}
	}
	keys := p.orderedKeys("again")
	checkOrdered(t, keys[:len(items)+2], items)
	tail := keys[len(items)+2:]
	if len(tail) != len(items)+2 || tail[0].Generation != 1 || tail[len(tail)-1].Kind != flashpipe.EventComplete {
		t.Fatalf("reprocess generation in the ordered log: %d events", len(tail))
	}
}
