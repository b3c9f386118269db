package app_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// startCapped starts n processor services (each its own process's worth: client,
// ledger, prices from the simulator's model list) that look at a cap again every
// 100 ms, plus a sequencer and a sink.
func startCapped(p *apptest.Pipeline, n int, spend app.SpendSettings) {
	for range n {
		cfg := p.ProcessorConfig(processor.Config{CapDelay: 100 * time.Millisecond, ConcurrentMax: 20})
		cfg.Spend = spend
		p.StartProcessor(cfg)
	}
	p.StartSequencer(app.SequencerSettings{})
	p.StartSink(app.SinkSettings{})
}

// waitSpendPaused waits until account() is paused with nothing held and the
// simulator's bill has not moved for a second.
func waitSpendPaused(t *testing.T, p *apptest.Pipeline, account func() (app.SpendAccount, bool, error)) app.SpendAccount {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	lastCost, stable := -1.0, 0
	for time.Now().Before(deadline) {
		a, ok, err := account()
		cost := p.Sim.Stats().Cost
		if err == nil && ok && a.Paused && a.HeldUSD == 0 && cost == lastCost {
			if stable++; stable >= 5 {
				return a
			}
		} else {
			stable = 0
		}
		lastCost = cost
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("no pause at the spend cap within 30s")
	return app.SpendAccount{}
}

// A batch submitted with max_cost pauses at its cap: items held, none failed, nothing
// billed past the cap, the progress says why and how to go on; raising the cap with
// the client (what `flashpipe cap set` calls) resumes it to the end.
func TestPausedBatchResumesWhenTheCapIsRaised(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	startCapped(p, 2, app.SpendSettings{})
	ctx := context.Background()
	const capUSD, n = 0.15, 40
	if _, err := p.Client.Submit(ctx, ingest.Batch{ID: "capped", Items: ingest.SliceItems(items("돈", n)),
		Settings: map[string]string{flashpipe.SettingMaxCost: "0.15"}}); err != nil {
		t.Fatal(err)
	}
	m, err := p.Client.Manifest(ctx, "capped")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reasons []string
	followed := make(chan error, 1)
	go func() {
		_, err := p.Client.Follow(ctx, m, app.FollowOptions{OnProgress: func(pr app.Progress) {
			mu.Lock()
			defer mu.Unlock()
			if pr.Paused != "" && (len(reasons) == 0 || reasons[len(reasons)-1] != pr.Paused) {
				reasons = append(reasons, pr.Paused)
			}
		}})
		followed <- err
	}()
	a := waitSpendPaused(t, p, func() (app.SpendAccount, bool, error) { return p.Client.BatchSpend(ctx, "capped") })
	billed := p.Sim.Stats().Cost
	t.Logf("paused: %s; the simulator billed $%.6f", a, billed)
	if billed > capUSD || a.SpentUSD > capUSD || a.SettledUSD < billed-1e-6 {
		t.Fatalf("billed $%.6f, settled $%.6f, cap $%.2f", billed, a.SettledUSD, capUSD)
	}
	if want := "paused: spend cap $0.15 reached, spent $"; !strings.HasPrefix(a.Reason(), want) || !strings.Contains(a.Reason(), "flashpipe cap set --batch capped --max-cost N") {
		t.Fatalf("reason %q", a.Reason())
	}
	st, err := p.Client.Store().Batch(ctx, "capped")
	if err == nil && (st.Failed != 0 || st.State == flashpipe.BatchComplete) {
		t.Fatalf("while paused: %+v", st)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reasons) > 0 && reasons[0] == a.Reason()
	}, "the progress never said the batch was paused")

	if _, err := p.Client.SetBatchCap(ctx, "capped", 50); err != nil {
		t.Fatal(err)
	}
	st = p.WaitStored("capped", 0, time.Minute)
	if st.OK != n || st.Failed != 0 {
		t.Fatalf("after raising the cap: %d ok, %d failed of %d", st.OK, st.Failed, n)
	}
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	if a, _, _ := p.Client.BatchSpend(ctx, "capped"); a.Paused || a.CapBy != "command" || a.SpentUSD > 50 {
		t.Fatalf("after: %s", a)
	}
	if _, err := p.Client.SetBatchCap(ctx, "nosuch", 5); err == nil {
		t.Fatal("a cap set on a batch that does not exist")
	}
}

// The period cap of the processors' flags holds across replicas and batches; a
// command raises it, and both batches complete.
func TestPeriodCapSharedByProcessors(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	const capUSD = 0.2
	startCapped(p, 2, app.SpendSettings{PeriodCapUSD: capUSD, Period: 24 * time.Hour})
	p.Submit("one", items("하나", 30))
	p.Submit("two", items("둘", 30))
	ctx := context.Background()
	a := waitSpendPaused(t, p, func() (app.SpendAccount, bool, error) { return p.Client.PeriodSpend(ctx) })
	billed := p.Sim.Stats().Cost
	t.Logf("paused: %s; the simulator billed $%.6f", a, billed)
	if billed > capUSD || a.CapBy != "flag" || !strings.Contains(a.Reason(), "flashpipe cap set --period") {
		t.Fatalf("billed $%.6f over the period cap $%.2f, or %s", billed, capUSD, a)
	}
	if _, err := p.Client.SetPeriodCap(ctx, 100, 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"one", "two"} {
		if st := p.WaitStored(id, 0, time.Minute); st.OK != 30 {
			t.Fatalf("batch %s: %d ok of 30", id, st.OK)
		}
	}
}

