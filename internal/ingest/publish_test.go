package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func items(n int) []flashpipe.Item {
	out := make([]flashpipe.Item, n)
	for i := range out {
		out[i] = flashpipe.Item{Position: int64(3 * (i + 1)), Term: fmt.Sprintf("단어%d", i), Type: "noun"}
	}
	return out
}

// setup starts a NATS server and returns JetStream, a contract of the test's own and a
// publisher.
func setup(t *testing.T) (jetstream.JetStream, *contract.Contract, *ingest.Publisher) {
	t.Helper()
	return setupWith(t, contract.Config{})
}

// setupWith is setup with stream settings of the test's own.
func setupWith(t *testing.T, cfg contract.Config) (jetstream.JetStream, *contract.Contract, *ingest.Publisher) {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.ContractWith(t, js, cfg)
	pub, err := ingest.NewPublisher(js, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return js, c, pub
}

func streamCount(t *testing.T, js jetstream.JetStream, stream, subject string) int {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

func TestSubmitPublishesManifestAndItemsInRankOrder(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "b1", Source: "test", Items: ingest.SliceItems(items(100))})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Published != 100 || sub.Resubmitted || sub.Manifest.Count != 100 {
		t.Fatalf("submission %+v", sub)
	}
	m, err := pub.Manifest(ctx, "b1")
	if err != nil || m.Count != 100 || m.ContentHash != flashpipe.HashItems(items(100)) {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	st, _ := js.Stream(ctx, c.ItemsStream())
	raw, err := st.GetLastMsgForSubject(ctx, c.ItemSubject("b1", 7))
	if err != nil {
		t.Fatal(err)
	}
	wi, err := contract.DecodeItem(raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if wi.Seq != 7 || wi.Position != 21 || wi.BatchID != "b1" || wi.Term != "단어6" {
		t.Fatalf("item 7 = %+v", wi)
	}
}

func TestResubmitPublishesNothingNew(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "b2", Items: ingest.SliceItems(items(50))}); err != nil {
		t.Fatal(err)
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "b2", Items: ingest.SliceItems(items(50))})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Resubmitted || sub.Published != 0 {
		t.Fatalf("resubmission %+v, want resubmitted with nothing published", sub)
	}
	if n := streamCount(t, js, c.ItemsStream(), c.BatchItems("b2")); n != 50 {
		t.Fatalf("items stream holds %d messages of b2, want 50", n)
	}
	if n := streamCount(t, js, c.BatchesStream(), c.ManifestSubject("b2")); n != 1 {
		t.Fatalf("%d manifests of b2, want 1", n)
	}
}

func TestResubmitFinishesAnInterruptedSubmit(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	all := items(40)
	// A submit that died half-way: the manifest and all but three items are in.
	mm, _ := c.ManifestMsg(flashpipe.Manifest{BatchID: "b3", Count: 40, ContentHash: flashpipe.HashItems(all)})
	if _, err := js.PublishMsg(ctx, mm); err != nil {
		t.Fatal(err)
	}
	for i, it := range all {
		if seq := i + 1; seq != 5 && seq != 6 && seq != 39 {
			msg, _ := c.ItemMsg(flashpipe.WorkItem{BatchID: "b3", Seq: seq, Item: it})
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "b3", Items: ingest.SliceItems(all)})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Published != 3 {
		t.Fatalf("published %d, want the 3 missing items", sub.Published)
	}
	if n := streamCount(t, js, c.ItemsStream(), c.BatchItems("b3")); n != 40 {
		t.Fatalf("items stream holds %d messages of b3, want 40", n)
	}
}

func TestSubmitRejectsADifferentBatchUnderAUsedID(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "b4", Items: ingest.SliceItems(items(10))}); err != nil {
		t.Fatal(err)
	}
	_, err := pub.Submit(ctx, ingest.Batch{ID: "b4", Items: ingest.SliceItems(items(11))})
	if !errors.Is(err, ingest.ErrBatchConflict) {
		t.Fatalf("err = %v, want ErrBatchConflict", err)
	}
	if n := streamCount(t, js, c.ItemsStream(), c.BatchItems("b4")); n != 10 {
		t.Fatalf("items stream holds %d messages of b4, want 10", n)
	}
}

func TestSubmitRejectsBadBatchesBeforePublishing(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	unsorted := items(3)
	unsorted[1], unsorted[2] = unsorted[2], unsorted[1]
	for name, b := range map[string]ingest.Batch{
		"bad id":   {ID: "a.b", Items: ingest.SliceItems(items(1))},
		"empty":    {ID: "e", Items: ingest.SliceItems(nil)},
		"unsorted": {ID: "u", Items: ingest.SliceItems(unsorted)},
	} {
		if _, err := pub.Submit(ctx, b); err == nil {
			t.Errorf("%s: submitted, want an error", name)
		}
	}
	if n := streamCount(t, js, c.ItemsStream(), c.AllItems()); n != 0 {
		t.Fatalf("%d items published by rejected batches", n)
	}
}

