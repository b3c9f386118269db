package sequencer

import (
	"context"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// Three sequencers appending the same batch at once, with no lease to keep them apart
// (as after a lease lost to a long pause): the expected-last-sequence check on every
// append still leaves the log exact.
func TestConcurrentAppendersWithoutLeaseKeepTheLogExact(t *testing.T) {
	t.Parallel()
	for _, oneByOne := range []bool{false, true} {
		srv := natstest.Server(t)
		_, js := natstest.Connect(t, srv.ClientURL())
		c := natstest.Contract(t, js)
		ctx := context.Background()
		const n = 300
		m := flashpipe.Manifest{BatchID: "nolease", Count: n, CreatedAt: time.Now()}
		for seq := 1; seq <= n; seq++ {
			r := &flashpipe.Result{BatchID: "nolease", Seq: seq, Item: flashpipe.Item{Position: int64(seq), Term: "t"}, Status: flashpipe.StatusOK}
			msg, _ := c.ResultMsg(r)
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		results, err := js.Stream(ctx, c.ResultsStream())
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 3)
		for range 3 {
			s, err := New(js, c, Config{Window: 4, MaxRun: 8, AtomicMinRun: 4, OneByOne: oneByOne, PollInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if ordered, err := js.Stream(ctx, c.OrderedStream()); err == nil {
				s.atomic = ordered.CachedInfo().Config.AllowAtomicPublish && !oneByOne
			}
			go func() { errs <- s.sequence(ctx, results, m) }()
		}
		for range 3 {
			if err := <-errs; err != nil {
				t.Logf("an appender gave up: %v", err) // allowed: it lost every race
			}
		}
		keys := natstest.OrderedKeys(t, js, c, "nolease")
		if len(keys) != n+2 || keys[0].Kind != flashpipe.EventManifest || keys[n+1].Kind != flashpipe.EventComplete {
			t.Fatalf("one-by-one %v: %d events, want %d", oneByOne, len(keys), n+2)
		}
		for i := 1; i <= n; i++ {
			if keys[i].Seq != i {
				t.Fatalf("one-by-one %v: event %d has seq %d", oneByOne, i, keys[i].Seq)
			}
		}
	}
}
