package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/flashpipe/flashpipe/internal/store"
)

var _ store.Pruner = (*Store)(nil)

// sqlPrune deletes one chunk of complete batches submitted and completed before $1
// (at most $2), oldest first, with their items (their cards follow by ON DELETE
// CASCADE) and metrics rows. A batch is complete when its completion is of its manifest's generation or
// a newer one and counts no more items than it has results of that generation (see
// store.BatchState). The batch rows are locked (SKIP LOCKED: a batch the sink is
// writing is left for the next run) and the state re-checked under the lock, so a
// retry manifest stored concurrently keeps its batch.
const sqlPrune = `
WITH victims AS (
	SELECT b.batch_id FROM batches b
	WHERE b.manifest IS NOT NULL AND b.submitted_at < $1 AND b.completed_at < $1
		AND b.completed_generation >= b.generation
		AND (SELECT count(*) FROM items i WHERE i.batch_id = b.batch_id AND i.generation >= b.completed_generation) >= b.emitted
	ORDER BY b.submitted_at
	LIMIT $2
	FOR UPDATE OF b SKIP LOCKED
), gone AS (
	DELETE FROM items i USING victims v WHERE i.batch_id = v.batch_id RETURNING 1
), batches_gone AS (
	DELETE FROM batches b USING victims v WHERE b.batch_id = v.batch_id RETURNING 1
), metrics_gone AS (
	DELETE FROM batch_metrics m USING victims v WHERE m.batch_id = v.batch_id RETURNING 1
)
SELECT (SELECT count(*) FROM batches_gone), (SELECT count(*) FROM gone)`

// Prune implements store.Pruner.
func (s *Store) Prune(ctx context.Context, before time.Time, chunk int) (store.Pruned, error) {
	if chunk <= 0 {
		chunk = store.DefaultPruneChunk
	}
	var total store.Pruned
	for {
		var n store.Pruned
		if err := s.pool.QueryRow(ctx, sqlPrune, before, chunk).Scan(&n.Batches, &n.Items); err != nil {
			return total, fmt.Errorf("postgres: prune: %w", classify(err))
		}
		total.Batches += n.Batches
		total.Items += n.Items
		if n.Batches < int64(chunk) {
			return total, nil
		}
	}
}