// A max_cost that is not a positive amount is refused at the door, naming it.
func TestBadMaxCostRefused(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	for _, v := range []string{"-1", "0", "abc", "NaN", "1e12"} {
		_, err := p.Client.Submit(context.Background(), ingest.Batch{ID: "bad", Items: ingest.SliceItems(items("x", 1)),
			Settings: map[string]string{flashpipe.SettingMaxCost: v}})
		if err == nil || !strings.Contains(err.Error(), "max_cost") {
			t.Fatalf("max_cost %q: %v", v, err)
		}
	}
}

// A batch paused at its cap holds its items in the ready stream; another batch
// submitted after it still runs to the end (the held items do not fill the
// scheduler's window, and no more of the paused batch is dispatched).
func TestPausedBatchDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	for range 2 {
		cfg := p.ProcessorConfig(processor.Config{CapDelay: time.Second, ConcurrentMax: 4})
		p.StartProcessor(cfg)
	}
	p.StartSequencer(app.SequencerSettings{})
	p.StartSink(app.SinkSettings{})
	ctx := context.Background()
	if _, err := p.Client.Submit(ctx, ingest.Batch{ID: "paused", Items: ingest.SliceItems(items("멈춤", 120)),
		Settings: map[string]string{flashpipe.SettingMaxCost: "0.1"}}); err != nil {
		t.Fatal(err)
	}
	waitSpendPaused(t, p, func() (app.SpendAccount, bool, error) { return p.Client.BatchSpend(ctx, "paused") })
	p.Submit("other", items("다른", 30))
	if st := p.WaitStored("other", 0, time.Minute); st.OK != 30 {
		t.Fatalf("the other batch: %d ok of 30", st.OK)
	}
	if a, _, _ := p.Client.BatchSpend(ctx, "paused"); !a.Paused || a.SpentUSD > 0.1 {
		t.Fatalf("the paused batch: %s", a)
	}
}

// A cap set on a batch that ran without one counts what the batch already spent
// (its results' cost), once: a cap below it leaves nothing to spend.
func TestCapSetLateCountsWhatTheBatchSpent(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	startCapped(p, 1, app.SpendSettings{})
	ctx := context.Background()
	const n = 10
	if _, err := p.Client.Submit(ctx, ingest.Batch{ID: "late", Items: ingest.SliceItems(items("늦", n))}); err != nil {
		t.Fatal(err)
	}
	st := p.WaitStored("late", 0, time.Minute)
	billed := p.Sim.Stats().Cost
	if st.OK != n || billed == 0 {
		t.Fatalf("uncapped run: %+v, billed $%.6f", st, billed)
	}
	a, err := p.Client.SetBatchCap(ctx, "late", billed/2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the batch cost $%.6f before its cap: %s", billed, a)
	if d := a.BeforeCapUSD - billed; d > 1e-6 || d < -1e-6 || a.SpentUSD < billed-1e-6 {
		t.Fatalf("cap set after $%.6f was spent: spent $%.6f, before the cap $%.6f", billed, a.SpentUSD, a.BeforeCapUSD)
	}
	// Raising it again does not count the earlier spend twice.
	if a2, err := p.Client.SetBatchCap(ctx, "late", billed*3); err != nil || a2.SpentUSD != a.SpentUSD {
		t.Fatalf("raised: %+v, %v; want spent $%.6f as before", a2, err, a.SpentUSD)
	}
}

// A batch published straight into NATS (the wire contract, no flashpipe submit) with
// max_cost in its manifest is capped too: the scheduler records the cap before it
// dispatches any item, so the batch pauses at it and nothing is billed past it.
func TestMaxCostOfADirectPublishIsACap(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	startCapped(p, 1, app.SpendSettings{})
	ctx := context.Background()
	const capUSD, n = 0.1, 30
	its := items("직", n)
	m := flashpipe.Manifest{BatchID: "direct", Count: n, Source: "nats", ContentHash: flashpipe.HashItems(its),
		Settings: map[string]string{flashpipe.SettingMaxCost: "0.1"}, CreatedAt: time.Now().UTC()}
	msg, err := p.Contract.ManifestMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for i, it := range its {
		msg, err := p.Contract.ItemMsg(flashpipe.WorkItem{BatchID: "direct", Seq: i + 1, Item: it})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	a := waitSpendPaused(t, p, func() (app.SpendAccount, bool, error) { return p.Client.BatchSpend(ctx, "direct") })
	if billed := p.Sim.Stats().Cost; billed > capUSD || a.CapUSD != capUSD || a.CapBy != "manifest" {
		t.Fatalf("billed $%.6f; account %s; want a $%.2f cap from the manifest, not passed", billed, a, capUSD)
	}
}
