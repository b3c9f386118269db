package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// The retention windows end to end (docs/capacity.md): once a batch's items and
// results have expired, retry still fixes its failed items (from the ordered log, which
// is kept longer), and reprocess is refused with the reason.
func TestRetryAfterItemsAndResultsExpired(t *testing.T) {
	t.Parallel()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:20]
	bad := map[string]int{items[3].Term: 400, items[17].Term: 400}
	p := newPipelineWith(t, apptest.Config{Sim: llmsim.Config{Faults: llmsim.Faults{FailTerms: bad}},
		Contract: contract.Config{ItemsMaxAge: 2 * time.Second, ResultsMaxAge: 2 * time.Second, DuplicateWindow: time.Second}})
	p.startAll()
	p.submit("late", items)
	if st := p.waitStored("late", time.Minute); st.OK != 18 || st.Failed != 2 {
		t.Fatalf("status %+v, want 18 ok and 2 failed", st)
	}
	ctx := context.Background()
	empty := func(stream, subject string) bool {
		st, err := p.js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		return err == nil && len(info.State.Subjects) == 0
	}
	natstest.Eventually(t, 15*time.Second, func() bool {
		return empty(p.c.ItemsStream(), p.c.BatchItems("late")) && empty(p.c.ResultsStream(), p.c.BatchResults("late"))
	}, "the batch's items and results did not expire")

	if _, err := p.pub.Reprocess(ctx, "late"); !errors.Is(err, ingest.ErrItemsExpired) {
		t.Fatalf("reprocess after the items expired: %v, want ErrItemsExpired", err)
	}
	if err := p.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	sub, err := p.pub.Retry(ctx, "late")
	if err != nil || sub.Published != 2 {
		t.Fatalf("retry after the items expired: %+v, %v", sub, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if st, err := app.WaitStored(wctx, p.store, "late", 1); err != nil || st.OK != 20 {
		t.Fatalf("after retry: %+v, %v; want 20 ok", st, err)
	}
	checkStored(t, p.results("late"), items, 3)
}
