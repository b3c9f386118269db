package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// suiteParams sizes the suite: the short form (default) or the long one (-tags chaos).
type suiteParams struct {
	long   bool
	trials int

	processorItems, processorKills int
	processorLatency               time.Duration
	sequencerItems, sequencerKills int
	sequencerLatency               time.Duration
	sinkItems, sinkKills           int
	sinkLatency                    time.Duration
	natsItems, natsRestarts        int
	natsLatency                    time.Duration
	// natsDown is the longest a NATS restart keeps the server down (at least
	// minNATSDowntime); past 10 s, the services' JetStream requests time out.
	natsDown            time.Duration
	pgItems, pgOutages  int
	pgLatency, pgOutage time.Duration
	// fairItems are split between the batches of two tenants (fair_processor_kill),
	// run at processorLatency.
	fairItems, fairKills int
}

// Kill moments are drawn in this part of a batch's progress, so that every fault
// strikes while the batch is under way and some work is left for the restarted
// service.
const (
	faultFrom = 0.05
	faultTo   = 0.80
	// natsFaultTo ends the part of the batch where NATS restarts strike. A restart
	// stalls the items in flight for a few seconds (a JetStream request lost with the
	// connection waits out its timeout, then the item waits the requeue delay), so the
	// batch must still have work for the processor after each stall.
	natsFaultTo = 0.40
)

// Bounds on recovery, besides the processor's (its ack wait): how long after a kill
// the sequencer's lease may take to pass to its restarted process, and how long the
// sink or the pipeline after a NATS restart may take to write again. They include
// the start of a process on a loaded machine.
const (
	restartSlack = 5 * time.Second
	// sequencerRecovery: the dead sequencer's manifest comes back LeaseTTL after its
	// last renewal, and a replica finding the lease still held naks the manifest
	// until the lease would expire; so the batch changes hands about LeaseTTL after
	// the kill. Measured: about 2.1 s.
	sequencerRecovery = leaseTTL + restartSlack
	sinkRecovery      = 10 * time.Second
	natsRecovery      = 30 * time.Second
	postgresRecovery  = sink.DefaultBackoffMax + restartSlack
	outageSettle      = time.Second // a write in flight when the proxy is cut may still land
	takeoverJitter    = 15 * time.Millisecond
	killJitter        = 30 * time.Millisecond
	minNATSDowntime   = 200 * time.Millisecond
)

// outcome is what one trial of a scenario measured.
type outcome struct {
	env      *env
	scenario string
	trial    int
	items    int
	faults   int
	// recovery is, per fault, the time until the faulty part's work resumed (see
	// each scenario), bounded by recoveryBound.
	recovery      []time.Duration
	recoveryBound time.Duration
	tally
	calls
	// batch is the time from submit to the batch stored complete, drain the part of
	// it after the last fault was over.
	batch, drain time.Duration
	elapsed      time.Duration
}

func (o outcome) String() string {
	return fmt.Sprintf("%s #%d: %d items, %d faults, recovery min/median/max %s (bound %s), "+
		"lost %d, duplicated %d, out of order %d, API calls stage 1 %d stage 2 %d (min %d, bound %d = %d + %dx%d), "+
		"batch stored in %s (%s after the last fault), %s in all",
		o.scenario, o.trial, o.items, o.faults, durations(o.recovery), o.recoveryBound,
		o.lost, o.duplicated, o.outOfOrder, o.stage1, o.stage2, o.calls.min, o.bound, o.items, o.workers,
		o.interruptions, o.batch.Round(100*time.Millisecond), o.drain.Round(100*time.Millisecond), o.elapsed.Round(100*time.Millisecond))
}

type scenario struct {
	name string
	run  func(t *testing.T, rng *rand.Rand, items []flashpipe.Item) outcome
}

