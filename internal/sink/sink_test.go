package sink_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// An event the store refuses for good is set aside (kept as a dead letter with the
// reason, then terminated on the stream) and the sink goes on with the others instead
// of failing over and over on the same group; the batch reads blocked, with the
// reason, until the letter is replayed.
func TestRefusedEventDoesNotStopTheSink(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	snk, err := sink.New(js, c, store, sink.Config{Linger: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- snk.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })

	publish := func(ev flashpipe.Event) {
		t.Helper()
		msg, err := c.EventMsg(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	result := func(seq int, pos int64) flashpipe.Event {
		return flashpipe.Event{Kind: flashpipe.EventResult, Result: &flashpipe.Result{
			BatchID: "b", Seq: seq, Status: flashpipe.StatusOK, ProcessedAt: time.Now(),
			Item: flashpipe.Item{Position: pos, Term: "t", Type: "noun"}}}
	}
	m := flashpipe.Manifest{BatchID: "b", Count: 3, CreatedAt: time.Now()}
	publish(flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m})
	publish(result(1, 10))
	publish(result(1, 20)) // a second item claiming seq 1: the store refuses it
	publish(result(2, 30))
	publish(result(3, 40))
	natstest.Eventually(t, 10*time.Second, func() bool {
		st, err := store.Batch(ctx, "b")
		return err == nil && st.Done == 3
	}, "the good results were not stored")
	var got []int64
	_ = store.Results(ctx, "b", flashpipe.ResultFilter{}, func(r flashpipe.Result) error { got = append(got, r.Position); return nil })
	if len(got) != 3 || got[0] != 10 || got[1] != 30 || got[2] != 40 {
		t.Fatalf("stored positions %v, want [10 30 40]", got)
	}
	select {
	case err := <-done:
		t.Fatalf("the sink stopped: %v", err)
	default:
	}
	letters, err := store.DeadLetters(ctx, "b")
	if err != nil || len(letters) != 1 || letters[0].Event.Result == nil || letters[0].Event.Result.Position != 20 {
		t.Fatalf("dead letters %+v, %v; want the result at position 20", letters, err)
	}
	if !strings.Contains(letters[0].Reason, "UNIQUE constraint failed") {
		t.Fatalf("dead letter reason %q", letters[0].Reason)
	}
	publish(flashpipe.Event{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{BatchID: "b", Emitted: 3, CompletedAt: time.Now()}})
	natstest.Eventually(t, 10*time.Second, func() bool {
		st, err := store.Batch(ctx, "b")
		return err == nil && st.Done == 3 && st.SetAside == 1 && st.State == flashpipe.BatchComplete
	}, "the batch, whose three items are stored, does not read complete beside the set-aside event")
}
