package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// batchRun is what one run of a batch reported.
type batchRun struct {
	tsv       string
	cost      float64 // the results' usage: what flashpipe says it paid
	sim       llmsim.Stats
	batches   llmsim.BatchStats
	providers []processor.ProviderBatch
}

// runMode runs items as one batch in mode on a pipeline of its own (a fresh cache)
// and returns its TSV and what it cost.
func runMode(t *testing.T, mode string, items []flashpipe.Item, sim llmsim.Config, pcfg processor.Config) batchRun {
	t.Helper()
	p := newPipelineWith(t, apptest.Config{SQLite: true, Sim: sim})
	p.startProcessor(pcfg)
	// The scheduler keeps a window of items ahead of the processors: as many as a
	// provider batch holds, so one batch gathers the whole list.
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{Window: 2 * pcfg.ConcurrentMax}})
	p.startSink(sink.Config{})
	ctx := context.Background()
	if _, err := p.pub.Submit(ctx, ingest.Batch{ID: "vocab", Source: "test", Items: ingest.SliceItems(items),
		Settings: map[string]string{flashpipe.SettingAPIMode: mode}}); err != nil {
		t.Fatal(err)
	}
	p.waitStored("vocab", 3*time.Minute)
	var out batchRun
	var buf bytes.Buffer
	tsv := export.NewTSV(&buf)
	if err := p.store.Results(ctx, "vocab", flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		if r.Status != flashpipe.StatusOK {
			t.Errorf("%s mode: item %d failed: %+v", mode, r.Position, r.Failure)
		}
		out.cost += r.Usage.Cost
		return tsv.Write(r)
	}); err != nil {
		t.Fatal(err)
	}
	if err := tsv.Close(); err != nil {
		t.Fatal(err)
	}
	out.tsv, out.sim, out.batches = buf.String(), p.sim.Stats(), p.sim.BatchStats()
	var err error
	if out.providers, err = processor.ListProviderBatches(ctx, p.js, p.c, "vocab"); err != nil {
		t.Fatal(err)
	}
	return out
}

// batchProcessor is a processor configuration for batch mode in tests: a provider
// batch holds the whole list, gathered for at most 3 s, polled every 50 ms.
func batchProcessor(n int) processor.Config {
	return processor.Config{ConcurrentMax: n, Batch: processor.BatchConfig{Size: n, Wait: 3 * time.Second, PollInterval: 50 * time.Millisecond,
		SubmitTimeout: 2 * time.Second, ClaimGrace: 5 * time.Second}}
}

// TestRunBatchModeSameTSVHalfThePrice: the 1,000-item list in batch mode gives the
// same TSV as in sync mode, at half the cost at the simulator's prices, and no
// provider batch is submitted twice.
func TestRunBatchModeSameTSVHalfThePrice(t *testing.T) {
	items := loadItems(t, "../../examples/vocabulary_1000.csv")
	sim := llmsim.Config{Batch: llmsim.BatchConfig{Delay: 300 * time.Millisecond}}
	start := time.Now()
	syncRun := runMode(t, flashpipe.APIModeSync, items, sim, processor.Config{ConcurrentMax: processor.DefaultConcurrentMax})
	syncTime := time.Since(start)
	start = time.Now()
	batchRun := runMode(t, flashpipe.APIModeBatch, items, sim, batchProcessor(len(items)))
	batchTime := time.Since(start)

	if syncRun.tsv != batchRun.tsv {
		t.Fatalf("batch mode TSV (%d bytes) differs from sync mode TSV (%d bytes)", len(batchRun.tsv), len(syncRun.tsv))
	}
	checkTSV(t, batchRun.tsv, items, 3)
	if n := batchRun.sim.Stage1Calls + batchRun.sim.Stage2Calls; n != 0 {
		t.Errorf("batch mode made %d sync calls, want 0", n)
	}
	if b := batchRun.batches; b.DuplicateKeys != 0 || b.Answered != int64(2*len(items)) {
		t.Errorf("provider batches: %+v; want every request answered once, no key submitted twice", b)
	}
	per1000 := func(c float64) float64 { return c * 1000 / float64(len(items)) }
	// The simulator's bill is the truth; the results' usage is what flashpipe reports
	// (an item delivered twice while its first delivery still ran reports its
	// answers as cache hits, so the reported total may fall short, never above).
	ratio := batchRun.sim.Cost / syncRun.sim.Cost
	t.Logf("cost per 1,000 items: sync $%.4f, batch $%.4f (%.3f×); simulator billed sync $%.4f, batch $%.4f",
		per1000(syncRun.cost), per1000(batchRun.cost), ratio, per1000(syncRun.sim.Cost), per1000(batchRun.sim.Cost))
	t.Logf("provider batches per 1,000 items: %.1f (%d for %d items); wall time sync %s, batch %s",
		float64(batchRun.batches.Submitted)*1000/float64(len(items)), batchRun.batches.Submitted, len(items),
		syncTime.Round(10*time.Millisecond), batchTime.Round(10*time.Millisecond))
	t.Logf("paid requests: sync %d calls, batch %d requests", syncRun.sim.Stage1Calls+syncRun.sim.Stage2Calls, batchRun.batches.Answered)
	if ratio < 0.499 || ratio > 0.501 {
		t.Errorf("batch mode cost %.4f× sync mode, want 0.5×", ratio)
	}
	if batchRun.cost > batchRun.sim.Cost+1e-6 || batchRun.cost < 0.99*batchRun.sim.Cost {
		t.Errorf("results say $%.6f, the simulator billed $%.6f", batchRun.cost, batchRun.sim.Cost)
	}
	if len(batchRun.providers) != int(batchRun.batches.Submitted) {
		t.Errorf("%d provider batches recorded for the batch, the simulator saw %d", len(batchRun.providers), batchRun.batches.Submitted)
	}
	for _, pb := range batchRun.providers {
		if pb.State != processor.RecordDone || pb.ProviderID == "" || pb.Total == 0 {
			t.Errorf("provider batch %+v: want done with its id and counts", pb)
		}
	}
}