// Two submits of different files under one id at the same time: exactly one wins,
// the other is told the id is taken; the batch never mixes their items.
func TestConcurrentSubmitsOfDifferentBatchesUnderOneID(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	for round := range 10 {
		id := fmt.Sprintf("race%d", round)
		a, b := items(20), items(20)
		for i := range b {
			b[i].Term += "x"
		}
		errs := make(chan error, 2)
		for _, its := range [][]flashpipe.Item{a, b} {
			go func() {
				pub, _ := ingest.NewPublisher(js, c, nil)
				_, err := pub.Submit(context.Background(), ingest.Batch{ID: id, Items: ingest.SliceItems(its)})
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) || !(errors.Is(e1, ingest.ErrBatchConflict) || errors.Is(e2, ingest.ErrBatchConflict)) {
			t.Fatalf("round %d: errors %v and %v, want exactly one ErrBatchConflict", round, e1, e2)
		}
		if n := streamCount(t, js, c.BatchesStream(), c.ManifestSubject(id)); n != 1 {
			t.Fatalf("round %d: %d manifests", round, n)
		}
	}
}

// completeLog writes a finished generation 0 into the ordered log, as the sequencer
// would: the manifest, a result per item (failed for the seqs given), the completion.
func completeLog(t *testing.T, js jetstream.JetStream, c *contract.Contract, m flashpipe.Manifest, its []flashpipe.Item, failed map[int]bool) {
	t.Helper()
	ctx := context.Background()
	pub := func(ev flashpipe.Event) {
		msg, err := c.EventMsg(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	pub(flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m})
	for i, it := range its {
		r := &flashpipe.Result{BatchID: m.BatchID, Seq: i + 1, Item: it, Status: flashpipe.StatusOK}
		if failed[i+1] {
			r.Status, r.Failure = flashpipe.StatusFailed, &flashpipe.Failure{Reason: "test"}
		}
		pub(flashpipe.Event{Kind: flashpipe.EventResult, Result: r})
	}
	pub(flashpipe.Event{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{BatchID: m.BatchID, Emitted: len(its)}})
}

// A second retry while the first one's generation runs starts nothing.
func TestRetryStartsOneGenerationAtATime(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	its := items(10)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "once", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	completeLog(t, js, c, sub.Manifest, its, map[int]bool{2: true, 7: true})
	r1, err := pub.Retry(ctx, "once")
	if err != nil || r1.Manifest.Generation != 1 || r1.Published != 2 {
		t.Fatalf("first retry: %+v, %v", r1, err)
	}
	if _, err := pub.Retry(ctx, "once"); !errors.Is(err, ingest.ErrBatchRunning) {
		t.Fatalf("second retry: %v, want ErrBatchRunning", err)
	}
	if _, err := pub.Reprocess(ctx, "once"); !errors.Is(err, ingest.ErrBatchRunning) {
		t.Fatalf("reprocess during a retry: %v, want ErrBatchRunning", err)
	}
	if n := streamCount(t, js, c.BatchesStream(), c.ManifestSubject("once")); n != 2 {
		t.Fatalf("%d manifests, want 2 (generations 0 and 1)", n)
	}
}

// A reprocess cut off after its manifest is finished by running it again.
func TestInterruptedReprocessIsFinishedByRunningItAgain(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	its := items(30)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "cut", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	completeLog(t, js, c, sub.Manifest, its, nil)
	// The cut-off reprocess: its manifest is in, and 10 of its items.
	m := sub.Manifest
	m.Generation = 1
	mm, _ := c.ManifestMsg(m)
	if _, err := js.PublishMsg(ctx, mm); err != nil {
		t.Fatal(err)
	}
	for i, it := range its[:10] {
		msg, _ := c.ItemMsg(flashpipe.WorkItem{BatchID: "cut", Seq: i + 1, Generation: 1, Item: it})
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	r, err := pub.Reprocess(ctx, "cut")
	if err != nil || !r.Resubmitted || r.Published != 20 || r.Manifest.Generation != 1 {
		t.Fatalf("reprocess again: %+v, %v; want generation 1 finished with 20 items", r, err)
	}
	if _, err := pub.Reprocess(ctx, "cut"); !errors.Is(err, ingest.ErrBatchRunning) {
		t.Fatalf("a third reprocess: %v, want ErrBatchRunning", err)
	}
}

// A batch that ran without a cap and is replaced with a max_cost: what it already
// spent counts against the cap (it does not get the whole cap on top of it).
func TestReplaceWithMaxCostCountsWhatTheBatchSpent(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	its := items(4)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "uncapped", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	m := sub.Manifest
	for _, ev := range []flashpipe.Event{
		{Kind: flashpipe.EventManifest, Manifest: &m},
		{Kind: flashpipe.EventResult, Result: &flashpipe.Result{BatchID: "uncapped", Seq: 1, Item: its[0], Status: flashpipe.StatusOK, Usage: flashpipe.Usage{Cost: 0.25}}},
		{Kind: flashpipe.EventResult, Result: &flashpipe.Result{BatchID: "uncapped", Seq: 2, Item: its[1], Status: flashpipe.StatusOK, Usage: flashpipe.Usage{Cost: 0.5}}},
		{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{BatchID: "uncapped", Emitted: 4}},
	} {
		msg, err := c.EventMsg(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "uncapped", Items: ingest.SliceItems(items(3)), Replace: true,
		Settings: map[string]string{flashpipe.SettingMaxCost: "1"}}); err != nil {
		t.Fatal(err)
	}
	l, err := spend.New(ctx, js, c, spend.Config{Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	a, ok, err := l.Batch(ctx, "uncapped")
	if err != nil || !ok {
		t.Fatalf("account: %v, %v", ok, err)
	}
	if got, want := a.Spent(), spend.ToNanos(0.75); got != want || a.Cap != spend.ToNanos(1) {
		t.Fatalf("spent %v of cap %v, want %v of %v", got, a.Cap, want, spend.ToNanos(1))
	}
}
