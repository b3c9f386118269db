package sequencer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

type env struct {
	t        *testing.T
	js       jetstream.JetStream
	c        *contract.Contract
	oneByOne bool
}

// modes runs a test with atomic batch appends and with one-by-one appends.
func modes(t *testing.T, test func(t *testing.T, e *env)) {
	for _, oneByOne := range []bool{false, true} {
		name := "atomic"
		if oneByOne {
			name = "one-by-one"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.oneByOne = oneByOne
			test(t, e)
		})
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	return &env{t: t, js: js, c: natstest.Contract(t, js)}
}

func (e *env) publishManifest(m flashpipe.Manifest) {
	e.t.Helper()
	msg, err := e.c.ManifestMsg(m)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(contract.ManifestMsgID(m.BatchID, m.Generation))); err != nil {
		e.t.Fatal(err)
	}
}

// publishResult publishes the result of seq (position = 10*seq, to tell them apart).
func (e *env) publishResult(batch string, seq, gen int, status flashpipe.Status) {
	e.t.Helper()
	r := &flashpipe.Result{BatchID: batch, Seq: seq, Generation: gen, Status: status,
		Item: flashpipe.Item{Position: int64(10 * seq), Term: fmt.Sprintf("term%d", seq), Type: "noun"}}
	msg, err := e.c.ResultMsg(r)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(contract.MsgID(batch, r.Position, gen))); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start(cfg sequencer.Config) (stop func()) {
	e.t.Helper()
	cfg.OneByOne = e.oneByOne
	s, err := sequencer.New(e.js, e.c, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("sequencer Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Error("sequencer did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// ordered reads every event on the batch's ordered subject.
func (e *env) ordered(batch string) []contract.Keys {
	e.t.Helper()
	return natstest.OrderedKeys(e.t, e.js, e.c, batch)
}

// count returns how many events the batch's ordered subject holds.
func (e *env) count(batch string) int {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), e.c.OrderedStream())
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(e.c.OrderedSubject(batch)))
	if err != nil {
		e.t.Fatal(err)
	}
	return int(info.State.Subjects[e.c.OrderedSubject(batch)])
}

