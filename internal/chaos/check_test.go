package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// cardsPerItem is how many cards the simulator's stage 2 answer holds.
const cardsPerItem = 3

// tally counts the promise violations found after a scenario; all must be zero.
type tally struct {
	// lost counts positions missing from the store or from the ordered stream.
	lost int
	// duplicated counts extra copies: rows or ordered events of a position already
	// seen, cards beyond an item's three.
	duplicated int
	// outOfOrder counts ordered events that do not follow their predecessor's seq
	// by one, and rows whose processing order is not the rank of their position.
	outOfOrder int
}

func (a tally) add(b tally) tally {
	return tally{a.lost + b.lost, a.duplicated + b.duplicated, a.outOfOrder + b.outOfOrder}
}

// calls is what the simulator was paid, against the bound the scenario allows.
type calls struct {
	stage1, stage2 int64
	// min is the fewest calls per stage: one per distinct (term, type) of the batch.
	min int64
	// bound is the most calls per stage: items + workers * interruptions.
	bound int64
	// interruptions counts the faults that may cut a paid call off from its cache
	// entry (processor kills, NATS restarts); workers is the processor's --workers.
	interruptions, workers int
}

// checkPromises checks every promise on the finished batch and returns the counts.
// interruptions is the number of faults that can lose a paid answer (see calls).
func (e *env) checkPromises(interruptions int) (tally, calls) {
	e.t.Helper()
	e.checkAlive()
	var got tally
	for i, st := range e.waitComplete(completionDeadline()) {
		b := e.batches[i]
		n := len(b.items)
		if st.Manifest.Count != n || st.Done != n || st.OK != n || st.Failed != 0 {
			e.t.Errorf("batch %s status: count %d, done %d, ok %d, failed %d; want %d items all ok",
				b.id, st.Manifest.Count, st.Done, st.OK, st.Failed, n)
		}
		got = got.add(e.checkStore(b))
		got = got.add(e.checkOrdered(b))
	}
	if got != (tally{}) {
		e.t.Errorf("promises broken: %d lost, %d duplicated, %d out of order", got.lost, got.duplicated, got.outOfOrder)
	}
	return got, e.checkCalls(interruptions)
}

