package sink_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// Replay works within the ordered stream's window (--stream-max-age) and refuses a
// batch whose log has expired, naming the window.
func TestReplayWithinAndBeyondTheLogWindow(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.ContractWith(t, js, contract.Config{MaxAge: 2 * time.Second})
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	snk, err := sink.New(js, c, store, sink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []flashpipe.Event{
		{Kind: flashpipe.EventManifest, Manifest: &flashpipe.Manifest{BatchID: "w", Count: 1, CreatedAt: time.Now()}},
		{Kind: flashpipe.EventResult, Result: &flashpipe.Result{BatchID: "w", Seq: 1, Status: flashpipe.StatusOK,
			ProcessedAt: time.Now(), Item: flashpipe.Item{Position: 1, Term: "t", Type: "noun"}}},
		{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{BatchID: "w", Emitted: 1}},
	} {
		msg, err := c.EventMsg(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := snk.Replay(ctx, "w"); err != nil || n != 3 {
		t.Fatalf("replay within the window: %d events, %v; want 3", n, err)
	}
	st, err := js.Stream(ctx, c.OrderedStream())
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.OrderedSubject("w")))
		return err == nil && len(info.State.Subjects) == 0
	}, "the log did not expire")
	_, err = snk.Replay(ctx, "w")
	if !errors.Is(err, flashpipe.ErrNotFound) || !strings.Contains(err.Error(), "--stream-max-age") {
		t.Fatalf("replay after the log expired: %v; want a refusal naming --stream-max-age", err)
	}
}
