package app

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/scheduler"
)

// QueuedBatch is a batch generation the scheduler is dispatching: how much of it is
// dispatched, how much the processors hold, and what is served before it.
type QueuedBatch struct {
	BatchID    string `json:"batch_id"`
	Generation int    `json:"generation"`
	Tenant     string `json:"tenant"`
	Priority   int    `json:"priority"`
	// Items is the generation's items; Dispatched how many went to the processors (or
	// failed in place); Waiting the rest.
	Items      int `json:"items"`
	Dispatched int `json:"dispatched"`
	Waiting    int `json:"waiting"`
	// InProcessors is its items dispatched and not yet done (waiting for a processor
	// or held by one).
	InProcessors int `json:"in_processors"`
	// Ahead is the items of its tenant's batches of a higher priority still to
	// dispatch: zero means it is being served now (its tenant's batches of equal
	// priority share the turns).
	Ahead int `json:"ahead"`
	// Admitted is when the scheduler took it; MissingSince, when set, since when its
	// next item has not been published.
	Admitted     time.Time  `json:"admitted"`
	MissingSince *time.Time `json:"missing_since,omitempty"`
}

// TenantQueue is a tenant's work in the queue.
type TenantQueue struct {
	Tenant       string `json:"tenant"`
	Batches      int    `json:"batches"`
	Waiting      int    `json:"waiting"`
	InProcessors int    `json:"in_processors"`
}

// Queue is the work the processors have ahead of them, by tenant and by batch.
type Queue struct {
	Tenants []TenantQueue `json:"tenants"`
	Batches []QueuedBatch `json:"batches"`
}

// Queue reads the scheduler's queue: the batches being dispatched (from the moment
// their manifest is taken, usually milliseconds after the submit) with their items
// waiting and at the processors, by tenant (tenants by name, a tenant's batches in
// the order they are served). A batch leaves the queue once its last item is
// dispatched; the store's status of the batch shows the rest of its progress.
func (c *Client) Queue(ctx context.Context) (*Queue, error) {
	entries, err := scheduler.List(ctx, c.js, c.c)
	if err != nil {
		return nil, err
	}
	inReady, err := c.readyByBatch(ctx)
	if err != nil {
		return nil, err
	}
	q := &Queue{Tenants: []TenantQueue{}, Batches: make([]QueuedBatch, 0, len(entries))}
	for _, e := range entries {
		m := e.Manifest
		n := m.Expected()
		q.Batches = append(q.Batches, QueuedBatch{
			BatchID: m.BatchID, Generation: m.Generation, Tenant: m.Tenant, Priority: m.Priority,
			Items: n, Dispatched: e.Next, Waiting: max(0, n-e.Next), InProcessors: inReady[m.BatchID],
			Admitted: e.Admitted, MissingSince: e.MissingSince,
		})
	}
	slices.SortFunc(q.Batches, func(a, b QueuedBatch) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(b.Priority, a.Priority), a.Admitted.Compare(b.Admitted),
			cmp.Compare(a.BatchID, b.BatchID), cmp.Compare(a.Generation, b.Generation))
	})
	// Ahead: the waiting items of the same tenant's higher priorities.
	for i := 0; i < len(q.Batches); {
		tenant := q.Batches[i].Tenant
		tq := TenantQueue{Tenant: tenant}
		higher, level, levelPrio := 0, 0, q.Batches[i].Priority
		for ; i < len(q.Batches) && q.Batches[i].Tenant == tenant; i++ {
			b := &q.Batches[i]
			if b.Priority != levelPrio {
				higher, level, levelPrio = higher+level, 0, b.Priority
			}
			b.Ahead = higher
			level += b.Waiting
			tq.Batches++
			tq.Waiting += b.Waiting
			tq.InProcessors += b.InProcessors
		}
		q.Tenants = append(q.Tenants, tq)
	}
	return q, nil
}

// readyByBatch counts the items in the ready stream by batch.
func (c *Client) readyByBatch(ctx context.Context) (map[string]int, error) {
	st, err := c.js.Stream(ctx, c.c.ReadyStream())
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.c.AllReady()))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for subject, n := range info.State.Subjects {
		if batch, _, ok := c.c.SubjectKeys(subject); ok {
			out[batch] += int(n)
		}
	}
	return out, nil
}