// checkStore checks the rows: every position once, processing order = rank of
// position, status ok, three cards per item and none twice.
func (e *env) checkStore(b chaosBatch) tally {
	e.t.Helper()
	t := e.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var v tally
	items, batchID := b.items, b.id
	byPos := make(map[int64]int, len(items)) // position -> seq (rank)
	for i, it := range items {
		byPos[it.Position] = i + 1
	}
	seen := make(map[int64]int, len(items))
	prev := 0
	failed := 0
	err := e.store.Results(ctx, batchID, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		rank, known := byPos[r.Position]
		if !known {
			t.Errorf("stored row of unknown position %d", r.Position)
			return nil
		}
		seen[r.Position]++
		if seen[r.Position] > 1 {
			v.duplicated++
		}
		if r.Seq != rank || r.Seq <= prev {
			v.outOfOrder++
			if v.outOfOrder <= 3 {
				t.Errorf("stored row of position %d has processing order %d after %d, want %d (its rank)", r.Position, r.Seq, prev, rank)
			}
		}
		prev = r.Seq
		if r.Term != items[rank-1].Term {
			t.Errorf("stored row of position %d has term %q, want %q", r.Position, r.Term, items[rank-1].Term)
		}
		if r.Status != flashpipe.StatusOK {
			failed++
			if failed <= 3 {
				t.Errorf("stored row of position %d is %s: %+v", r.Position, r.Status, r.Failure)
			}
		}
		if len(r.Cards) != cardsPerItem {
			t.Errorf("stored row of position %d has %d cards, want %d", r.Position, len(r.Cards), cardsPerItem)
		}
		fronts := map[string]bool{}
		for _, c := range r.Cards {
			if fronts[c.TabName+"\x00"+c.Front] {
				v.duplicated++
				t.Errorf("position %d has the card %q/%q twice", r.Position, c.TabName, c.Front)
			}
			fronts[c.TabName+"\x00"+c.Front] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read stored results: %v", err)
	}
	for _, it := range items {
		if seen[it.Position] == 0 {
			v.lost++
			if v.lost <= 3 {
				t.Errorf("position %d is not stored", it.Position)
			}
		}
	}

	// The same, asked of the tables directly.
	var rows, positions, badOrder, notOK, cards, cardKeys, wrongCardCount, extraCards int
	q := func(sql string, dst ...any) {
		if err := e.pool.QueryRow(ctx, sql, batchID).Scan(dst...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*), count(DISTINCT position) FROM items WHERE batch_id = $1`, &rows, &positions)
	q(`SELECT count(*) FROM (SELECT processing_order, rank() OVER (ORDER BY position) AS r
		FROM items WHERE batch_id = $1) x WHERE processing_order <> r`, &badOrder)
	q(`SELECT count(*) FROM items WHERE batch_id = $1 AND status <> 'ok'`, &notOK)
	q(`SELECT count(*), count(DISTINCT (position, card_index)) FROM flashcards WHERE batch_id = $1`, &cards, &cardKeys)
	q(`SELECT count(*), coalesce(sum(greatest(n - 3, 0)), 0) FROM (SELECT count(*) AS n FROM flashcards
		WHERE batch_id = $1 GROUP BY position HAVING count(*) <> 3) x`, &wrongCardCount, &extraCards)
	if rows != len(items) || positions != len(items) || badOrder != 0 || notOK != 0 ||
		cards != cardsPerItem*len(items) || cardKeys != cards || wrongCardCount != 0 {
		t.Errorf("tables: %d item rows of %d positions (want %d), %d with processing_order <> rank(position), %d not ok, "+
			"%d cards with %d distinct keys (want %d), %d items without exactly %d cards",
			rows, positions, len(items), badOrder, notOK, cards, cardKeys, cardsPerItem*len(items), wrongCardCount, cardsPerItem)
	}
	v.duplicated += extraCards
	v.outOfOrder = max(v.outOfOrder, badOrder)
	return v
}

// checkOrdered checks the batch's ordered stream: its manifest, each position once in
// ascending order, its completion.
func (e *env) checkOrdered(b chaosBatch) tally {
	e.t.Helper()
	t := e.t
	keys := readOrdered(t, e.js, e.c, b.id)
	var v tally
	n := len(b.items)
	if len(keys) < 2 || keys[0].Kind != flashpipe.EventManifest || keys[len(keys)-1].Kind != flashpipe.EventComplete {
		t.Errorf("ordered stream of %d events does not run from a manifest to a completion", len(keys))
	}
	seen := make([]int, n+1)
	prev, manifests, completions := 0, 0, 0
	for i, k := range keys {
		switch k.Kind {
		case flashpipe.EventManifest:
			manifests++
		case flashpipe.EventComplete:
			completions++
			if i != len(keys)-1 {
				v.outOfOrder++
				t.Errorf("ordered event %d is a completion before the end", i)
			}
		case flashpipe.EventResult:
			if k.Seq < 1 || k.Seq > n {
				t.Errorf("ordered event %d has seq %d outside 1..%d", i, k.Seq, n)
				continue
			}
			seen[k.Seq]++
			if seen[k.Seq] > 1 {
				v.duplicated++
			}
			if k.Seq != prev+1 {
				v.outOfOrder++
				if v.outOfOrder <= 3 {
					t.Errorf("ordered event %d is seq %d after seq %d", i, k.Seq, prev)
				}
			}
			prev = k.Seq
			if k.Position != b.items[k.Seq-1].Position {
				t.Errorf("batch %s: ordered seq %d has position %d, want %d", b.id, k.Seq, k.Position, b.items[k.Seq-1].Position)
			}
			if k.Status != flashpipe.StatusOK {
				t.Errorf("ordered seq %d is %s", k.Seq, k.Status)
			}
		default:
			t.Errorf("ordered event %d has kind %q", i, k.Kind)
		}
	}
	if manifests != 1 || completions != 1 {
		v.duplicated += max(manifests-1, 0) + max(completions-1, 0)
		t.Errorf("ordered stream holds %d manifests and %d completions, want one each", manifests, completions)
	}
	for seq := 1; seq <= n; seq++ {
		if seen[seq] == 0 {
			v.lost++
			if v.lost <= 3 {
				t.Errorf("batch %s: seq %d (position %d) is missing from the ordered stream", b.id, seq, b.items[seq-1].Position)
			}
		}
	}
	return v
}

// readOrdered reads the headers of every event on a batch's ordered subject.
func readOrdered(t *testing.T, js jetstream.JetStream, c *contract.Contract, batchID string) []contract.Keys {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oc, err := js.OrderedConsumer(ctx, c.OrderedStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.OrderedSubject(batchID)}, HeadersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	it, err := oc.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	out := make([]contract.Keys, 0, info.NumPending)
	for range info.NumPending {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read ordered stream: %v", err)
		}
		k, err := contract.KeysOf(msg.Headers())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// checkCalls checks what the simulator was paid.
//
// The bound, per stage: items + W*F, W = the processor's --workers, F = interruptions. It is
// sound because (1) only a worker holding an item calls the API, one call at a time,
// so at any instant at most W calls are in flight; (2) an answer is put in the cache
// (a KV bucket on the NATS server) as soon as it is paid for, before the next stage
// and before the result is published, and a redelivered item reads the cache first;
// so (3) the only paid answers a fault can waste are those not yet in the cache when
// it strikes: at most one per worker, W per fault. A kill of the sequencer or the
// sink, or a database outage, wastes none. Every item without a twin pays each stage
// at least once, hence the lower bound (the batch has no repeated term and type, so
// min = items).
func (e *env) checkCalls(interruptions int) calls {
	e.t.Helper()
	s := e.sim.Stats()
	distinct := map[string]bool{}
	for _, it := range e.items {
		distinct[it.Term+"\x00"+it.Type] = true
	}
	w := e.cfg.workers
	c := calls{stage1: s.Stage1Calls, stage2: s.Stage2Calls, min: int64(len(distinct)),
		bound: int64(len(e.items) + w*interruptions), interruptions: interruptions, workers: w}
	for stage, got := range map[int]int64{1: c.stage1, 2: c.stage2} {
		if got < c.min || got > c.bound {
			e.t.Errorf("stage %d: the simulator was called %d times, want %d..%d (%d items + %d workers x %d interruptions)",
				stage, got, c.min, c.bound, len(e.items), w, interruptions)
		}
	}
	// Both stages together: a fault wastes at most one call per worker, of either stage.
	if sum, bound := c.stage1+c.stage2, 2*int64(len(e.items))+int64(w*interruptions); sum > bound {
		e.t.Errorf("the simulator was called %d times in both stages, want at most %d", sum, bound)
	}
	if s.FaultsTotal() != 0 {
		e.t.Errorf("the simulator injected %d faults; these scenarios want none", s.FaultsTotal())
	}
	return c
}

// resultTimes returns, for every message of the results stream, when the server
// stored it and when its processor finished the item (Result.ProcessedAt), in stream
// order.
func (e *env) resultTimes() (stored, processed []time.Time) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oc, err := e.js.OrderedConsumer(ctx, e.c.ResultsStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	it, err := oc.Messages()
	if err != nil {
		e.t.Fatal(err)
	}
	defer it.Stop()
	for range info.NumPending {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			e.t.Fatalf("read results stream: %v", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			e.t.Fatal(err)
		}
		var r struct {
			ProcessedAt time.Time `json:"processed_at"`
		}
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			e.t.Fatalf("decode result: %v", err)
		}
		stored = append(stored, md.Timestamp)
		processed = append(processed, r.ProcessedAt)
	}
	return stored, processed
}

// durations summarises recovery times: min, median, max.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("%s/%s/%s", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}