// TestChaos runs every scenario (params.trials times each), one after another: each
// runs three service processes and a NATS server, too heavy to overlap on a small
// machine.
func TestChaos(t *testing.T) {
	all := loadItems(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (set CHAOS_SEED to draw the same kill moments)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))

	var outcomes []outcome
	for _, sc := range []scenario{
		{"processor_kill", runProcessorKill},
		{"fair_processor_kill", runFairProcessorKill},
		{"sequencer_kill", runSequencerKill},
		{"sink_kill", runSinkKill},
		{"nats_restart", runNATSRestart},
		{"postgres_outage", runPostgresOutage},
		{"nats_silent_link", runNATSSilentLink},
	} {
		t.Run(sc.name, func(t *testing.T) {
			for trial := 1; trial <= params.trials; trial++ {
				t.Run(strconv.Itoa(trial), func(t *testing.T) {
					start := time.Now()
					o := sc.run(t, rng, all)
					o.scenario, o.trial, o.elapsed = sc.name, trial, time.Since(start)
					if e := o.env; e != nil {
						o.batch, o.drain = e.completed.Sub(e.submitted), e.completed.Sub(e.lastFault)
					}
					t.Logf("summary: %s", o)
					outcomes = append(outcomes, o)
				})
			}
		})
	}
	if params.long {
		t.Logf("chaos summary:\n%s", table(outcomes))
	}
}

