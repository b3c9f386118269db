package main

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
)

// The summaries of `retry --wait` and `reprocess --wait` count the API calls, cache
// hits and cost of their own generation only, not the generations before it (the
// simulator counts the calls each command caused), and report a rate over their own
// time, never 0 items/s.
func TestRetryAndReprocessSummariesCountTheirGenerationOnly(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{Sim: llmsim.Config{Faults: llmsim.Faults{FailTerms: map[string]int{"그": 400}}}})
	p.startAll()
	items := loadItems(t, "../../examples/test_5_words.csv")
	p.submit("gens", items)
	first := p.waitStored("gens", time.Minute)
	gen0Calls := p.sim.Stats().Requests
	if first.Failed != 1 || first.OK != 4 || gen0Calls < 9 {
		t.Fatalf("generation 0: %d ok, %d failed, %d API calls; want 4, 1 and at least 9", first.OK, first.Failed, gen0Calls)
	}
	if err := p.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	follow := func(command string) app.Summary {
		t.Helper()
		before := p.sim.Stats().Requests
		out := runOK(t, dir, command, "--batch", "gens", "--nats-url", p.URL, "--prefix", p.c.Prefix(),
			"--wait", "--json", "--quiet", "-o", filepath.Join(dir, command+".tsv"))
		var sum app.Summary
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("%s: summary %q: %v", command, out, err)
		}
		calls := p.sim.Stats().Requests - before
		if int64(sum.APICalls.Total) != calls || sum.APICalls.Total != sum.APICalls.Stage1+sum.APICalls.Stage2 {
			t.Errorf("%s: the summary counts %+v API calls; the simulator answered %d during the command", command, sum.APICalls, calls)
		}
		if sum.ItemsPerSecond <= 0 || sum.Elapsed <= 0 {
			t.Errorf("%s: %.2f items/s over %.3f s, want a rate above 0", command, sum.ItemsPerSecond, sum.Elapsed)
		}
		if sum.OK != len(items) || sum.Failed != 0 {
			t.Errorf("%s: %d ok, %d failed; want %d and 0", command, sum.OK, sum.Failed, len(items))
		}
		return sum
	}

	// The retry runs the one failed item: two calls, not generation 0's as well.
	retry := follow("retry")
	if retry.APICalls.Stage1 != 1 || retry.APICalls.Stage2 != 1 {
		t.Errorf("retry: API calls %+v, want the failed item's two", retry.APICalls)
	}
	// The reprocess runs every item again; the cache answers what was paid for, and
	// the summary counts this generation's two answers per item, paid or cached.
	reprocess := follow("reprocess")
	t.Logf("generation 0: %d API calls; retry: %+v; reprocess: %+v and %d cache hits", gen0Calls, retry.APICalls, reprocess.APICalls, reprocess.CacheHits)
	if got := reprocess.APICalls.Total + reprocess.CacheHits; got != 2*len(items) {
		t.Errorf("reprocess: %d calls + %d cache hits, want %d (two answers per item of this generation)",
			reprocess.APICalls.Total, reprocess.CacheHits, 2*len(items))
	}
}
