package scheduler

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// The items a spend cap set aside go back to the ready stream once their batch is not
// paused, except those of a generation a replacement superseded and those of a batch
// gone (pruned): they are forgotten, so no processor pays for an item whose result
// would be dropped.
func TestRequeueSkipsReplacedAndGoneBatches(t *testing.T) {
	t.Parallel()
	_, js := natstest.Connect(t, natstest.Server(t).ClientURL())
	c := natstest.Contract(t, js)
	l := newTestLeader(t, Config{})
	l.s.js, l.s.c, l.s.log = js, c, slog.New(slog.NewTextHandler(io.Discard, nil))
	l.window = 100
	ctx := context.Background()
	for _, m := range []flashpipe.Manifest{
		{BatchID: "rep", Count: 2, ContentHash: "a"},
		{BatchID: "rep", Count: 2, ContentHash: "b", Generation: 1, Base: 1},
		{BatchID: "kept", Count: 2, ContentHash: "c"},
	} {
		msg, err := c.ManifestMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	led, err := spend.New(ctx, js, c, spend.Config{Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct {
		batch    string
		seq, gen int
	}{{"rep", 1, 0}, {"rep", 2, 0}, {"rep", 1, 1}, {"kept", 1, 0}, {"gone", 1, 0}} {
		if err := led.SetAside(ctx, h.batch, h.seq, h.gen, c.ReadySubject(h.batch, h.seq), nil, []byte("item")); err != nil {
			t.Fatal(err)
		}
	}
	l.refreshHeld(ctx, nil)
	st, err := js.Stream(ctx, c.ReadyStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs; got != 2 || l.inflight != 2 {
		t.Errorf("%d items published again (%d counted in flight); want 2 (rep's generation 1, kept's)", got, l.inflight)
	}
	left, err := led.HeldCounts(ctx)
	if err != nil || len(left) != 0 {
		t.Errorf("still set aside: %v (%v); want none", left, err)
	}
}

// The items set aside go back within the room left in the window and their tenant's
// concurrency cap, not all at once: the rest wait for a next round.
func TestRequeueKeepsToTheWindowAndTenantCaps(t *testing.T) {
	t.Parallel()
	_, js := natstest.Connect(t, natstest.Server(t).ClientURL())
	c := natstest.Contract(t, js)
	l := newTestLeader(t, Config{TenantConcurrency: map[string]int{"t2": 1}})
	l.s.js, l.s.c, l.s.log = js, c, slog.New(slog.NewTextHandler(io.Discard, nil))
	l.window, l.inflight = 7, 2 // room for 5
	ctx := context.Background()
	led, err := spend.New(ctx, js, c, spend.Config{Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		id, tenant string
		n          int
	}{{"a", "t1", 10}, {"b", "t2", 4}} {
		msg, err := c.ManifestMsg(flashpipe.Manifest{BatchID: b.id, Count: b.n, ContentHash: b.id, Tenant: b.tenant})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		for seq := 1; seq <= b.n; seq++ {
			if err := led.SetAside(ctx, b.id, seq, 0, c.ReadySubject(b.id, seq), nil, []byte(fmt.Sprint(seq))); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.refreshHeld(ctx, nil)
	st, err := js.Stream(ctx, c.ReadyStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.ReadySubject("b", 0)[:len(c.ReadySubject("b", 0))-1]+">"))
	if err != nil {
		t.Fatal(err)
	}
	all, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ofB := 0
	for _, n := range info.State.Subjects {
		ofB += int(n)
	}
	if all.State.Msgs != 5 || ofB > 1 {
		t.Errorf("%d items published again, %d of tenant t2; want 5 (the room left), at most 1 of t2 (its cap)", all.State.Msgs, ofB)
	}
	left, _ := led.HeldCounts(ctx)
	if left["a"]+left["b"] != 9 {
		t.Errorf("still set aside: %v; want the 9 not published", left)
	}
}