func loadItems(t *testing.T) []flashpipe.Item {
	t.Helper()
	parsed, err := ingest.ParseFile("../../examples/vocabulary_1000.csv", ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Items
}

// fault is one injected fault.
type fault struct {
	at       time.Time // when it struck (SIGKILL sent, server stopped, proxy cut)
	over     time.Time // when it was over (process reaped, server started, proxy restored)
	progress int       // the progress counter when it struck
	after    int       // the progress counter once the fault had struck (victim gone)
	resumed  time.Duration
}

// killPlan says how to kill a service during a batch.
type killPlan struct {
	svc   *service
	kills int
	// progress counts the batch's progress at the service's stage, out of total.
	progress func() (int, error)
	total    int
	// ready is the log message a restarted process writes before it can make
	// progress (it has started, or taken the batch over).
	ready string
	// atTakeover makes every second kill strike the moment the restarted process
	// logs ready, instead of at a point of progress.
	atTakeover bool
}

// killRestart kills the plan's service with SIGKILL plan.kills times while the batch
// is under way, starting it again with the same arguments right after each kill. The
// moments are random points of the batch's progress, drawn between faultFrom and
// faultTo, each followed by a random 0-30 ms: progress is seen right after a write,
// and the jitter lets the kill land anywhere in the next piece of work (a transaction
// or an append under way). Each kill waits for the previous restart to have made
// progress. resumed is the time from the kill until the restarted process had logged
// ready and the progress counter had moved past where the dead process left it
// (waiting for ready keeps a write the dead process sent just before dying from
// passing for the new process's progress).
//
// With atTakeover, every second kill strikes the moment the restarted process logs
// ready (for the sequencer: it has just taken the batch over and starts catching up),
// a random 0-15 ms later, so that it lands before, during or after the first append
// of the catch-up; the kill before it then has no resumed time of its own (-1).
func killRestart(t *testing.T, e *env, rng *rand.Rand, plan killPlan) []fault {
	t.Helper()
	svc, total := plan.svc, plan.total
	marks := make([]int, plan.kills)
	for i := range marks {
		marks[i] = int(float64(total) * (faultFrom + rng.Float64()*(faultTo-faultFrom)))
	}
	slices.Sort(marks)
	atTakeover := func(i int) bool { return plan.atTakeover && i%2 == 1 }
	var faults []fault
	last, cur := 0, 0
	for i, mark := range marks {
		if atTakeover(i) {
			svc.waitLog(plan.ready, 2*time.Minute)
			time.Sleep(time.Duration(rng.Int64N(int64(takeoverJitter))))
			n, err := plan.progress()
			if err != nil {
				t.Fatalf("%s kill %d: read progress: %v", svc.name, i+1, err)
			}
			cur = n
		} else {
			target := max(mark, last+1)
			waitFor(t, 2*time.Minute, func() bool {
				n, err := plan.progress()
				cur = n
				return err == nil && n >= target
			}, "%s kill %d: progress %d of %d, waiting for %d; %s", svc.name, i+1, cur, total, target, e.progressString())
			// Progress is seen right after a write: a random instant later, the kill
			// may find the service anywhere in its next piece of work.
			time.Sleep(time.Duration(rng.Int64N(int64(killJitter))))
			if n, err := plan.progress(); err == nil {
				cur = n
			}
		}
		if cur >= total {
			t.Fatalf("%s kill %d: the batch was through (%d of %d) before the kill; the scenario is too fast to strike mid-batch",
				svc.name, i+1, cur, total)
		}
		at := svc.kill()
		f := fault{at: at, over: time.Now(), progress: cur, resumed: -1}
		base := 0
		waitFor(t, time.Minute, func() bool {
			n, err := plan.progress()
			base = n
			return err == nil
		}, "%s kill %d: read progress", svc.name, i+1)
		f.after = base
		svc.start()
		e.faultOver(time.Now())
		kind := "at"
		if atTakeover(i) {
			kind = "at takeover,"
		}
		if i+1 < len(marks) && atTakeover(i+1) {
			t.Logf("%s kill %d %s %d of %d: reaped after %s, restarted", svc.name, i+1, kind, f.progress, total, f.over.Sub(at).Round(time.Millisecond))
			faults = append(faults, f)
			continue
		}
		if base >= total {
			// The dead process's last write landed as it died: nothing was left for
			// its successor, so there is no recovery to time.
			t.Logf("%s kill %d %s %d of %d: its last write completed the stage as it died (%d)", svc.name, i+1, kind, f.progress, total, base)
			faults = append(faults, f)
			continue
		}
		waitFor(t, 2*time.Minute, func() bool {
			n, err := plan.progress()
			cur = n
			return err == nil && (n >= total || n > base && svc.logged(plan.ready))
		}, "%s kill %d: progress to resume after the restart (at %d of %d); %s", svc.name, i+1, base, total, e.progressString())
		f.resumed = time.Since(at)
		t.Logf("%s kill %d %s %d of %d: reaped after %s, restarted, progress again %s after the kill (%d -> %d)",
			svc.name, i+1, kind, f.progress, total, f.over.Sub(at).Round(time.Millisecond), f.resumed.Round(time.Millisecond), base, cur)
		last = cur
		faults = append(faults, f)
	}
	return faults
}

// Kill -9 the processor at random moments of a batch and restart it each time. Results
// must resume within the ack wait: the restarted processor is handed fresh items at
// once, and the dead one's items are redelivered after the ack wait. Each kill may
// waste at most one paid call per worker.
func runProcessorKill(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.processorItems]
	e := newEnv(t, envConfig{latency: params.processorLatency})
	e.startServices()
	e.submit(items)
	faults := killRestart(t, e, rng, killPlan{svc: e.processor, kills: params.processorKills,
		progress: e.results, total: len(items), ready: `"msg":"processor started"`})
	o := outcome{env: e, items: len(items), faults: len(faults), recoveryBound: ackWait}
	o.tally, o.calls = e.checkPromises(len(faults))

	// Results resumed when the first result finished by a process started after the
	// kill was stored: exact, from the results stream itself.
	stored, processed := e.resultTimes()
	for i, f := range faults {
		if f.after >= len(items) {
			continue // the dead processor's last result completed the batch
		}
		var first time.Time
		for j := range stored {
			if processed[j].After(f.over) && (first.IsZero() || stored[j].Before(first)) {
				first = stored[j]
			}
		}
		if first.IsZero() {
			t.Errorf("kill %d at %s: no result was finished after it", i+1, f.at.Format(time.RFC3339Nano))
			continue
		}
		d := first.Sub(f.at)
		t.Logf("processor kill %d: the first result finished by its successor was stored %s after the kill", i+1, d.Round(time.Millisecond))
		o.recovery = append(o.recovery, d)
		if d > ackWait {
			t.Errorf("kill %d (at %d results): results resumed %s after it, later than the ack wait %s", i+1, f.progress, d, ackWait)
		}
	}
	return o
}

