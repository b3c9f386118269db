package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// `submit -` reads the batch from standard input (the format sniffed), names it
// stdin-HASH, and says plainly when it was already submitted.
func TestSubmitReadsStandardInput(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	prefix := natstest.UniquePrefix(t)
	dir := t.TempDir()
	streamsApply(t, dir, srv.ClientURL(), prefix)
	in := "{\"position\":20,\"term\":\"물\"}\n{\"position\":10,\"term\":\"불\",\"type\":\"n\"}\n"
	items := []flashpipe.Item{{Position: 10, Term: "불", Type: "noun"}, {Position: 20, Term: "물", Type: "unknown"}}
	id := "stdin-" + flashpipe.HashItems(items)[:10]
	args := []string{"submit", "-", "--nats-url", srv.ClientURL(), "--prefix", prefix}
	out, stderr, code := flashpipeCmdIn(t, dir, strings.NewReader(in), args...)
	if code != 0 || strings.TrimSpace(out) != id || !strings.Contains(stderr, "batch "+id+" submitted: 2 items") {
		t.Fatalf("exit %d, stdout %q (want %s), stderr:\n%s", code, out, id, stderr)
	}
	c, err := contract.New(contract.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), c.BatchesStream())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(context.Background(), c.ManifestSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := contract.DecodeManifest(raw.Header, raw.Data); err != nil || m.Count != 2 || m.Source != "stdin" {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	_, stderr, code = flashpipeCmdIn(t, dir, strings.NewReader(in), args...)
	if want := "batch " + id + " was already submitted: nothing to publish"; code != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("again: exit %d, stderr lacks %q:\n%s", code, want, stderr)
	}

	// A submit that died after its manifest and one item: submitting again says
	// what it finished.
	file := filepath.Join(dir, "words.csv")
	if err := os.WriteFile(file, []byte("position,term\n3,사람\n1,물\n2,불\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	words := []flashpipe.Item{{Position: 1, Term: "물", Type: "unknown"}, {Position: 2, Term: "불", Type: "unknown"}, {Position: 3, Term: "사람", Type: "unknown"}}
	mm, _ := c.ManifestMsg(flashpipe.Manifest{BatchID: "cut", Count: 3, ContentHash: flashpipe.HashItems(words)})
	if _, err := js.PublishMsg(context.Background(), mm); err != nil {
		t.Fatal(err)
	}
	msg, _ := c.ItemMsg(flashpipe.WorkItem{BatchID: "cut", Seq: 2, Item: words[1]})
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = flashpipeCmd(t, dir, "submit", file, "--batch", "cut", "--nats-url", srv.ClientURL(), "--prefix", prefix)
	want := "batch cut was already submitted; 2 items an interrupted submit had left out are now published"
	if code != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("exit %d, stderr lacks %q:\n%s", code, want, stderr)
	}

	// Standard input needs no file: an empty one is refused like an empty file.
	_, stderr, code = flashpipeCmdIn(t, dir, strings.NewReader(""), args...)
	if code != 2 || !strings.Contains(stderr, "stdin: no items: the input is empty") {
		t.Fatalf("empty stdin: exit %d\n%s", code, stderr)
	}
}
