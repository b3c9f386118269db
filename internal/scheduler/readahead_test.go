package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// With many small batches, one request to the items stream reads the items of dozens
// of generations (up to maxReadAhead subjects), not one generation's each; a
// generation whose items are not published yet gets none and is looked up again on
// its own.
func TestReadAheadServesManySmallBatchesInOneRequest(t *testing.T) {
	t.Parallel()
	nc, js := natstest.Connect(t, natstest.Server(t).ClientURL())
	c := natstest.Contract(t, js)
	l := newTestLeader(t, Config{})
	l.s.js, l.s.c, l.multiGet = js, c, true
	ctx := context.Background()
	const batches, per = 60, 5
	var gens []*gen
	for b := range batches {
		id := fmt.Sprintf("small-%02d", b)
		m := flashpipe.Manifest{BatchID: id, Count: per, Tenant: fmt.Sprintf("t%d", b%3)}
		g := &gen{Entry: Entry{Manifest: m, Admitted: time.Unix(int64(b), 0)}, key: Key(id, 0), n: per}
		l.add(g)
		gens = append(gens, g)
		if b == 7 {
			continue // published later
		}
		for seq := 1; seq <= per; seq++ {
			msg, err := c.ItemMsg(flashpipe.WorkItem{BatchID: id, Seq: seq,
				Item: flashpipe.Item{Position: int64(seq), Term: fmt.Sprintf("%s-%d", id, seq), Type: "noun"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, now := nc.Stats().OutMsgs, time.Now()
	if !l.readyGen(ctx, gens[0], now) {
		t.Fatal("the first generation has no item ready")
	}
	requests := nc.Stats().OutMsgs - before
	full := 0
	for i, g := range gens {
		switch {
		case i == 7 && len(g.queue) != 0:
			t.Errorf("generation 7 (not published) holds %d items", len(g.queue))
		case len(g.queue) == per:
			full++
		}
	}
	// 256 subjects: the first generation's 5, then the next 50 generations' 5 each
	// (the unpublished one's included), then 1 of the next.
	if requests != 1 || full != 50 || l.queued != 251 {
		t.Errorf("one look-up made %d requests and filled %d generations (%d items held); want 1 request, 50 generations, 251 items",
			requests, full, l.queued)
	}
	if !gens[7].waitUntil.After(now) {
		t.Error("the generation whose items were not published is looked up again at once")
	}
	// The generations read ahead are dispatched without a request of their own.
	before = nc.Stats().OutMsgs
	out, _, err := l.choose(ctx, now, 40, func(g *gen) bool { return l.readyGen(ctx, g, now) })
	if err != nil || len(out) != 40 {
		t.Fatalf("chose %d items (%v); want 40", len(out), err)
	}
	if n := nc.Stats().OutMsgs - before; n != 0 {
		t.Errorf("dispatching 40 items read ahead made %d requests; want none", n)
	}
}