// Kill -9 the processor at random moments while the scheduler shares it between
// three batches of two tenants (one tenant's big batch; the other's two, one of a
// higher priority), restarting it each time. Nothing is lost or doubled in any batch,
// and the API calls stay within the items plus one per worker per kill: fair
// dispatch adds no paid call.
func runFairProcessorKill(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.fairItems]
	n := len(items)
	big, small := n*3/5, n/5
	e := newEnv(t, envConfig{latency: params.processorLatency})
	e.startServices()
	e.submitBatches(
		chaosBatch{id: batchID, tenant: "a", items: items[:big]},
		chaosBatch{id: "chaos-b1", tenant: "b", items: items[big : big+small]},
		chaosBatch{id: "chaos-b2", tenant: "b", priority: 1, items: items[big+small:]},
	)
	faults := killRestart(t, e, rng, killPlan{svc: e.processor, kills: params.fairKills,
		progress: e.results, total: n, ready: `"msg":"processor started"`})
	o := outcome{env: e, items: n, faults: len(faults), recoveryBound: ackWait}
	o.tally, o.calls = e.checkPromises(len(faults))
	for i, f := range faults {
		if f.resumed < 0 {
			continue
		}
		o.recovery = append(o.recovery, f.resumed)
		if f.resumed > ackWait {
			t.Errorf("processor kill %d (at %d results): results resumed %s after it, later than the ack wait %s", i+1, f.progress, f.resumed, ackWait)
		}
	}
	// Nothing stalls after the last kill: the dead processor's items come back after
	// the ack wait, and what is left runs at the pace of the batch.
	if drain, bound := e.completed.Sub(e.lastFault), ackWait+claimTTL+15*time.Second; drain > bound {
		t.Errorf("the batches completed %s after the last kill; want within %s", drain, bound)
	}
	for _, b := range e.batches {
		if st, err := e.store.Batch(context.Background(), b.id); err == nil && st.CompletedAt != nil {
			t.Logf("batch %s (tenant %s, priority %d, %d items) completed %s after the submit",
				b.id, b.tenant, b.priority, len(b.items), st.CompletedAt.Sub(e.submitted).Round(time.Millisecond))
		}
	}
	return o
}

// Kill -9 the sequencer at random moments of a batch (counted in ordered events), and
// every second time right when its restarted process has taken the batch over and
// catches up (appending long runs as atomic batches), and restart it each time. The
// restarted sequencer takes the batch over when the dead one's lease expires and
// continues from the last ordered event.
func runSequencerKill(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.sequencerItems]
	e := newEnv(t, envConfig{latency: params.sequencerLatency})
	e.startServices()
	e.submit(items)
	faults := killRestart(t, e, rng, killPlan{svc: e.sequencer, kills: params.sequencerKills,
		progress: e.ordered, total: len(items) + 2, ready: `"msg":"sequencing batch"`, atTakeover: true})
	o := outcome{env: e, items: len(items), faults: len(faults), recoveryBound: sequencerRecovery}
	o.tally, o.calls = e.checkPromises(0)
	for i, f := range faults {
		if f.resumed < 0 {
			continue // followed by a kill at takeover
		}
		o.recovery = append(o.recovery, f.resumed)
		if f.resumed > sequencerRecovery {
			t.Errorf("sequencer kill %d (at %d ordered events): ordering resumed after %s, want within %s (lease %s)",
				i+1, f.progress, f.resumed, sequencerRecovery, leaseTTL)
		}
	}
	return o
}

// Kill -9 the sink at random moments of a batch (counted in stored rows) and restart
// it each time. What the dead sink had read but not committed is redelivered after
// the sink's ack wait and written once.
func runSinkKill(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.sinkItems]
	e := newEnv(t, envConfig{latency: params.sinkLatency})
	e.startServices()
	e.submit(items)
	faults := killRestart(t, e, rng, killPlan{svc: e.sink, kills: params.sinkKills,
		progress: e.stored, total: len(items), ready: `"msg":"sink started"`})
	o := outcome{env: e, items: len(items), faults: len(faults), recoveryBound: sinkRecovery}
	o.tally, o.calls = e.checkPromises(0)
	for i, f := range faults {
		if f.resumed < 0 {
			continue
		}
		o.recovery = append(o.recovery, f.resumed)
		if f.resumed > sinkRecovery {
			t.Errorf("sink kill %d (at %d rows): writes resumed after %s, want within %s", i+1, f.progress, f.resumed, sinkRecovery)
		}
	}
	return o
}

