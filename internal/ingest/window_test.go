package ingest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// The retention windows (docs/capacity.md): items and results are kept shorter than
// the ordered log. Once a batch's items have expired, retry still works (it reads the
// failed items from the ordered log) and reprocess is refused, saying why.
func TestRetryAndReprocessAfterTheItemsExpired(t *testing.T) {
	t.Parallel()
	js, c, pub := setupWith(t, contract.Config{ItemsMaxAge: time.Second, ResultsMaxAge: time.Second})
	ctx := context.Background()
	its := items(10)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "old", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	completeLog(t, js, c, sub.Manifest, its, map[int]bool{4: true})
	natstest.Eventually(t, 10*time.Second, func() bool { return streamCount(t, js, c.ItemsStream(), c.BatchItems("old")) == 0 },
		"the items did not expire")

	_, err = pub.Reprocess(ctx, "old")
	if !errors.Is(err, ingest.ErrItemsExpired) || !strings.Contains(err.Error(), "--items-max-age") || !strings.Contains(err.Error(), "0 of the batch's 10 items") {
		t.Fatalf("reprocess after the items expired: %v; want a refusal naming --items-max-age", err)
	}
	if n := streamCount(t, js, c.BatchesStream(), c.ManifestSubject("old")); n != 1 {
		t.Fatalf("the refused reprocess published a manifest (%d manifests)", n)
	}

	r, err := pub.Retry(ctx, "old")
	if err != nil || r.Published != 1 || r.Manifest.Generation != 1 {
		t.Fatalf("retry after the items expired: %+v, %v; want generation 1 with the failed item", r, err)
	}
}

// Once a batch's manifests have expired (the batches stream keeps them as long as the
// ordered log), retry and reprocess refuse it, naming the window.
func TestRetryRefusedAfterTheLogExpired(t *testing.T) {
	t.Parallel()
	js, c, pub := setupWith(t, contract.Config{MaxAge: time.Second})
	ctx := context.Background()
	its := items(5)
	sub, err := pub.Submit(ctx, ingest.Batch{ID: "gone", Items: ingest.SliceItems(its)})
	if err != nil {
		t.Fatal(err)
	}
	completeLog(t, js, c, sub.Manifest, its, map[int]bool{1: true})
	natstest.Eventually(t, 10*time.Second, func() bool {
		return streamCount(t, js, c.BatchesStream(), c.ManifestSubject("gone")) == 0 &&
			streamCount(t, js, c.OrderedStream(), c.OrderedSubject("gone")) == 0
	}, "the manifest and the log did not expire")
	for name, op := range map[string]func(context.Context, string) (*ingest.Submission, error){
		"retry": pub.Retry, "reprocess": pub.Reprocess,
	} {
		_, err := op(ctx, "gone")
		if !errors.Is(err, flashpipe.ErrNotFound) || !strings.Contains(err.Error(), "--stream-max-age") || !strings.HasPrefix(err.Error(), name+" gone:") {
			t.Errorf("%s after the log expired: %v; want a refusal naming the batch and --stream-max-age", name, err)
		}
	}
}
