package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// A used id with other items is refused with the original submission's details; on
// request it is replaced by a new generation whose items carry it, after the previous
// generation completed.
func TestReusedIDIsRefusedOrReplacedOnRequest(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	first, err := pub.Submit(ctx, ingest.Batch{ID: "words", Source: "lesson1.csv", Items: ingest.SliceItems(items(4))})
	if err != nil {
		t.Fatal(err)
	}
	other := items(6)
	for i := range other {
		other[i].Term += "!"
	}
	_, err = pub.Submit(ctx, ingest.Batch{ID: "words", Source: "lesson2.csv", Items: ingest.SliceItems(other)})
	if !errors.Is(err, flashpipe.ErrBatchConflict) {
		t.Fatalf("a used id with other items: %v, want ErrBatchConflict", err)
	}
	for _, want := range []string{`"lesson1.csv"`, "with 4 items", "these 6 items differ", "--replace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	// Replacing while generation 0 runs is refused.
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "words", Items: ingest.SliceItems(other), Replace: true}); !errors.Is(err, ingest.ErrBatchRunning) {
		t.Fatalf("replace while running: %v, want ErrBatchRunning", err)
	}
	completeLog(t, js, c, first.Manifest, items(4), nil)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "words", Source: "lesson2.csv", Items: ingest.SliceItems(other), Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	m := sub.Manifest
	if !sub.Replaced || sub.Published != 6 || m.Generation != 1 || m.Base != 1 || !m.IsReplacement() || m.Count != 6 ||
		sub.Previous == nil || sub.Previous.Source != "lesson1.csv" {
		t.Fatalf("replacement %+v (manifest %+v)", sub, m)
	}
	st, _ := js.Stream(ctx, c.ItemsStream())
	raw, err := st.GetLastMsgForSubject(ctx, c.ItemSubject("words", 6))
	if err != nil {
		t.Fatal(err)
	}
	if wi, err := contract.DecodeItem(raw.Header, raw.Data); err != nil || wi.Generation != 1 || wi.Term != other[5].Term {
		t.Fatalf("item 6: %+v, %v", wi, err)
	}
	// Submitting the replacement again is a resubmission: nothing new.
	again, err := pub.Submit(ctx, ingest.Batch{ID: "words", Items: ingest.SliceItems(other)})
	if err != nil || !again.Resubmitted || again.Published != 0 || again.Manifest.Generation != 1 {
		t.Fatalf("resubmitting the replacement: %+v, %v", again, err)
	}
	rec := registryRecord(t, js, c, "words")
	if rec.ContentHash != flashpipe.HashItems(other) || rec.Generation != 1 || rec.Base != 1 || rec.ReplacedAt == nil ||
		rec.Source != "lesson2.csv" {
		t.Fatalf("registry record %+v", rec)
	}
}

// The registry outlives the streams' retention: once a batch's messages expired, the
// same items are a resubmission that publishes nothing, other items are refused, and a
// replacement is numbered after the last generation the registry knows.
func TestIDReusedAfterTheMessagesExpired(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.ContractWith(t, js, contract.Config{MaxAge: 2 * time.Second, ItemsMaxAge: 2 * time.Second, ResultsMaxAge: 2 * time.Second, DuplicateWindow: time.Second})
	pub, err := ingest.NewPublisher(js, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "old", Source: "a.csv", Items: ingest.SliceItems(items(4))}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		return streamCount(t, js, c.BatchesStream(), c.ManifestSubject("old")) == 0 &&
			streamCount(t, js, c.ItemsStream(), c.BatchItems("old")) == 0
	}, "the batch's messages did not expire")

	same, err := pub.Submit(ctx, ingest.Batch{ID: "old", Items: ingest.SliceItems(items(4))})
	if err != nil || !same.Expired || !same.Resubmitted || same.Published != 0 {
		t.Fatalf("resubmitting expired items: %+v, %v; want a resubmission that publishes nothing", same, err)
	}
	if n := streamCount(t, js, c.ItemsStream(), c.BatchItems("old")); n != 0 {
		t.Fatalf("%d items published again", n)
	}
	other := items(3)
	other[0].Term = "다른"
	if _, err := pub.Submit(ctx, ingest.Batch{ID: "old", Items: ingest.SliceItems(other)}); !errors.Is(err, flashpipe.ErrBatchConflict) ||
		!strings.Contains(err.Error(), `"a.csv"`) {
		t.Fatalf("other items after expiry: %v, want ErrBatchConflict naming the first submission", err)
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "old", Items: ingest.SliceItems(other), Replace: true})
	if err != nil || sub.Manifest.Generation != 1 || sub.Manifest.Base != 1 || sub.Published != 3 {
		t.Fatalf("replacement after expiry: %+v, %v", sub, err)
	}
}

// A submit that died between its registry record and its manifest is finished by
// submitting again (the record is younger than the stream's retention).
func TestSubmitInterruptedAfterTheRecordIsFinished(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	its := items(5)
	rec, _ := json.Marshal(ingest.Record{ContentHash: flashpipe.HashItems(its), Count: 5, Source: "x", SubmittedAt: time.Now()})
	kv, err := js.KeyValue(ctx, c.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "cut", rec); err != nil {
		t.Fatal(err)
	}
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "cut", Items: ingest.SliceItems(its)})
	if err != nil || sub.Published != 5 || sub.Expired {
		t.Fatalf("finishing the interrupted submit: %+v, %v", sub, err)
	}
	if n := streamCount(t, js, c.BatchesStream(), c.ManifestSubject("cut")); n != 1 {
		t.Fatalf("%d manifests", n)
	}
}

func registryRecord(t *testing.T, js jetstream.JetStream, c *contract.Contract, id string) ingest.Record {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), c.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var rec ingest.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// A manifest someone else published that contradicts the registry (the scheduler
// refuses it) is passed over: the batch's own latest manifest still decides retry,
// reprocess and resubmission.
func TestRefusedManifestIsPassedOver(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	ctx := context.Background()
	its := items(6)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "mine", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	completeLog(t, js, c, sub.Manifest, its, map[int]bool{2: true})
	// A hostile generation 1 with other items, under its own message id.
	hostile := sub.Manifest
	hostile.Generation, hostile.ContentHash, hostile.Seqs = 1, "other", []int{1}
	hm, err := c.ManifestMsg(hostile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, hm, jetstream.WithMsgID("hostile")); err != nil {
		t.Fatal(err)
	}
	if m, err := pub.Manifest(ctx, "mine"); err != nil || m.Generation != 0 || m.ContentHash != sub.Manifest.ContentHash {
		t.Fatalf("latest manifest: %+v, %v; want the batch's own generation 0", m, err)
	}
	if again, err := pub.Submit(ctx, ingest.Batch{ID: "mine", Items: ingest.SliceItems(its)}); err != nil || !again.Resubmitted || again.Published != 0 {
		t.Fatalf("resubmission: %+v, %v", again, err)
	}
	r, err := pub.Retry(ctx, "mine")
	if err != nil || r.Manifest.Generation != 1 || len(r.Manifest.Seqs) != 1 || r.Manifest.Seqs[0] != 2 {
		t.Fatalf("retry after the hostile manifest: %+v, %v; want generation 1 retrying seq 2", r, err)
	}
}
