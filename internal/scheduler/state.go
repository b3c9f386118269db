package scheduler

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/flashpipe/flashpipe"
)

// Entry is what the scheduler's bucket keeps of one generation being dispatched: the
// manifest, how far its items have been dispatched, and since when its next item has
// been missing. Its key is "<batch>.<generation>".
type Entry struct {
	Manifest flashpipe.Manifest `json:"manifest"`
	// Next is the index, among the generation's wanted seqs, of the next item to
	// dispatch; Dispatched counts the items dispatched so far (Next, with the items
	// failed in place counted too).
	Next int `json:"next"`
	// LastPosition is the position of the item before Next (0 at first): positions
	// must ascend with seq.
	LastPosition int64 `json:"last_position"`
	// MissingSince is when the scheduler first found the item at Next unpublished.
	MissingSince *time.Time `json:"missing_since,omitempty"`
	// Admitted is when the scheduler took the generation.
	Admitted time.Time `json:"admitted"`
}

// Key is the bucket key of a batch's generation.
func Key(batch string, generation int) string {
	return batch + "." + strconv.Itoa(generation)
}

// gen is a generation being dispatched, as the leader holds it.
type gen struct {
	Entry
	key   string
	rev   uint64
	n     int // items the generation runs
	dirty bool
	// queue holds items fetched for the seqs from Next on, in order.
	queue []*jetstream.RawStreamMsg
	// waitUntil is when to look for the next item again.
	waitUntil time.Time
	backoff   time.Duration
	tenant    *tenant
}

func (g *gen) done() bool { return g.Next >= g.n }

// tenant is one tenant's generations, in serving order: higher priority first, then
// the oldest.
type tenant struct {
	name    string
	gens    []*gen
	rr      int           // round robin among the top priority's generations
	weight  int           // items per turn
	limiter *rate.Limiter // nil: no cap
	// inflight is the tenant's items in the ready stream (last read, plus those
	// dispatched since); maxInflight caps it (0: no cap).
	inflight, maxInflight int
}

// capped reports whether the tenant is at its concurrency cap.
func (t *tenant) capped() bool { return t.maxInflight > 0 && t.inflight >= t.maxInflight }

func (t *tenant) add(g *gen) {
	t.gens = append(t.gens, g)
	slices.SortStableFunc(t.gens, func(a, b *gen) int {
		return cmp.Or(cmp.Compare(b.Manifest.Priority, a.Manifest.Priority), a.Admitted.Compare(b.Admitted))
	})
}

func (t *tenant) remove(g *gen) {
	t.gens = slices.DeleteFunc(t.gens, func(x *gen) bool { return x == g })
}

// next picks the tenant's generation to serve now: among the highest priority that
// has work it can dispatch (ready), round robin. A priority whose generations all
// wait for items lets a lower one go (work-conserving).
func (t *tenant) next(ready func(*gen) bool) *gen {
	for start := 0; start < len(t.gens); {
		prio := t.gens[start].Manifest.Priority
		end := start
		for end < len(t.gens) && t.gens[end].Manifest.Priority == prio {
			end++
		}
		level := t.gens[start:end]
		for i := range level {
			g := level[(t.rr+i)%len(level)]
			if ready(g) {
				t.rr = (t.rr + i + 1) % len(level)
				return g
			}
		}
		start = end
	}
	return nil
}

// tenants is every tenant with work, served in turn.
type tenants struct {
	byName map[string]*tenant
	order  []*tenant
	turn   int // index in order of the tenant being served
	used   int // items the tenant at turn took this turn
}

func (ts *tenants) get(name string, weight int, r float64, maxInflight int) *tenant {
	if t, ok := ts.byName[name]; ok {
		return t
	}
	t := &tenant{name: name, weight: max(weight, 1), maxInflight: maxInflight}
	if r > 0 {
		t.limiter = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	}
	ts.byName[name] = t
	ts.order = append(ts.order, t)
	return t
}

// drop removes a tenant with no work left. The round goes on where it was: a tenant
// served before the one whose turn it is shifts the turn down with it, and a tenant
// leaving during its own turn hands it to the next one, with a whole turn.
func (ts *tenants) drop(t *tenant) {
	i := slices.Index(ts.order, t)
	if i < 0 {
		return
	}
	ts.order = slices.Delete(ts.order, i, i+1)
	delete(ts.byName, t.name)
	switch {
	case i < ts.turn:
		ts.turn--
	case i == ts.turn:
		ts.used = 0
	}
	if ts.turn >= len(ts.order) {
		ts.turn, ts.used = 0, 0
	}
}

// anyCapped reports whether a tenant with work is at its concurrency cap.
func (ts *tenants) anyCapped() bool {
	return slices.ContainsFunc(ts.order, (*tenant).capped)
}

// pick returns the generation to dispatch one item of now: tenants in turn, each
// taking up to its weight in items per turn (within its rate and concurrency caps),
// and within a tenant see tenant.next. Nil when no generation is ready. The caller
// counts the item it dispatches in the tenant's inflight before it picks again, so
// that a concurrency cap holds item by item.
func (ts *tenants) pick(now time.Time, ready func(*gen) bool) *gen {
	for range len(ts.order) + 1 {
		if len(ts.order) == 0 {
			return nil
		}
		ts.turn %= len(ts.order)
		t := ts.order[ts.turn]
		if ts.used < t.weight && !t.capped() && (t.limiter == nil || t.limiter.TokensAt(now) >= 1) {
			if g := t.next(ready); g != nil {
				ts.used++
				if t.limiter != nil {
					t.limiter.AllowN(now, 1)
				}
				if ts.used >= t.weight {
					ts.turn, ts.used = ts.turn+1, 0
				}
				return g
			}
		}
		ts.turn, ts.used = ts.turn+1, 0
	}
	return nil
}
