package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/testutil/batchgen"
)

// writeShuffled writes n items with positions 5, 10, 15, ... in a random order and
// returns the file's path and the items as Parse reads them.
func writeShuffled(t *testing.T, n int) (string, []flashpipe.Item) {
	t.Helper()
	var buf bytes.Buffer
	if err := batchgen.WriteCSV(&buf, batchgen.Config{Items: n, Shuffle: true, Gap: 5, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "words.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	parsed, err := ingest.Parse(bytes.NewReader(buf.Bytes()), ingest.ParseOptions{Format: ingest.FormatCSV})
	if err != nil {
		t.Fatal(err)
	}
	return path, parsed.Items
}

func openFile(t *testing.T, path string) *ingest.File {
	t.Helper()
	b, err := ingest.OpenFile(path, ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// storedItems reads back the item messages of a batch (n of them), by seq.
func storedItems(t *testing.T, js jetstream.JetStream, c *contract.Contract, id string, n int) []flashpipe.Item {
	t.Helper()
	ctx := context.Background()
	oc, err := js.OrderedConsumer(ctx, c.ItemsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{c.BatchItems(id)}})
	if err != nil {
		t.Fatal(err)
	}
	it, err := oc.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	out := make([]flashpipe.Item, n)
	for range n {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		wi, err := contract.DecodeItem(msg.Headers(), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		if wi.Seq < 1 || wi.Seq > n || out[wi.Seq-1].Term != "" {
			t.Fatalf("item message with seq %d (of %d), or twice", wi.Seq, n)
		}
		out[wi.Seq-1] = wi.Item
	}
	return out
}

// A batch read from a file with unsorted, gapped positions is published like the
// same items from memory: the manifest's count and hash, each item at the seq that is
// the rank of its position.
func TestSubmitFromAFile(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	const n = 2500 // several publish chunks
	path, want := writeShuffled(t, n)
	sub, err := pub.Submit(context.Background(), ingest.Batch{ID: "file", Source: "words.csv", Items: openFile(t, path)})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Published != n || sub.Manifest.Count != n || sub.Manifest.ContentHash != flashpipe.HashItems(want) {
		t.Fatalf("submission %+v, want %d items with the hash of the parsed items", sub, n)
	}
	got := storedItems(t, js, c, "file", n)
	for i := range want {
		if got[i].Position != want[i].Position || got[i].Term != want[i].Term || got[i].Type != want[i].Type {
			t.Fatalf("seq %d holds %+v, want %+v", i+1, got[i], want[i])
		}
	}
}

// cancelAt passes items on and cancels a context when it reaches a seq.
type cancelAt struct {
	ingest.Items
	seq    int
	cancel context.CancelFunc
}

func (c cancelAt) Each(ctx context.Context, fn func(int, flashpipe.Item) error) error {
	return c.Items.Each(ctx, func(seq int, it flashpipe.Item) error {
		if seq == c.seq {
			c.cancel()
		}
		return fn(seq, it)
	})
}

// A submit interrupted half-way says how many of the batch's items are not published;
// submitting the file again publishes exactly the missing ones.
func TestResubmitFromAFileAfterAnInterruptedSubmit(t *testing.T) {
	t.Parallel()
	js, c, pub := setup(t)
	const n = 5000
	path, want := writeShuffled(t, n)
	b := openFile(t, path)
	if _, err := b.Hash(context.Background()); err != nil { // the hash pass, not interrupted
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := pub.Submit(ctx, ingest.Batch{ID: "cut", Items: cancelAt{Items: b, seq: 2500, cancel: cancel}})
	m := regexp.MustCompile(`^ingest: (\d+) of 5000 items of cut not published \(context canceled\): submit again to finish$`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted submit: %v", err)
	}
	notPublished, _ := strconv.Atoi(m[1])
	select { // publishes in flight when it stopped may still be stored
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes still pending after 30s")
	}
	stored := streamCount(t, js, c.ItemsStream(), c.BatchItems("cut"))
	if notPublished < n-stored || stored < 2000 || stored == n {
		t.Fatalf("%d items stored, %d said not published", stored, notPublished)
	}

	sub, err := pub.Submit(context.Background(), ingest.Batch{ID: "cut", Items: openFile(t, path)})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Resubmitted || sub.Published != n-stored {
		t.Fatalf("resubmission %+v, want the %d missing items published", sub, n-stored)
	}
	if got := streamCount(t, js, c.ItemsStream(), c.BatchItems("cut")); got != n {
		t.Fatalf("items stream holds %d messages of the batch, want %d", got, n)
	}
	got := storedItems(t, js, c, "cut", n)
	for i := range want {
		if got[i].Position != want[i].Position || got[i].Term != want[i].Term {
			t.Fatalf("seq %d holds %+v, want %+v", i+1, got[i], want[i])
		}
	}
}
