package chaos

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// TestBatchModeKillNeverSubmitsTwice kills a batch-mode processor (a child process)
// with SIGKILL at each dangerous moment of a provider batch, in turn: while it is
// gathering (a random moment), when its submission reached the provider but was not
// accepted yet, when the provider accepted it but before the answer (so before the
// processor could record the batch's id), and while it polls the batch. Each time a
// new process takes over. The batch must end complete and correct, every request must
// be billed exactly once, and no provider batch may be submitted twice (counted at
// the simulator by idempotency key).
func TestBatchModeKillNeverSubmitsTwice(t *testing.T) {
	for _, shape := range []string{"openrouter", "openai"} {
		t.Run(shape, func(t *testing.T) { batchModeKills(t, shape) })
	}
}

func batchModeKills(t *testing.T, shape string) {
	const n = 60
	points := []string{"gathering", "submit-received", "submit-accepted", "polling"}
	var (
		mu     sync.Mutex
		next   int // index in points of the next kill
		kills  []string
		proc   *service
		killed = make(chan string, len(points))
	)
	// kill kills the processor if the next kill point is at, and starts a new one.
	kill := func(at string) bool {
		mu.Lock()
		if next >= len(points) || points[next] != at {
			mu.Unlock()
			return false
		}
		next++
		kills = append(kills, at)
		mu.Unlock()
		proc.kill()
		killed <- at
		return true
	}
	sim := llmsim.Config{Batch: llmsim.BatchConfig{
		Delay: 400 * time.Millisecond,
		OnSubmit: func(ctx context.Context, accepted bool) {
			if accepted {
				kill("submit-accepted")
				return
			}
			if !kill("submit-received") {
				return
			}
			// The client is dead: wait until the server notices, so the submission is
			// not accepted (a provider that never got the whole request).
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Errorf("the simulator did not see its client go away")
			}
		},
		OnPoll: func(string) { kill("polling") },
	}}
	p := apptest.New(t, apptest.Config{SQLite: true, Sim: sim})
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{Window: 4 * n}})
	p.StartSink(sink.Config{})
	proc = newService(t, p.Contract.Prefix(), "processor", childEnv(), "processor", "--nats-url", p.URL, "--prefix", p.Contract.Prefix(),
		"--api-base-url", p.APIURL, "--rate-limit-rpm", "0", "--api-mode", "batch", "--batch-api", shape,
		"--concurrent-max", strconv.Itoa(2*n), "--ack-wait", "2s",
		"--batch-size", "1000", "--batch-wait", "300ms", "--batch-poll", "100ms",
		"--batch-submit-timeout", "2s", "--batch-claim-grace", "3s")
	proc.start()

	items := loadBatchItems(t, n)
	if _, err := p.Client.Submit(context.Background(), ingest.Batch{ID: "kills", Source: "test", Items: ingest.SliceItems(items),
		Settings: map[string]string{flashpipe.SettingAPIMode: flashpipe.APIModeBatch}}); err != nil {
		t.Fatal(err)
	}
	// The first kill: a random moment while the first provider batch is gathered.
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	kill("gathering")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range points {
			select {
			case <-killed:
				proc.start()
			case <-time.After(2 * time.Minute):
				return
			}
		}
	}()
	p.WaitStored("kills", 0, 90*time.Second)
	<-done

	res := p.Results("kills")
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for _, r := range res {
		if r.Status != flashpipe.StatusOK || len(r.Cards) == 0 {
			t.Fatalf("item %d: %s %+v", r.Position, r.Status, r.Failure)
		}
	}
	bs := p.Sim.BatchStats()
	st := p.Sim.Stats()
	pbs, err := processor.ListProviderBatches(context.Background(), p.JS, p.Contract, "kills")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%s: kills at %v; provider batches submitted %d (keys %v), recorded %d; requests billed %d, sync calls %d",
		shape, kills, bs.Submitted, bs.Keys, len(pbs), bs.Answered, st.Stage1Calls+st.Stage2Calls)
	if len(kills) != len(points) {
		t.Errorf("killed at %v, want all of %v", kills, points)
	}
	if bs.DuplicateKeys != 0 {
		t.Errorf("%d provider batches submitted twice with the same key: %v", bs.DuplicateKeys, bs.Keys)
	}
	if paid := bs.Answered + st.Stage1Calls + st.Stage2Calls; paid != 2*n {
		t.Errorf("%d requests paid (%d in batches, %d sync), want %d: each answer once", paid, bs.Answered, st.Stage1Calls+st.Stage2Calls, 2*n)
	}
}

func loadBatchItems(t *testing.T, n int) []flashpipe.Item {
	t.Helper()
	parsed, err := ingest.ParseFile("../../examples/vocabulary_1000.csv", ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Items[:n]
}
