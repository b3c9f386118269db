package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// A DBA revokes the sink's INSERT and UPDATE on flashcards mid-batch, then grants them
// back: the sink waits it out (blocked, saying why in its beacon), and every row is
// stored in order with nothing set aside and no replay by hand.
func TestPermissionLostAndRegainedMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	admin, err := postgres.Open(ctx, url, postgres.Config{AutoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	role, roleURL := pgtest.Role(t, url, "SELECT, INSERT, UPDATE, DELETE")
	st, err := postgres.Open(ctx, roleURL, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })

	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	b, err := beacon.New(ctx, js, c, beacon.Config{Service: "sink", Replica: "sink-1"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	snk, err := sink.New(js, c, st, sink.Config{Beacon: b, Metrics: sink.NewMetrics(reg), BackoffMax: 200 * time.Millisecond, BatchSize: 50, Linger: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- snk.Run(sctx) }()
	go b.Run(sctx)
	t.Cleanup(func() { cancel(); <-done })

	const id, n = "grants", 300
	publish := func(ev flashpipe.Event) {
		t.Helper()
		msg, err := c.EventMsg(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	m := flashpipe.Manifest{BatchID: id, Count: n, Source: "test", ContentHash: "h", CreatedAt: time.Now()}
	publish(flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m})
	result := func(seq int) flashpipe.Event {
		return flashpipe.Event{Kind: flashpipe.EventResult, Result: &flashpipe.Result{
			BatchID: id, Seq: seq, Status: flashpipe.StatusOK, ProcessedAt: time.Now(),
			Item:  flashpipe.Item{Position: int64(seq), Term: fmt.Sprint("단어", seq), Type: "noun"},
			Cards: []flashpipe.Card{{TabName: "Scene", Front: "f", Back: "b"}}}}
	}
	for seq := 1; seq <= 100; seq++ {
		publish(result(seq))
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		b, err := admin.Batch(ctx, id)
		return err == nil && b.Done == 100
	}, "the first 100 results were not stored")

	pgtest.Exec(t, url, "REVOKE INSERT, UPDATE ON flashcards FROM "+role)
	for seq := 101; seq <= n; seq++ {
		publish(result(seq))
	}
	publish(flashpipe.Event{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{BatchID: id, Emitted: n, CompletedAt: time.Now()}})

	var blocked beacon.State
	natstest.Eventually(t, 20*time.Second, func() bool {
		states, err := beacon.List(ctx, js, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if s.Service == "sink" && s.Blocked {
				blocked = s
				return true
			}
		}
		return false
	}, "the sink's beacon never said it was blocked")
	if blocked.Cause != store.CausePermission || blocked.Replica != "sink-1" || blocked.Since == nil {
		t.Fatalf("blocked beacon = %+v, want cause %q", blocked, store.CausePermission)
	}
	if b, _ := admin.Batch(ctx, id); b.Done >= n || b.SetAside != 0 {
		t.Fatalf("while the grant is revoked: %d stored, %d set aside", b.Done, b.SetAside)
	}
	if got := blockedGauge(t, reg); len(got) != 1 || got[store.CausePermission] != 1 {
		t.Fatalf("flashpipe_sink_blocked while the grant is revoked: %v, want {cause=%q} 1 only", got, store.CausePermission)
	}

	pgtest.Exec(t, url, "GRANT INSERT, UPDATE ON flashcards TO "+role)
	natstest.Eventually(t, 30*time.Second, func() bool {
		b, err := admin.Batch(ctx, id)
		return err == nil && b.State == flashpipe.BatchComplete
	}, "the batch did not complete after the grant came back")
	final, _ := admin.Batch(ctx, id)
	if final.Done != n || final.SetAside != 0 {
		t.Fatalf("after the grant: %d done, %d set aside; want %d and 0", final.Done, final.SetAside, n)
	}
	prev := 0
	if err := admin.Results(ctx, id, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		if r.Seq != prev+1 || len(r.Cards) != 1 {
			return fmt.Errorf("seq %d after %d with %d cards", r.Seq, prev, len(r.Cards))
		}
		prev = r.Seq
		return nil
	}); err != nil || prev != n {
		t.Fatalf("stored results: %v (last seq %d)", err, prev)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		states, _ := beacon.List(ctx, js, c)
		return len(states) == 1 && !states[0].Blocked
	}, "the sink's beacon still says blocked")
	if got := blockedGauge(t, reg); len(got) != 0 {
		t.Fatalf("flashpipe_sink_blocked after the grant: %v, want no series", got)
	}
}

// blockedGauge gathers flashpipe_sink_blocked from reg: its value by cause.
func blockedGauge(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "flashpipe_sink_blocked" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cause" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return got
}