// Stop the NATS server mid-batch and start it again on the same port and storage,
// a few times. The services must reconnect on their own and the pipeline must move
// again end to end. The processor is slow in this scenario (natsLatency) so that the
// batch outlasts the stalls restarts cause (see natsFaultTo).
func runNATSRestart(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.natsItems]
	n := len(items)
	e := newEnv(t, envConfig{latency: params.natsLatency})
	e.startServices()
	e.submit(items)
	// Restarts strike early in the batch (by results), leaving the processor enough
	// work to still be busy after the stall a restart causes (see natsFaultTo).
	marks := make([]int, params.natsRestarts)
	for i := range marks {
		marks[i] = int(float64(n) * (faultFrom + rng.Float64()*(natsFaultTo-faultFrom)))
	}
	slices.Sort(marks)
	o := outcome{env: e, items: n, recoveryBound: natsRecovery}
	last := 0
	for i, mark := range marks {
		target := max(mark, last+1)
		var r0 int
		waitFor(t, 2*time.Minute, func() bool {
			var err error
			r0, err = e.results()
			return err == nil && r0 >= target
		}, "NATS restart %d: %d results, waiting for %d; %s", i+1, r0, target, e.progressString())
		o0, err1 := e.ordered()
		s0, err2 := e.stored()
		if err1 != nil || err2 != nil {
			t.Fatalf("NATS restart %d: read progress: %v, %v", i+1, err1, err2)
		}
		if r0 >= n {
			t.Fatalf("NATS restart %d: every result was in (%d) before the restart; the scenario is too fast", i+1, r0)
		}
		at := time.Now()
		e.nats.Shutdown()
		down := minNATSDowntime + time.Duration(rng.Int64N(int64(params.natsDown-minNATSDowntime)))
		time.Sleep(down) // the outage itself, not a wait for anything
		e.startNATS()
		up := time.Now()
		e.faultOver(up)
		sUp, err := e.stored()
		if err != nil {
			t.Fatal(err)
		}
		// Moving again end to end: new results, new ordered events, new rows (each
		// unless that stage was already through).
		var r, od, s int
		waitFor(t, 2*time.Minute, func() bool {
			var err1, err2, err3 error
			r, err1 = e.results()
			od, err2 = e.ordered()
			s, err3 = e.stored()
			return err1 == nil && err2 == nil && err3 == nil &&
				(r > r0 || r >= n) && (od > o0 || od >= n+2) && (s > sUp || s >= n)
		}, "NATS restart %d: the pipeline to move again (results %d->%d, ordered %d->%d, rows %d->%d)", i+1, r0, r, o0, od, sUp, s)
		d := time.Since(up)
		t.Logf("NATS restart %d at %d results (%d ordered events, %d rows): down %s, pipeline moving again %s after the restart",
			i+1, r0, o0, s0, up.Sub(at).Round(time.Millisecond), d.Round(time.Millisecond))
		o.recovery = append(o.recovery, d)
		if d > natsRecovery {
			t.Errorf("NATS restart %d: the pipeline moved again only %s after the server was back, want within %s", i+1, d, natsRecovery)
		}
		last = r
		o.faults++
	}
	o.tally, o.calls = e.checkPromises(o.faults)
	return o
}

