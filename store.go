package flashpipe

import (
	"context"
	"fmt"
	"time"
)

// EventKind names what an ordered event carries.
type EventKind string

// The events of a batch's ordered log, in the order they appear for one generation:
// its manifest, its results in ascending Seq, and its completion.
const (
	EventManifest EventKind = "manifest"
	EventResult   EventKind = "result"
	EventComplete EventKind = "complete"
)

// Event is one entry of a batch's ordered log: the body of a message on the ordered
// stream, and the unit a Store applies. Exactly one of the pointers is set, by Kind.
type Event struct {
	Kind       EventKind   `json:"kind"`
	Manifest   *Manifest   `json:"manifest,omitempty"`
	Result     *Result     `json:"result,omitempty"`
	Completion *Completion `json:"completion,omitempty"`
}

// BatchID returns the id of the batch the event belongs to.
func (e Event) BatchID() string {
	switch {
	case e.Manifest != nil:
		return e.Manifest.BatchID
	case e.Result != nil:
		return e.Result.BatchID
	case e.Completion != nil:
		return e.Completion.BatchID
	}
	return ""
}

// Completion marks the end of one generation of a batch: every expected result has been
// emitted in order.
type Completion struct {
	BatchID     string    `json:"batch_id"`
	Generation  int       `json:"generation"`
	Emitted     int       `json:"emitted"`
	CompletedAt time.Time `json:"completed_at"`
}

// Batch states as a Store reports them. A batch is complete when its latest
// generation's completion is stored and so are all the results that generation
// emitted: events may be applied in any order (several sink replicas), and a batch
// never reads complete while a result it counts is missing.
const (
	BatchRunning  = "running"
	BatchComplete = "complete"
	// BatchBlocked is a batch that is not complete and has events the store refused
	// (set aside, see Store.SetAside): it cannot complete until they are fixed and
	// replayed. BatchStatus.Problem says why.
	BatchBlocked = "blocked"
)

