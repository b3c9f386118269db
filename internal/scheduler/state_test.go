package scheduler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// newTestLeader is a leader with no NATS behind it: the fair order, the caps and the
// accounting of a round are pure state.
func newTestLeader(t *testing.T, cfg Config) *leader {
	t.Helper()
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &leader{s: &Scheduler{c: c, cfg: cfg.withDefaults()}, gens: map[string]*gen{},
		tenants: tenants{byName: map[string]*tenant{}}, tenantOf: map[string]string{}, active: map[string]int{}}
}

// addGen admits a generation of n items of tenant at priority, admitted at the i-th
// instant (the oldest is served first among equals), with its items read already.
func addGen(t *testing.T, l *leader, batch, tenant string, priority, n, i int) *gen {
	t.Helper()
	m := flashpipe.Manifest{BatchID: batch, Count: n, Tenant: tenant, Priority: priority}
	g := &gen{Entry: Entry{Manifest: m, Admitted: time.Unix(int64(i), 0)}, key: Key(batch, 0), n: n}
	for seq := 1; seq <= n; seq++ {
		msg, err := l.s.c.ItemMsg(flashpipe.WorkItem{BatchID: batch, Seq: seq,
			Item: flashpipe.Item{Position: int64(seq), Term: fmt.Sprintf("%s-%d", batch, seq), Type: "noun"}})
		if err != nil {
			t.Fatal(err)
		}
		g.queue = append(g.queue, &jetstream.RawStreamMsg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	}
	l.queued += n
	l.add(g)
	return g
}

// hasQueue is the readiness of a generation whose items are all read.
func hasQueue(g *gen) bool { return len(g.queue) > 0 }

// take runs rounds of up to per items each, every one stored, and returns the batches
// served in order. A generation fully dispatched leaves at once (as at a flush).
func take(t *testing.T, l *leader, rounds, per int) []string {
	t.Helper()
	var served []string
	for range rounds {
		out, _, err := l.choose(context.Background(), time.Unix(1000, 0), per, hasQueue)
		if err != nil {
			t.Fatal(err)
		}
		stored := make([]bool, len(out))
		for i, d := range out {
			stored[i] = true
			served = append(served, d.g.Manifest.BatchID)
		}
		l.settle(out, stored)
		for _, g := range l.gens {
			if g.done() {
				l.remove(g)
			}
		}
	}
	return served
}

// Tenants take turns first, then a tenant's batches take turns within its turns: a
// tenant with three batches gets no more than a tenant with one.
func TestTenantsInTurnThenTheirBatches(t *testing.T) {
	l := newTestLeader(t, Config{})
	addGen(t, l, "a1", "a", 0, 10, 1)
	addGen(t, l, "a2", "a", 0, 10, 2)
	addGen(t, l, "a3", "a", 0, 10, 3)
	addGen(t, l, "b1", "b", 0, 10, 4)
	got := strings.Join(take(t, l, 1, 12), " ")
	want := "a1 b1 a2 b1 a3 b1 a1 b1 a2 b1 a3 b1"
	if got != want {
		t.Errorf("served %s\nwant   %s", got, want)
	}
}

// A tenant of weight 3 gets three items for every one of a tenant of weight 1, and
// the share holds across rounds however small.
func TestTenantWeights(t *testing.T) {
	l := newTestLeader(t, Config{TenantWeights: map[string]int{"big": 3}})
	addGen(t, l, "big1", "big", 0, 100, 1)
	addGen(t, l, "small1", "small", 0, 100, 2)
	served := take(t, l, 40, 1)
	count := map[string]int{}
	for _, b := range served {
		count[b]++
	}
	if count["big1"] != 30 || count["small1"] != 10 {
		t.Errorf("40 items served as %v; want 30 of the weight-3 tenant, 10 of the other", count)
	}
	if got := strings.Join(served[:8], " "); got != "big1 big1 big1 small1 big1 big1 big1 small1" {
		t.Errorf("first items %s; want three of big, one of small", got)
	}
}

// Within a tenant, the highest priority goes first and takes everything while it has
// work; a priority with nothing ready lets the next go (work-conserving); another
// tenant keeps its share whatever the priorities.
func TestPriorityStrictWithinATenant(t *testing.T) {
	l := newTestLeader(t, Config{})
	addGen(t, l, "low", "a", 0, 10, 1)
	high := addGen(t, l, "high", "a", 5, 4, 2)
	addGen(t, l, "other", "b", -3, 10, 3)
	got := strings.Join(take(t, l, 1, 12), " ")
	want := "high other high other high other high other low other low other"
	if got != want {
		t.Errorf("served %s\nwant   %s", got, want)
	}
	if !high.done() {
		t.Error("the high-priority batch was not finished first")
	}

	// Work-conserving: the high priority's next item not read yet lets the low go.
	l = newTestLeader(t, Config{})
	low := addGen(t, l, "low", "a", 0, 3, 1)
	high = addGen(t, l, "high", "a", 5, 3, 2)
	saved := high.queue
	high.queue = nil
	if got := strings.Join(take(t, l, 1, 2), " "); got != "low low" {
		t.Errorf("with the high priority waiting for its items, served %s; want low low", got)
	}
	high.queue = saved
	if got := strings.Join(take(t, l, 1, 2), " "); got != "high high" || low.done() {
		t.Errorf("once its items came, served %s; want high high", got)
	}
}

// A tenant's concurrency cap holds item by item, even within one round of many
// items: the capped tenant's excess waits while the others take the round.
func TestConcurrencyCapHoldsWithinARound(t *testing.T) {
	l := newTestLeader(t, Config{TenantConcurrency: map[string]int{"a": 3}})
	a := addGen(t, l, "a1", "a", 0, 50, 1)
	addGen(t, l, "b1", "b", 0, 50, 2)
	out, _, err := l.choose(context.Background(), time.Unix(1000, 0), 40, hasQueue)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, d := range out {
		count[d.g.Manifest.BatchID]++
	}
	if count["a1"] != 3 || count["b1"] != 37 {
		t.Errorf("a round of 40 took %v; want 3 of tenant a (its cap) and 37 of b", count)
	}
	if a.tenant.inflight != 3 || l.inflight != 40 {
		t.Errorf("in flight: tenant a %d, all %d; want 3 and 40", a.tenant.inflight, l.inflight)
	}
	l.settle(out, make([]bool, len(out))) // none stored
	if a.tenant.inflight != 0 || l.inflight != 0 || a.Next != 0 {
		t.Errorf("after a round none of which was stored: tenant a in flight %d, all %d, a's cursor %d; want 0, 0, 0",
			a.tenant.inflight, l.inflight, a.Next)
	}
	// One item of a at the processors (the count read from the ready stream): two
	// more may go.
	l = newTestLeader(t, Config{TenantConcurrency: map[string]int{"a": 3}})
	a = addGen(t, l, "a1", "a", 0, 50, 1)
	addGen(t, l, "b1", "b", 0, 50, 2)
	a.tenant.inflight = 1
	out, _, _ = l.choose(context.Background(), time.Unix(1000, 0), 10, hasQueue)
	count = map[string]int{}
	for _, d := range out {
		count[d.g.Manifest.BatchID]++
	}
	if count["a1"] != 2 {
		t.Errorf("with one item of a at the processors, a round took %v; want 2 of a", count)
	}
}

// A tenant that leaves during its turn hands the turn to the next tenant, whole; one
// that leaves before the tenant being served leaves the round's order as it was.
func TestTenantLeavingKeepsTheRound(t *testing.T) {
	l := newTestLeader(t, Config{TenantWeights: map[string]int{"a": 2, "b": 2, "c": 2}})
	addGen(t, l, "a1", "a", 0, 1, 1) // leaves after one item, during its turn
	addGen(t, l, "b1", "b", 0, 10, 2)
	addGen(t, l, "c1", "c", 0, 10, 3)
	if got := strings.Join(take(t, l, 5, 1), " "); got != "a1 b1 b1 c1 c1" {
		t.Errorf("served %s; want a1, then b's whole turn, then c's", got)
	}

	// The last tenant in the order leaves during its turn: the first is next, not the
	// one before it again.
	l = newTestLeader(t, Config{TenantWeights: map[string]int{"c": 2}})
	addGen(t, l, "a1", "a", 0, 10, 1)
	addGen(t, l, "b1", "b", 0, 10, 2)
	addGen(t, l, "c1", "c", 0, 1, 3)
	if got := strings.Join(take(t, l, 5, 1), " "); got != "a1 b1 c1 a1 b1" {
		t.Errorf("served %s; want a1 b1 c1 a1 b1", got)
	}

	// A tenant before the one being served leaves: the one being served finishes its
	// turn, and the order goes on.
	l = newTestLeader(t, Config{TenantWeights: map[string]int{"b": 2}})
	a := addGen(t, l, "a1", "a", 0, 10, 1)
	addGen(t, l, "b1", "b", 0, 10, 2)
	addGen(t, l, "c1", "c", 0, 10, 3)
	first := take(t, l, 2, 1) // a1, then b1 (b's turn: 1 of 2 used)
	l.remove(a)
	rest := take(t, l, 4, 1)
	if got := strings.Join(append(first, rest...), " "); got != "a1 b1 b1 c1 b1 b1" {
		t.Errorf("served %s; want a1 b1, then b's second item, c1, b1 b1", got)
	}
}

// Items not stored by the ready stream (a publish refused, or never sent after an
// earlier one failed) are taken back: each generation starts again from its first
// such item, none is skipped, and the in-flight counts drop them.
func TestItemsNotStoredAreDispatchedAgain(t *testing.T) {
	l := newTestLeader(t, Config{})
	a := addGen(t, l, "a1", "a", 0, 4, 1)
	b := addGen(t, l, "b1", "b", 0, 4, 2)
	out, _, err := l.choose(context.Background(), time.Unix(1000, 0), 8, hasQueue)
	if err != nil || len(out) != 8 {
		t.Fatalf("chose %d items, %v; want 8", len(out), err)
	}
	// Order a1 b1 a1 b1 ...: a's seqs 1..4 at 0,2,4,6; b's at 1,3,5,7. The ready stream
	// stored seqs 1 and 2 of both; a1 seq 3 was refused, and the publish of
	// b1 seq 3 failed, so nothing after it was sent.
	stored := []bool{true, true, true, true, false, false, false, false}
	l.settle(out, stored)
	if a.Next != 2 || b.Next != 2 || a.LastPosition != 2 || b.LastPosition != 2 {
		t.Errorf("cursors after the round: a1 at %d (position %d), b1 at %d (position %d); want both at index 2 (position 2)",
			a.Next, a.LastPosition, b.Next, b.LastPosition)
	}
	if l.inflight != 4 || a.tenant.inflight != 2 || b.tenant.inflight != 2 || l.queued != 0 {
		t.Errorf("in flight %d (a %d, b %d), queued %d; want 4 (2, 2), 0", l.inflight, a.tenant.inflight, b.tenant.inflight, l.queued)
	}
	if len(a.queue) != 0 || !a.dirty {
		t.Error("a generation taken back must read its items again from its cursor, and be written")
	}
}
