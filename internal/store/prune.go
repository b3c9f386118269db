package store

import (
	"context"
	"time"
)

// DefaultPruneChunk is how many batches a Pruner deletes per transaction, so a prune
// never holds locks for long against the sink.
const DefaultPruneChunk = 500

// Pruner deletes old batches from a store; both drivers implement it. The streams
// are not touched: a pruned batch still within the ordered stream's window can be
// brought back with replay.
type Pruner interface {
	// Prune deletes every batch that is complete and was both submitted and last
	// completed before before, with its items and cards, in transactions of at most
	// chunk batches (chunk <= 0: DefaultPruneChunk). A running batch (its latest
	// generation not complete, or a completion stored before results it counts) is
	// never deleted, nor a completion stored without its manifest. It returns what it
	// deleted, also when it stops at an error.
	Prune(ctx context.Context, before time.Time, chunk int) (Pruned, error)
}

// Pruned counts what a Prune deleted.
type Pruned struct {
	Batches int64 `json:"batches"`
	Items   int64 `json:"items"`
}
