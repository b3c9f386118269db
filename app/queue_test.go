package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func items(prefix string, n int) []flashpipe.Item {
	out := make([]flashpipe.Item, n)
	for i := range out {
		out[i] = flashpipe.Item{Position: int64(i + 1), Term: fmt.Sprintf("%s%d", prefix, i+1), Type: "noun"}
	}
	return out
}

// The queue shows every batch from the moment the scheduler takes it: by tenant, a
// tenant's batches in the order they are served, what is dispatched, what the
// processors hold and what waits ahead of a batch.
func TestQueueShowsTenantsAndPlaces(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	// No processor: the ready stream fills to the window (2) and stays so.
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{Window: 2}})
	ctx := context.Background()
	for _, b := range []ingest.Batch{
		{ID: "a-low", Tenant: "a", Items: ingest.SliceItems(items("낮은", 10))},
		{ID: "a-high", Tenant: "a", Priority: 5, Items: ingest.SliceItems(items("높은", 6))},
		{ID: "b-one", Tenant: "b", Items: ingest.SliceItems(items("비", 4))},
	} {
		if _, err := p.Client.Submit(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	var q *app.Queue
	natstest.Eventually(t, 20*time.Second, func() bool {
		var err error
		q, err = p.Client.Queue(ctx)
		if err != nil || len(q.Batches) != 3 {
			return false
		}
		in, dispatched := 0, 0
		for _, b := range q.Batches {
			in, dispatched = in+b.InProcessors, dispatched+b.Dispatched
		}
		return in == 2 && dispatched == 2 // the cursors are written every FlushInterval
	}, "the queue never showed the three batches with the window full")

	want := []struct {
		id, tenant string
		ahead      func(q *app.Queue) int
	}{
		{"a-high", "a", func(*app.Queue) int { return 0 }},
		{"a-low", "a", func(q *app.Queue) int { return q.Batches[0].Waiting }},
		{"b-one", "b", func(*app.Queue) int { return 0 }},
	}
	for i, w := range want {
		b := q.Batches[i]
		if b.BatchID != w.id || b.Tenant != w.tenant || b.Ahead != w.ahead(q) || b.Dispatched+b.Waiting != b.Items || b.Admitted.IsZero() {
			t.Errorf("queue[%d] = %+v; want %s of tenant %s, %d items ahead", i, b, w.id, w.tenant, w.ahead(q))
		}
	}
	if len(q.Tenants) != 2 || q.Tenants[0].Tenant != "a" || q.Tenants[0].Batches != 2 || q.Tenants[1].Batches != 1 ||
		q.Tenants[0].Waiting+q.Tenants[1].Waiting+2 != 20 {
		t.Errorf("tenants %+v; want a with 2 batches, b with 1, 18 items waiting in all", q.Tenants)
	}
}