// DeadLetter is an event the store refused for a reason in the event itself (a
// constraint its data breaks), kept so an operator can fix the cause and replay it,
// long after the ordered stream has dropped it.
type DeadLetter struct {
	// ID is assigned by the store.
	ID     int64     `json:"id"`
	Event  Event     `json:"event"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Key identifies the event of a dead letter: setting the same event aside twice keeps
// one letter.
func (d DeadLetter) Key() string {
	e := d.Event
	switch {
	case e.Result != nil:
		return fmt.Sprintf("%s:result:%d:%d", e.Result.BatchID, e.Result.Position, e.Result.Generation)
	case e.Manifest != nil:
		return fmt.Sprintf("%s:manifest:%d", e.Manifest.BatchID, e.Manifest.Generation)
	case e.Completion != nil:
		return fmt.Sprintf("%s:complete:%d", e.Completion.BatchID, e.Completion.Generation)
	}
	return ""
}

// BatchStatus is a Store's view of a batch.
type BatchStatus struct {
	Manifest Manifest `json:"manifest"`
	// State is BatchRunning until the latest generation's completion and every result
	// it counts are stored.
	State string `json:"state"`
	// Done counts items with a stored result, OK and Failed split it by status.
	Done   int   `json:"done"`
	OK     int   `json:"ok"`
	Failed int   `json:"failed"`
	Usage  Usage `json:"usage"`
	// SubmittedAt is when the batch was first submitted (Manifest.CreatedAt is the
	// latest generation's), StartedAt when its first stored result was processed (the
	// earliest ProcessedAt: never after CompletedAt, which the sequencer stamps after
	// every result it counts), CompletedAt when the latest generation completed.
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// SetAside counts the batch's events the store refused (dead letters not yet
	// replayed); Problem is the reason of the latest.
	SetAside int    `json:"set_aside,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// APIMode returns the manifest's api_mode setting (SettingAPIMode), APIModeSync when
// it has none.
func (m Manifest) APIMode() string {
	if mode := m.Settings[SettingAPIMode]; mode != "" {
		return mode
	}
	return APIModeSync
}

// BatchMetrics are a batch's metrics as the store keeps them beside its rows, in the
// transaction that writes them: the usage of every result written for the batch,
// summed. Each result counts once, whatever the redeliveries and replays: a result of
// a newer generation than the item's stored one adds its usage (a retry's result does
// not take back what the failed one paid); the same result written again adds
// nothing; a result the store does not write (of an older generation) adds nothing.
// Unlike BatchStatus.Usage, which sums the items' latest results, the metrics keep
// what older generations spent.
type BatchMetrics struct {
	BatchID string `json:"batch_id"`
	// Mode is the batch's APIMode: its manifest's api_mode setting, APIModeSync
	// when it has none (even where processors running in batch mode by default
	// served it).
	Mode string `json:"mode"`
	// Results counts the results summed.
	Results     int64 `json:"results"`
	Stage1Calls int64 `json:"stage1_calls"`
	Stage2Calls int64 `json:"stage2_calls"`
	CacheHits   int64 `json:"cache_hits"`
	CacheMisses int64 `json:"cache_misses"`
	// CacheHitRate is CacheHits over all look-ups (0 with none).
	CacheHitRate     float64 `json:"cache_hit_rate"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	// Retries, Throttled, RateLimitWaits, RateLimitWaitMS, BreakerWaits and
	// BreakerTrips sum the Usage counters of the same names.
	Retries         int64 `json:"retries"`
	Throttled       int64 `json:"throttled"`
	RateLimitWaits  int64 `json:"rate_limit_waits"`
	RateLimitWaitMS int64 `json:"rate_limit_wait_ms"`
	BreakerWaits    int64 `json:"breaker_waits"`
	BreakerTrips    int64 `json:"breaker_trips"`
	// CostSettled is the cost the results report (USD); CostReserved what spend caps
	// hold for the batch's calls in flight (0 where no cap holds any).
	CostSettled  float64 `json:"cost_settled"`
	CostReserved float64 `json:"cost_reserved"`
	// FirstResultAt and LastResultAt are the earliest and latest ProcessedAt of the
	// results summed (nil before any); WallTimeMS is the time between them.
	FirstResultAt *time.Time `json:"first_result_at,omitempty"`
	LastResultAt  *time.Time `json:"last_result_at,omitempty"`
	WallTimeMS    int64      `json:"wall_time_ms"`
}

// Finish sets the fields derived from the others: the cache hit rate and the wall
// time. Store drivers call it on what they read.
func (m *BatchMetrics) Finish() {
	m.CacheHitRate = 0
	if n := m.CacheHits + m.CacheMisses; n > 0 {
		m.CacheHitRate = float64(m.CacheHits) / float64(n)
	}
	m.WallTimeMS = 0
	if m.FirstResultAt != nil && m.LastResultAt != nil {
		m.WallTimeMS = m.LastResultAt.Sub(*m.FirstResultAt).Milliseconds()
	}
}

// ResultFilter narrows Store.Results.
type ResultFilter struct {
	// Status, when set, keeps only results with that status.
	Status Status
}

// Store keeps the ordered output of batches: one batch row, one row per item, one row
// per card. It is the seam between the sink and a database; every driver passes the
// same conformance suite (internal/store/storetest).
//
// Apply is idempotent and commutative: applying an event twice, or an older
// generation's result after a newer one, changes nothing, and the state a set of
// events leaves does not depend on the order of the Apply calls. Implementations are
// safe for concurrent use.
type Store interface {
	// Apply stores events in one transaction: all of them or none.
	Apply(ctx context.Context, events []Event) error
	// Batch returns the status of one batch, or an error wrapping ErrNotFound.
	Batch(ctx context.Context, batchID string) (BatchStatus, error)
	// Batches lists the most recently submitted batches, newest first (limit <= 0:
	// all).
	Batches(ctx context.Context, limit int) ([]BatchStatus, error)
	// Metrics returns the metrics kept for a batch (see BatchMetrics), or an error
	// wrapping ErrNotFound when its manifest is not stored. A batch with no result
	// stored yet has zero metrics.
	Metrics(ctx context.Context, batchID string) (BatchMetrics, error)
	// Results calls fn for each stored result of a batch in ascending Seq, with its
	// cards (nil when it has none), stopping at the first error fn returns. A batch
	// with nothing stored yields nothing and no error.
	Results(ctx context.Context, batchID string, filter ResultFilter, fn func(Result) error) error
	// SetAside keeps events the store refused for good (see DeadLetter) with their
	// reason, so that nothing is lost when the sink moves on.
	SetAside(ctx context.Context, letters []DeadLetter) error
	// DeadLetters lists the events set aside, oldest first: of one batch, or of every
	// batch when batchID is empty.
	DeadLetters(ctx context.Context, batchID string) ([]DeadLetter, error)
	// Resolve removes dead letters by id, once they have been replayed.
	Resolve(ctx context.Context, ids []int64) error
	// Close releases the store's connections.
	Close() error
}