// last returns the last event on the batch's ordered subject.
func (e *env) last(batch string) (contract.Keys, bool) {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), e.c.OrderedStream())
	if err != nil {
		e.t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(context.Background(), e.c.OrderedSubject(batch))
	if contract.IsNotFound(err) {
		return contract.Keys{}, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := contract.KeysOf(msg.Header)
	if err != nil {
		e.t.Fatal(err)
	}
	return k, true
}

// waitComplete waits until generation gen's completion is on the ordered subject and
// returns the subject's events.
func (e *env) waitComplete(batch string, gen int, within time.Duration) []contract.Keys {
	e.t.Helper()
	natstest.Eventually(e.t, within, func() bool {
		k, ok := e.last(batch)
		return ok && k.Kind == flashpipe.EventComplete && k.Generation == gen
	}, "batch %s generation %d did not complete", batch, gen)
	return e.ordered(batch)
}

// checkGeneration asserts evs is exactly: manifest, results for seqs in order, completion.
func checkGeneration(t *testing.T, evs []contract.Keys, gen int, seqs []int) {
	t.Helper()
	if len(evs) != len(seqs)+2 {
		t.Fatalf("generation %d: %d events, want %d (manifest, %d results, completion)", gen, len(evs), len(seqs)+2, len(seqs))
	}
	if evs[0].Kind != flashpipe.EventManifest || evs[0].Generation != gen {
		t.Fatalf("first event %+v, want the manifest of generation %d", evs[0], gen)
	}
	for i, seq := range seqs {
		k := evs[i+1]
		if k.Kind != flashpipe.EventResult || k.Seq != seq || k.Position != int64(10*seq) || k.Generation != gen {
			t.Fatalf("event %d = %+v, want result seq %d of generation %d", i+1, k, seq, gen)
		}
	}
	if last := evs[len(evs)-1]; last.Kind != flashpipe.EventComplete || last.Generation != gen {
		t.Fatalf("last event %+v, want completion of generation %d", last, gen)
	}
}

func seqRange(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}

func TestSequencerOrdersShuffledResults(t *testing.T) {
	t.Parallel()
	modes(t, func(t *testing.T, e *env) {
		const n = 500
		e.publishManifest(flashpipe.Manifest{BatchID: "shuffled", Count: n, CreatedAt: time.Now()})
		// A window far smaller than the disorder forces the look-up path too.
		e.start(sequencer.Config{Window: 16, PollInterval: 200 * time.Millisecond})
		order := rand.Perm(n)
		for _, i := range order {
			e.publishResult("shuffled", i+1, 0, flashpipe.StatusOK)
		}
		checkGeneration(t, e.waitComplete("shuffled", 0, 30*time.Second), 0, seqRange(n))
	})
}

func TestSequencerFirstResultLast(t *testing.T) {
	t.Parallel()
	modes(t, func(t *testing.T, e *env) {
		const n = 2000
		e.publishManifest(flashpipe.Manifest{BatchID: "firstlast", Count: n, CreatedAt: time.Now()})
		e.start(sequencer.Config{Window: 8, PollInterval: 200 * time.Millisecond})
		for seq := 2; seq <= n; seq++ {
			e.publishResult("firstlast", seq, 0, flashpipe.StatusOK)
		}
		// Nothing but the manifest may be emitted while seq 1 is missing.
		time.Sleep(300 * time.Millisecond)
		if n := e.count("firstlast"); n > 1 {
			t.Fatalf("%d events emitted before seq 1 arrived", n)
		}
		e.publishResult("firstlast", 1, 0, flashpipe.StatusFailed)
		checkGeneration(t, e.waitComplete("firstlast", 0, 30*time.Second), 0, seqRange(n))
	})
}

func TestSequencerRestartMidBatch(t *testing.T) {
	t.Parallel()
	modes(t, func(t *testing.T, e *env) {
		const n = 400
		e.publishManifest(flashpipe.Manifest{BatchID: "restart", Count: n, CreatedAt: time.Now()})
		// The first half (shuffled) arrives before the stop, the second half after.
		first, second := rand.Perm(n/2), rand.Perm(n/2)
		for _, i := range first {
			e.publishResult("restart", i+1, 0, flashpipe.StatusOK)
		}
		stop := e.start(sequencer.Config{Window: 32, PollInterval: 100 * time.Millisecond})
		// Stop it once it has emitted something but cannot have finished.
		natstest.Eventually(t, 10*time.Second, func() bool { return e.count("restart") > 1 }, "nothing emitted")
		stop()
		before := e.count("restart")
		for _, i := range second {
			e.publishResult("restart", n/2+i+1, 0, flashpipe.StatusOK)
		}
		e.start(sequencer.Config{Window: 32, PollInterval: 100 * time.Millisecond})
		evs := e.waitComplete("restart", 0, 30*time.Second)
		checkGeneration(t, evs, 0, seqRange(n))
		if before >= len(evs) {
			t.Fatalf("the first sequencer emitted %d events of %d: the restart was not mid-batch", before, len(evs))
		}
	})
}

func TestSequencerRacingReplicasNeverDuplicate(t *testing.T) {
	t.Parallel()
	modes(t, func(t *testing.T, e *env) {
		const n = 300
		// A very short lease makes JetStream hand the batch to the other replica while the
		// first still works on it: the appends' expected-sequence checks must keep the log
		// exact anyway.
		e.publishManifest(flashpipe.Manifest{BatchID: "race", Count: n, CreatedAt: time.Now()})
		for _, i := range rand.Perm(n) {
			e.publishResult("race", i+1, 0, flashpipe.StatusOK)
		}
		for range 3 {
			e.start(sequencer.Config{Window: 4, PollInterval: 50 * time.Millisecond, LeaseTTL: time.Second})
		}
		checkGeneration(t, e.waitComplete("race", 0, 30*time.Second), 0, seqRange(n))
	})
}

func TestSequencerRetryGenerationAppendsCorrections(t *testing.T) {
	t.Parallel()
	modes(t, func(t *testing.T, e *env) {
		const n = 50
		e.publishManifest(flashpipe.Manifest{BatchID: "retry", Count: n, CreatedAt: time.Now()})
		failed := []int{3, 17, 40}
		for seq := 1; seq <= n; seq++ {
			st := flashpipe.StatusOK
			for _, f := range failed {
				if f == seq {
					st = flashpipe.StatusFailed
				}
			}
			e.publishResult("retry", seq, 0, st)
		}
		e.start(sequencer.Config{PollInterval: 100 * time.Millisecond})
		e.waitComplete("retry", 0, 30*time.Second)

		e.publishManifest(flashpipe.Manifest{BatchID: "retry", Generation: 1, Count: n, Seqs: failed, CreatedAt: time.Now()})
		for _, seq := range []int{40, 3, 17} {
			e.publishResult("retry", seq, 1, flashpipe.StatusOK)
		}
		evs := e.waitComplete("retry", 1, 30*time.Second)
		checkGeneration(t, evs[:n+2], 0, seqRange(n))
		checkGeneration(t, evs[n+2:], 1, failed)
	})
}

// Several replicas share the batches; each batch is sequenced by exactly one of them
// (one manifest event in its log), and all complete in order.
func TestReplicasShareBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const batches, n = 6, 150
	for i := range batches {
		e.publishManifest(flashpipe.Manifest{BatchID: fmt.Sprintf("share%d", i), Count: n, CreatedAt: time.Now()})
	}
	for range 3 {
		e.start(sequencer.Config{Window: 32, PollInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second, MaxBatches: 2})
	}
	for _, i := range rand.Perm(batches * n) {
		e.publishResult(fmt.Sprintf("share%d", i/n), i%n+1, 0, flashpipe.StatusOK)
	}
	for i := range batches {
		checkGeneration(t, e.waitComplete(fmt.Sprintf("share%d", i), 0, time.Minute), 0, seqRange(n))
	}
}

// A replica that dies (its connection cut, so it can neither ack nor release) loses
// its batch to another within the lease TTL, with no gap or duplicate.
func TestCrashedReplicaHandsBatchOver(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv.ClientURL())
	e := &env{t: t, js: js, c: natstest.Contract(t, js)}
	const n = 300
	e.publishManifest(flashpipe.Manifest{BatchID: "handover", Count: n, CreatedAt: time.Now()})
	for seq := 1; seq <= n/2; seq++ {
		e.publishResult("handover", seq, 0, flashpipe.StatusOK)
	}
	cfg := sequencer.Config{PollInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second}
	doomed, err := sequencer.New(js, e.c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = doomed.Run(ctx) }()
	natstest.Eventually(t, 10*time.Second, func() bool { return e.count("handover") > n/2 }, "the first replica did not start")
	nc.Close() // the replica dies

	_, js2 := natstest.Connect(t, srv.ClientURL())
	e2 := &env{t: t, js: js2, c: e.c}
	for seq := n/2 + 1; seq <= n; seq++ {
		e2.publishResult("handover", seq, 0, flashpipe.StatusOK)
	}
	start := time.Now()
	e2.start(cfg)
	checkGeneration(t, e2.waitComplete("handover", 0, 30*time.Second), 0, seqRange(n))
	if took := time.Since(start); took > 3*cfg.LeaseTTL {
		t.Fatalf("hand-over took %s, lease TTL %s", took, cfg.LeaseTTL)
	}
}
