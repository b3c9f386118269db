package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/flashpipe/flashpipe/internal/store"
)

var _ store.Pruner = (*Store)(nil)

// sqlPruneVictims selects one chunk of complete batches submitted and completed before
// $1 (at most $2), oldest first; see postgres.sqlPrune. It runs in the write
// transaction, which holds SQLite's write lock, so the state cannot change before the
// deletes.
const sqlPruneVictims = `
SELECT b.batch_id FROM batches b
WHERE b.manifest IS NOT NULL AND b.submitted_at < ?1 AND b.completed_at < ?1
	AND b.completed_generation >= b.generation
	AND (SELECT count(*) FROM items i WHERE i.batch_id = b.batch_id AND i.generation >= b.completed_generation) >= b.emitted
ORDER BY b.submitted_at
LIMIT ?2`

// Prune implements store.Pruner. Cards follow their items by ON DELETE CASCADE; the
// batch's metrics row goes with its batch.
func (s *Store) Prune(ctx context.Context, before time.Time, chunk int) (store.Pruned, error) {
	if chunk <= 0 {
		chunk = store.DefaultPruneChunk
	}
	var total store.Pruned
	for {
		n, err := s.pruneChunk(ctx, formatTime(before), chunk)
		total.Batches += n.Batches
		total.Items += n.Items
		if err != nil {
			return total, fmt.Errorf("sqlite: prune: %w", classify(err))
		}
		if n.Batches < int64(chunk) {
			return total, nil
		}
	}
}

func (s *Store) pruneChunk(ctx context.Context, before string, chunk int) (store.Pruned, error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return store.Pruned{}, err
	}
	defer tx.Rollback() // no-op after Commit
	rows, err := tx.QueryContext(ctx, sqlPruneVictims, before, chunk)
	if err != nil {
		return store.Pruned{}, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return store.Pruned{}, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return store.Pruned{}, err
	}
	var n store.Pruned
	for _, id := range ids {
		res, err := tx.ExecContext(ctx, `DELETE FROM items WHERE batch_id = ?`, id)
		if err != nil {
			return store.Pruned{}, err
		}
		items, _ := res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `DELETE FROM batches WHERE batch_id = ?`, id); err != nil {
			return store.Pruned{}, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM batch_metrics WHERE batch_id = ?`, id); err != nil {
			return store.Pruned{}, err
		}
		n.Batches++
		n.Items += items
	}
	if err := tx.Commit(); err != nil {
		return store.Pruned{}, err
	}
	return n, nil
}