// TestBatchModePartialFailureRetriesOnlyTheFailed: requests that fail inside a
// provider batch are retried in a new batch with only them; every answer is paid once.
func TestBatchModePartialFailureRetriesOnlyTheFailed(t *testing.T) {
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:100]
	r := runMode(t, flashpipe.APIModeBatch, items, llmsim.Config{Batch: llmsim.BatchConfig{FailRate: 0.3}}, batchProcessor(len(items)))
	checkTSV(t, r.tsv, items, 3)
	b, sync := r.batches, r.sim.Stage1Calls+r.sim.Stage2Calls
	t.Logf("provider batches %d, requests sent %d, failed in a batch %d, billed %d, sync calls %d", b.Submitted, b.Requests, b.Failed, b.Answered, sync)
	if b.Failed == 0 || b.Submitted <= 2 {
		t.Fatalf("no request failed or none was retried: %+v", b)
	}
	if b.Answered+sync != int64(2*len(items)) {
		t.Errorf("%d answers paid (%d in batches, %d sync), want %d", b.Answered+sync, b.Answered, sync, 2*len(items))
	}
	// Each request is sent once, and again only after it failed (the failures after
	// the last retry go to the sync API instead).
	if want := int64(2*len(items)) + b.Failed - sync; b.Requests != want {
		t.Errorf("%d requests sent in batches, want %d (each once, plus once per failure retried)", b.Requests, want)
	}
	retries := 0
	for _, pb := range r.providers {
		if pb.Parent != "" {
			retries++
			if pb.Attempt < 1 || pb.Total == 0 {
				t.Errorf("retry batch %+v: want its attempt and only the failed requests", pb)
			}
		}
	}
	if retries == 0 {
		t.Errorf("no retry batch recorded: %+v", r.providers)
	}
}

// TestBatchModeExpiryFallsBackToSync: an expired provider batch's answered requests
// are used, the rest go to the sync API; a cancelled one sends all its requests there.
func TestBatchModeExpiryFallsBackToSync(t *testing.T) {
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:60]
	r := runMode(t, flashpipe.APIModeBatch, items, llmsim.Config{Batch: llmsim.BatchConfig{ExpireRate: 1}}, batchProcessor(len(items)))
	checkTSV(t, r.tsv, items, 3)
	b, sync := r.batches, r.sim.Stage1Calls+r.sim.Stage2Calls
	t.Logf("expired: provider batches %d, billed %d, unanswered %d, sync calls %d", b.Submitted, b.Answered, b.Unanswered, sync)
	if b.Unanswered == 0 || sync != b.Unanswered || b.Answered+sync != int64(2*len(items)) {
		t.Errorf("want the unanswered requests (%d) and only them sent sync (%d calls), every answer paid once (%d+%d of %d)",
			b.Unanswered, sync, b.Answered, sync, 2*len(items))
	}
	if b.DuplicateKeys != 0 {
		t.Errorf("%d batches submitted twice", b.DuplicateKeys)
	}
}

