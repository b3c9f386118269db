package flashpipe

import (
	"context"
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
)

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
	// latest generation's), StartedAt when its first result was stored, CompletedAt
	// when the latest generation completed.
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
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
	// Results calls fn for each stored result of a batch in ascending Seq, with its
	// cards (nil when it has none), stopping at the first error fn returns. A batch
	// with nothing stored yields nothing and no error.
	Results(ctx context.Context, batchID string, filter ResultFilter, fn func(Result) error) error
	// Close releases the store's connections.
	Close() error
}