// Make PostgreSQL unreachable for the sink mid-batch: every connection through the
// proxy is closed and new ones refused for pgOutage, then the path is restored. The
// sink must retry, lose nothing and not give up.
func runPostgresOutage(t *testing.T, rng *rand.Rand, all []flashpipe.Item) outcome {
	items := all[:params.pgItems]
	n := len(items)
	e := newEnv(t, envConfig{latency: params.pgLatency, proxyPG: true})
	e.startServices()
	e.submit(items)
	o := outcome{env: e, items: n, recoveryBound: postgresRecovery}
	last := 0
	for i := range params.pgOutages {
		// Outages are spread over the batch: the i-th strikes in the i-th share.
		share := (faultTo - faultFrom) / float64(params.pgOutages)
		mark := int(float64(n) * (faultFrom + share*(float64(i)+rng.Float64())))
		target := max(mark, last+1)
		var s0 int
		waitFor(t, 2*time.Minute, func() bool {
			var err error
			s0, err = e.stored()
			return err == nil && s0 >= target
		}, "outage %d: %d rows, waiting for %d; %s", i+1, s0, target, e.progressString())
		if s0 >= n {
			t.Fatalf("outage %d: every row was stored (%d) before the outage; the scenario is too fast", i+1, s0)
		}
		at := time.Now()
		e.proxy.Cut()
		// The outage: watch that nothing reaches the database through the cut path.
		var settled, lastSeen int
		settledRead := false
		for time.Since(at) < params.pgOutage {
			time.Sleep(100 * time.Millisecond)
			cnt, err := e.stored()
			if err != nil {
				t.Fatalf("the test's own connection to PostgreSQL failed during the outage: %v", err)
			}
			if time.Since(at) >= outageSettle && !settledRead {
				settled, settledRead = cnt, true
			}
			lastSeen = cnt
		}
		if settledRead && lastSeen != settled {
			t.Errorf("outage %d: rows went from %d to %d while PostgreSQL was unreachable for the sink: the cut did not cut",
				i+1, settled, lastSeen)
		}
		e.proxy.Restore()
		up := time.Now()
		e.faultOver(up)
		var s int
		waitFor(t, 2*time.Minute, func() bool {
			var err error
			s, err = e.stored()
			return err == nil && (s > lastSeen || s >= n)
		}, "outage %d: the sink to write again after the restore (rows %d); %s", i+1, lastSeen, e.progressString())
		d := time.Since(up)
		r, _ := e.results()
		t.Logf("outage %d: cut at %d rows for %s (meanwhile results reached %d); writes resumed %s after the restore",
			i+1, s0, up.Sub(at).Round(time.Millisecond), r, d.Round(time.Millisecond))
		o.recovery = append(o.recovery, d)
		if d > postgresRecovery {
			t.Errorf("outage %d: the sink wrote again only %s after PostgreSQL was back, want within %s", i+1, d, postgresRecovery)
		}
		last = s
		o.faults++
	}
	o.tally, o.calls = e.checkPromises(0)
	return o
}

// table formats the outcomes of all trials, with totals per scenario.
func table(outs []outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %5s %6s %6s %5s %4s %4s %-22s %9s %9s %9s %8s %8s %8s\n",
		"scenario", "trial", "items", "faults", "lost", "dup", "ooo", "recovery min/med/max", "stage1", "stage2", "bound",
		"batch", "drain", "time")
	type total struct {
		faults         int
		tally          tally
		recovery       []time.Duration
		stage1, stage2 int64
		bound          int64
		elapsed        time.Duration
	}
	totals := map[string]*total{}
	var order []string
	for _, o := range outs {
		fmt.Fprintf(&b, "%-16s %5d %6d %6d %5d %4d %4d %-22s %9d %9d %9d %8s %8s %8s\n",
			o.scenario, o.trial, o.items, o.faults, o.lost, o.duplicated, o.outOfOrder, durations(o.recovery),
			o.stage1, o.stage2, o.bound, o.batch.Round(100*time.Millisecond), o.drain.Round(100*time.Millisecond),
			o.elapsed.Round(100*time.Millisecond))
		tt := totals[o.scenario]
		if tt == nil {
			tt = &total{}
			totals[o.scenario] = tt
			order = append(order, o.scenario)
		}
		tt.faults += o.faults
		tt.tally = tt.tally.add(o.tally)
		tt.recovery = append(tt.recovery, o.recovery...)
		tt.stage1 += o.stage1
		tt.stage2 += o.stage2
		tt.bound += o.bound
		tt.elapsed += o.elapsed
	}
	for _, name := range order {
		tt := totals[name]
		fmt.Fprintf(&b, "%-16s %5s %6s %6d %5d %4d %4d %-22s %9d %9d %9d %8s %8s %8s\n",
			name, "all", "", tt.faults, tt.tally.lost, tt.tally.duplicated, tt.tally.outOfOrder, durations(tt.recovery),
			tt.stage1, tt.stage2, tt.bound, "", "", tt.elapsed.Round(100*time.Millisecond))
	}
	return b.String()
}