func TestStatusShowsProviderBatches(t *testing.T) {
	now := time.Now().UTC()
	var buf bytes.Buffer
	printProviderBatches(&buf, []processor.ProviderBatch{
		{Key: "fpa", ProviderID: "batch_1", Stage: 1, State: processor.RecordSubmitted, ProviderState: "in_progress", Total: 1000, Completed: 400, CreatedAt: now.Add(-time.Hour)},
		{Key: "fpb", ProviderID: "batch_0", Stage: 1, State: processor.RecordDone, ProviderState: "completed", Total: 10, Completed: 10, CreatedAt: now.Add(-2 * time.Hour), Outcome: "completed: 10 answered"},
	}, "")
	out := buf.String()
	for _, want := range []string{"1 unfinished, 2 in all", "batch_1", "submitted (in_progress)", "1000", "400", "1h0m0s", "completed: 10 answered"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// TestBatchModeHeldAtTheCapThenResumed: a batch-mode batch whose cap cannot hold its
// provider batch's worst case (at the batch price) sends only the requests whose worst
// cases fit and never pays past its cap, its other items held (set aside, freeing
// their consumer slots); raised, it completes,
// and what the ledger settled is what the simulator billed.
func TestBatchModeHeldAtTheCapThenResumed(t *testing.T) {
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:50]
	p := newPipelineWith(t, apptest.Config{SQLite: true})
	pcfg := batchProcessor(len(items))
	pcfg.Batch.Wait, pcfg.Batch.ClaimGrace = 300*time.Millisecond, time.Second
	p.startProcessor(pcfg)
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{Window: 2 * len(items)}})
	p.startSink(sink.Config{})
	ctx := context.Background()
	if _, err := p.pub.Submit(ctx, ingest.Batch{ID: "capped", Source: "test", Items: ingest.SliceItems(items),
		Settings: map[string]string{flashpipe.SettingAPIMode: flashpipe.APIModeBatch, flashpipe.SettingMaxCost: "0.05"}}); err != nil {
		t.Fatal(err)
	}
	// Held: several gathering rounds go by, never more than the cap is paid.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if billed := p.sim.Stats().Cost; billed > 0.05 {
			t.Fatalf("billed $%.4f past the cap of $0.05 (%+v)", billed, p.sim.BatchStats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(p.results("capped")); n == len(items) {
		t.Fatalf("the batch completed under a cap it cannot fit in")
	}
	// The items refused by the cap are set aside (their consumer slots freed for
	// other batches), not left waiting in the processor.
	held := 0
	natstest.Eventually(t, 10*time.Second, func() bool {
		acct, ok, err := p.pub.BatchSpend(ctx, "capped")
		held = acct.ItemsHeld
		return err == nil && ok && held > 0
	}, "no item of the capped batch set aside")
	t.Logf("held at the cap of $0.05: billed $%.4f in %d provider batches, %d items set aside", p.sim.Stats().Cost, p.sim.BatchStats().Submitted, held)
	if _, err := p.pub.SetBatchCap(ctx, "capped", 100); err != nil {
		t.Fatal(err)
	}
	p.waitStored("capped", 2*time.Minute)
	for _, r := range p.results("capped") {
		if r.Status != flashpipe.StatusOK {
			t.Fatalf("item %d: %+v", r.Position, r.Failure)
		}
	}
	acct, ok, err := p.pub.BatchSpend(ctx, "capped")
	if err != nil || !ok {
		t.Fatalf("batch spend: %v %v", ok, err)
	}
	billed := p.sim.Stats().Cost
	t.Logf("after the raise: billed $%.4f in %d provider batches; the ledger settled $%.4f, spent $%.4f", billed, p.sim.BatchStats().Submitted, acct.SettledUSD, acct.SpentUSD)
	if billed > 100 || acct.SettledUSD < billed-1e-6 || acct.SettledUSD > billed+1e-6 {
		t.Errorf("settled $%.6f, billed $%.6f: want them equal, under the cap", acct.SettledUSD, billed)
	}
}
