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
