// Package postgres is the PostgreSQL driver of flashpipe.Store, built on pgx/v5: the
// production store of the sink. The schema is migrations.Postgres, applied by Migrate
// (or by New with Config.AutoMigrate) with goose.
//
// A Store is safe for concurrent use; its Apply calls are atomic and idempotent (see
// package store for the exact semantics).
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/migrations"
)

// Config configures a Store. The zero value is valid.
type Config struct {
	// AutoMigrate makes New apply pending migrations (see Migrate). Without it, New
	// only checks that the schema is current and fails with an error wrapping
	// store.ErrSchemaOutdated if it is not.
	AutoMigrate bool
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Store is a flashpipe.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
}

var _ flashpipe.Store = (*Store)(nil)

// New returns a Store on pool, which stays owned by the caller: Close does not close
// it. pool's connections must see the flashpipe tables through their search_path.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres: pool is nil")
	}
	cfg = cfg.withDefaults()
	logger := cfg.Logger.With("component", "store", "driver", "postgres")
	if cfg.AutoMigrate {
		if err := Migrate(ctx, pool, logger); err != nil {
			return nil, err
		}
	} else if err := checkSchema(ctx, pool, logger); err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Open connects to the database at databaseURL (a postgres:// URL or a key=value connection
// string) and returns a Store that owns its pool: Close closes it. Errors never
// contain the URL's password.
func Open(ctx context.Context, databaseURL string, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, flashpipe.AsPermanent(fmt.Errorf("postgres: parse database URL: %w", redact(err, databaseURL)))
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", redact(err, databaseURL))
	}
	s, err := New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, redact(err, databaseURL)
	}
	s.ownsPool = true
	return s, nil
}

// Close closes the pool if Open created it. It is safe to call more than once.
func (s *Store) Close() error {
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

// Migrate applies the pending migrations of migrations.Postgres to the schema that
// pool's connections use (the first schema of their search_path). It holds a
// PostgreSQL session advisory lock, keyed by database and schema, while it runs, so
// concurrent migrators (replicas starting together) are safe: one applies, the others
// wait and then find nothing to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var database, schema string
	if err := pool.QueryRow(ctx, `SELECT current_database(), coalesce(current_schema(), '')`).Scan(&database, &schema); err != nil {
		return fmt.Errorf("postgres: migrate: %w", classify(err))
	}
	if schema == "" {
		return flashpipe.AsPermanent(errors.New("postgres: migrate: no schema of the search_path exists"))
	}
	// goose's default lock id is one per database; tests (and deployments) keep one
	// flashpipe schema per search_path, so the lock is taken per database and schema.
	h := fnv.New64a()
	h.Write([]byte("flashpipe-migrate\x00" + database + "\x00" + schema))
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64()>>1)),
		lock.WithLockTimeout(1, 300), // try every second for 5 minutes
	)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool) // closing db leaves pool open
	defer db.Close()
	if err := store.Migrate(ctx, goose.DialectPostgres, db, migrations.Postgres, logger,
		goose.WithSessionLocker(locker)); err != nil {
		return fmt.Errorf("postgres: %w", classify(err))
	}
	return nil
}

// checkSchema fails with store.ErrSchemaOutdated when the schema is older than the
// code's migrations. It reads goose's version table without creating it, so it works
// with a role that may not change the schema. A newer schema than the code knows is
// accepted with a warning (during a rolling upgrade the new version migrates first).
func checkSchema(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	want, err := store.LatestVersion(migrations.Postgres)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	var current int64
	var exists bool
	err = pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists)
	if err == nil && exists {
		err = pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version`).Scan(&current)
	}
	if err != nil {
		return fmt.Errorf("postgres: check schema version: %w", classify(err))
	}
	if current < want {
		return fmt.Errorf("postgres: %w", store.SchemaOutdatedError(current, want))
	}
	if current > want {
		logger.WarnContext(ctx, "database schema is newer than this binary", "schema_version", current, "want", want)
	}
	return nil
}

// The statements of Apply. Results are written with a few statements whatever their
// number, each taking whole columns as arrays (binary-encoded by pgx) and turning them
// into rows with unnest: 500 results and their 1,500 cards are an items upsert, a
// cards delete and a cards insert. COPY, the other bulk path, cannot upsert: it would
// need a temporary table per Apply, filled and then merged with these same upserts, for
// an extra round trip and catalog churn and no saving in the part that costs (the
// server's row, index and foreign key work). pgx's statement cache prepares each
// statement once per connection.
const (
	// A newer generation's manifest replaces the stored one; a row holding only a
	// completion (stored first) takes its manifest and the batch's started_at.
	sqlUpsertManifest = `
INSERT INTO batches AS b (batch_id, generation, item_count, source, content_hash, settings, manifest,
	submitted_at, started_at, base, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT min(written_at) FROM items WHERE batch_id = $1), $9, now())
ON CONFLICT (batch_id) DO UPDATE SET
	generation = excluded.generation, item_count = excluded.item_count, source = excluded.source,
	content_hash = excluded.content_hash, settings = excluded.settings, manifest = excluded.manifest,
	base = greatest(b.base, excluded.base),
	submitted_at = least(b.submitted_at, excluded.submitted_at),
	started_at = coalesce(b.started_at, excluded.started_at), updated_at = now()
WHERE b.generation IS NULL OR b.generation < excluded.generation`

	// The stored manifests of the batches an Apply's manifests name, locked until it
	// commits, so that the conflict check and the writes see one state.
	sqlLockBatches = `
SELECT batch_id, generation, coalesce(base, 0), content_hash FROM batches
WHERE batch_id = ANY($1::text[]) AND manifest IS NOT NULL
FOR UPDATE`

	// A replacement drops the rows of every generation older than the stored base.
	sqlDropReplaced = `
DELETE FROM items i USING batches b
WHERE b.batch_id = $1 AND i.batch_id = $1 AND i.generation < b.base`

	// A result of a newer generation takes its seq from an older generation's row at
	// another position (a replacement renumbered the items).
	sqlEvictSeqs = `
DELETE FROM items i
USING unnest($1::text[], $2::bigint[], $3::int[], $4::int[]) AS u(batch_id, position, seq, generation)
WHERE i.batch_id = u.batch_id AND i.processing_order = u.seq AND i.position <> u.position
	AND i.generation < u.generation`

	// submitted_at is the earliest manifest's, whatever order they came in.
	sqlSubmittedAt = `
UPDATE batches SET submitted_at = $2, updated_at = now() WHERE batch_id = $1 AND submitted_at > $2`

	// Only an incoming generation at least as new as the stored one, not older than the
	// batch's base, and not older than a row holding its seq at another position (a
	// replacement renumbered the items), is written; RETURNING names the items written, whose cards are
	// then replaced.
	sqlUpsertItems = `
INSERT INTO items AS i (batch_id, position, processing_order, generation, term, type, metadata, status,
	analysis, error_stage, error_reason, error_class, next_step, attempts, stage1_calls, stage2_calls,
	cache_hits, cache_misses, prompt_tokens, completion_tokens, cost, processed_at, retries, throttled,
	rate_limit_waits, rate_limit_wait_ms, breaker_waits, breaker_trips, written_at)
SELECT u.*, now() FROM unnest($1::text[], $2::bigint[], $3::int[], $4::int[], $5::text[], $6::text[],
	$7::jsonb[], $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int[],
	$15::int[], $16::int[], $17::int[], $18::int[], $19::bigint[], $20::bigint[], $21::float8[],
	$22::timestamptz[], $23::int[], $24::int[], $25::int[], $26::bigint[], $27::int[], $28::int[])
	AS u(batch_id, position, processing_order, generation, term, type, metadata, status,
	analysis, error_stage, error_reason, error_class, next_step, attempts, stage1_calls, stage2_calls,
	cache_hits, cache_misses, prompt_tokens, completion_tokens, cost, processed_at, retries, throttled,
	rate_limit_waits, rate_limit_wait_ms, breaker_waits, breaker_trips)
WHERE u.generation >= coalesce((SELECT b.base FROM batches b WHERE b.batch_id = u.batch_id), 0)
	AND NOT EXISTS (SELECT 1 FROM items x WHERE x.batch_id = u.batch_id AND x.processing_order = u.processing_order
		AND x.position <> u.position AND x.generation > u.generation)
ON CONFLICT (batch_id, position) DO UPDATE SET
	processing_order = excluded.processing_order, generation = excluded.generation, term = excluded.term,
	type = excluded.type, metadata = excluded.metadata, status = excluded.status,
	analysis = excluded.analysis, error_stage = excluded.error_stage, error_reason = excluded.error_reason,
	error_class = excluded.error_class, next_step = excluded.next_step, attempts = excluded.attempts,
	stage1_calls = excluded.stage1_calls, stage2_calls = excluded.stage2_calls,
	cache_hits = excluded.cache_hits, cache_misses = excluded.cache_misses, prompt_tokens = excluded.prompt_tokens,
	completion_tokens = excluded.completion_tokens, cost = excluded.cost,
	processed_at = excluded.processed_at, written_at = excluded.written_at,
	retries = excluded.retries, throttled = excluded.throttled, rate_limit_waits = excluded.rate_limit_waits,
	rate_limit_wait_ms = excluded.rate_limit_wait_ms, breaker_waits = excluded.breaker_waits,
	breaker_trips = excluded.breaker_trips
WHERE i.generation <= excluded.generation
RETURNING i.batch_id, i.position`

	sqlDeleteCards = `
DELETE FROM flashcards f
USING unnest($1::text[], $2::bigint[]) AS u(batch_id, position)
WHERE f.batch_id = u.batch_id AND f.position = u.position`

	sqlInsertCards = `
INSERT INTO flashcards (batch_id, position, card_index, tab_name, primer, front, back, tags, honorific_level)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::text[])`

	sqlStartBatches = `
UPDATE batches SET started_at = now(), updated_at = now()
WHERE batch_id = ANY($1::text[]) AND started_at IS NULL`

	// The newest generation's completion is kept; of one generation, the earliest.
	sqlCompleteBatch = `
INSERT INTO batches AS b (batch_id, completed_generation, emitted, completed_at, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (batch_id) DO UPDATE SET
	completed_generation = excluded.completed_generation, emitted = excluded.emitted,
	completed_at = excluded.completed_at, updated_at = now()
WHERE b.completed_generation IS NULL OR b.completed_generation < excluded.completed_generation
	OR (b.completed_generation = excluded.completed_generation AND b.completed_at > excluded.completed_at)`
)

// Apply stores events in one transaction: all of them or none. It is idempotent and
// commutative; see package store for the semantics. Invalid events are rejected,
// before anything is written, with an error wrapping store.ErrInvalidEvent; a manifest
// that would mix two item lists under one batch id, with an error wrapping
// flashpipe.ErrBatchConflict.
//
// Apply costs two round trips, each a pgx.Batch sent as one pipeline: the first
// begins the transaction, stores the manifests and upserts the items, returning which
// were written (an older generation is not); the second replaces the cards of exactly
// those items, updates the batches and commits. Knowing the written items in Go keeps
// the card statements free of any join against items, which would otherwise be
// re-read on every call. An Apply with manifests takes one more round trip first, to
// lock and check the stored manifests; one with neither manifests nor results is a
// single round trip.
//
// Two transactions inserting the same new item at once (a result redelivered to a
// second sink while the first writes it) can collide on the seq index rather than on
// the (batch, position) key ON CONFLICT resolves: PostgreSQL then reports a unique
// violation of items_batch_order_idx although nothing is wrong with the data. Apply
// runs the transaction again in that case (the other's row is then committed and
// updated in place); a violation that persists is the data's. Likewise for a
// deadlock or serialization failure the server aborted the transaction for (two sinks
// upserting the same items in opposite orders fire the batch metrics triggers on
// both): the transaction is run again, at most maxApplyAttempts times in all.
func (s *Store) Apply(ctx context.Context, events []flashpipe.Event) error {
	plan, err := store.NewPlan(events)
	if err != nil {
		return err
	}
	if plan.Empty() {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := s.apply(ctx, plan, events)
		if attempt >= maxApplyAttempts || !retryApply(err) {
			return err
		}
	}
}

// maxApplyAttempts bounds the runs of an Apply that meets the seq index race, a
// deadlock or a serialization failure.
const maxApplyAttempts = 3

// retryApply reports whether an Apply that failed with err is run again: the seq
// index race, or a transaction the server aborted for a deadlock (40P01) or a
// serialization failure (40001), which running it again resolves.
func retryApply(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return isOrderRace(err) || pe.Code == "40P01" || pe.Code == "40001"
}

// isOrderRace reports whether err is a unique violation of the items' seq index.
func isOrderRace(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "items_batch_order_idx"
}

func (s *Store) apply(ctx context.Context, plan store.Plan, events []flashpipe.Event) error {
	if len(plan.Results) == 0 && len(plan.Manifests) == 0 {
		// One pipeline, which PostgreSQL runs as one implicit transaction.
		b := &pgx.Batch{}
		queueCompletions(b, plan)
		if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("postgres: apply %d events: %w", len(events), classify(err))
		}
		return nil
	}
	items, itemCards, err := itemArgs(plan)
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: apply %d events: %w", len(events), classify(err))
	}
	defer conn.Release() // destroys the connection if it is still in a transaction
	fail := func(err error) error {
		if c := conn.Conn(); !c.IsClosed() && c.PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
		if flashpipe.IsPermanent(err) && errors.Is(err, flashpipe.ErrBatchConflict) {
			return fmt.Errorf("postgres: apply %d events: %w", len(events), err)
		}
		return fmt.Errorf("postgres: apply %d events: %w", len(events), classify(err))
	}

	first := &pgx.Batch{}
	first.Queue("BEGIN")
	if len(plan.Manifests) > 0 {
		stored := map[string]store.StoredManifest{}
		ids := make([]string, len(plan.Manifests))
		for i, m := range plan.Manifests {
			ids[i] = m.BatchID
		}
		first.Queue(sqlLockBatches, ids).Query(func(rows pgx.Rows) error {
			var (
				id string
				m  store.StoredManifest
			)
			_, err := pgx.ForEachRow(rows, []any{&id, &m.Generation, &m.Base, &m.ContentHash}, func() error {
				stored[id] = m
				return nil
			})
			return err
		})
		if err := conn.SendBatch(ctx, first).Close(); err != nil {
			return fail(err)
		}
		if err := store.CheckManifests(stored, plan.Manifests); err != nil {
			return fail(err)
		}
		first = &pgx.Batch{}
	}
	if err := queueManifests(first, plan); err != nil {
		return fail(err)
	}
	if len(plan.Results) == 0 {
		queueCompletions(first, plan)
		first.Queue("COMMIT")
		if err := conn.SendBatch(ctx, first).Close(); err != nil {
			return fail(err)
		}
		return nil
	}
	if plan.Renumbers() {
		first.Queue(sqlEvictSeqs, items[0], items[1], items[2], items[3])
	}
	written := make(map[itemKey]bool, len(plan.Results))
	first.Queue(sqlUpsertItems, items...).Query(func(rows pgx.Rows) error {
		var k itemKey
		_, err := pgx.ForEachRow(rows, []any{&k.batchID, &k.position}, func() error {
			written[k] = true
			return nil
		})
		return err
	})
	if err := conn.SendBatch(ctx, first).Close(); err != nil {
		return fail(err)
	}

	var (
		delBatch []string
		delPos   []int64
		cards    cardColumns
	)
	for i, r := range plan.Results {
		if written[itemKey{r.BatchID, r.Position}] {
			delBatch, delPos = append(delBatch, r.BatchID), append(delPos, r.Position)
			cards.add(r.BatchID, r.Position, itemCards[i])
		}
	}
	second := &pgx.Batch{}
	if len(delBatch) > 0 {
		second.Queue(sqlDeleteCards, delBatch, delPos)
	}
	if len(cards.batch) > 0 {
		second.Queue(sqlInsertCards, cards.batch, cards.pos, cards.index, cards.tab, cards.primer, cards.front,
			cards.back, cards.tags, cards.level)
	}
	second.Queue(sqlStartBatches, plan.ResultBatches)
	queueCompletions(second, plan)
	second.Queue("COMMIT")
	if err := conn.SendBatch(ctx, second).Close(); err != nil {
		return fail(err)
	}
	return nil
}

type itemKey struct {
	batchID  string
	position int64
}

func queueManifests(b *pgx.Batch, plan store.Plan) error {
	for _, m := range plan.Manifests {
		c, err := store.EncodeManifest(m)
		if err != nil {
			return err
		}
		b.Queue(sqlUpsertManifest, m.BatchID, m.Generation, m.Count, c.Source, c.ContentHash,
			c.Settings, c.Manifest, m.CreatedAt, m.Base)
		b.Queue(sqlSubmittedAt, m.BatchID, m.CreatedAt)
		if m.Base > 0 {
			b.Queue(sqlDropReplaced, m.BatchID)
		}
	}
	return nil
}

func queueCompletions(b *pgx.Batch, plan store.Plan) {
	for _, c := range plan.Completions {
		b.Queue(sqlCompleteBatch, c.BatchID, c.Generation, c.Emitted, c.CompletedAt)
	}
}

// itemArgs returns the arguments of sqlUpsertItems, one array per column, and the
// cleaned cards of each result of plan.Results.
func itemArgs(plan store.Plan) ([]any, [][]flashpipe.Card, error) {
	n := len(plan.Results)
	var (
		batchIDs                                    = make([]string, n)
		positions                                   = make([]int64, n)
		seqs, gens, attempts                        = make([]int32, n), make([]int32, n), make([]int32, n)
		s1, s2, hits, misses                        = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		terms, types, statuses                      = make([]string, n), make([]string, n), make([]string, n)
		metadata, analyses                          = make([]*string, n), make([]*string, n)
		errStages, errReasons, errClasses, nextStep = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		promptTokens, completionTokens              = make([]int64, n), make([]int64, n)
		costs                                       = make([]float64, n)
		processedAt                                 = make([]time.Time, n)
		retries, throttled, rlWaits, breakerWaits   = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		breakerTrips                                = make([]int32, n)
		rlWaitMS                                    = make([]int64, n)
		cards                                       = make([][]flashpipe.Card, n)
	)
	for i, r := range plan.Results {
		cols, err := store.EncodeItem(r)
		if err != nil {
			return nil, nil, err
		}
		batchIDs[i], positions[i] = r.BatchID, r.Position
		seqs[i], gens[i], attempts[i] = int32(r.Seq), int32(r.Generation), int32(r.Attempts)
		terms[i], types[i], statuses[i] = cols.Term, cols.Type, string(r.Status)
		metadata[i], analyses[i] = jsonText(cols.Metadata), jsonText(cols.Analysis)
		errStages[i], errReasons[i], errClasses[i], nextStep[i] = cols.ErrorStage, cols.ErrorReason, cols.ErrorClass, cols.NextStep
		u := r.Usage
		s1[i], s2[i], hits[i], misses[i] = int32(u.Stage1Calls), int32(u.Stage2Calls), int32(u.CacheHits), int32(u.CacheMisses)
		promptTokens[i], completionTokens[i], costs[i] = u.PromptTokens, u.CompletionTokens, u.Cost
		processedAt[i] = cols.ProcessedAt
		retries[i], throttled[i], rlWaits[i], rlWaitMS[i] = int32(u.Retries), int32(u.Throttled), int32(u.RateLimitWaits), u.RateLimitWaitMS
		breakerWaits[i], breakerTrips[i] = int32(u.BreakerWaits), int32(u.BreakerTrips)
		cards[i] = cols.Cards
	}
	return []any{batchIDs, positions, seqs, gens, terms, types, metadata, statuses, analyses, errStages,
		errReasons, errClasses, nextStep, attempts, s1, s2, hits, misses, promptTokens, completionTokens, costs,
		processedAt, retries, throttled, rlWaits, rlWaitMS, breakerWaits, breakerTrips}, cards, nil
}

// cardColumns are the arguments of sqlInsertCards: one array per column.
type cardColumns struct {
	batch                                 []string
	pos                                   []int64
	index                                 []int32
	tab, primer, front, back, tags, level []string
}

func (c *cardColumns) add(batchID string, position int64, cards []flashpipe.Card) {
	for i, card := range cards {
		c.batch, c.pos, c.index = append(c.batch, batchID), append(c.pos, position), append(c.index, int32(i))
		c.tab, c.primer, c.front = append(c.tab, card.TabName), append(c.primer, card.Primer), append(c.front, card.Front)
		c.back, c.tags, c.level = append(c.back, card.Back), append(c.tags, card.Tags), append(c.level, card.HonorificLevel)
	}
}

// jsonText returns encoded JSON as an element of a jsonb[] argument, nil as NULL.
func jsonText(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// sqlBatchStatus reads batches with their counts and usage summed over their items,
// and counted: the items that the stored completion counts (see store.BatchState). One
// pass over each batch's items computes them all, so deriving the state costs nothing
// beyond the counts, and Batches is one statement however many batches it lists. A
// row without a manifest (a completion stored first) is no batch yet.
const sqlBatchStatus = `
SELECT b.batch_id, b.manifest, b.generation, b.submitted_at, a.first_processed,
	b.completed_generation, b.emitted, b.completed_at,
	a.done, a.ok, a.failed, a.counted, a.stage1_calls, a.stage2_calls, a.cache_hits, a.cache_misses,
	a.prompt_tokens, a.completion_tokens, a.cost,
	(SELECT count(*) FROM dead_letters d WHERE d.batch_id = b.batch_id),
	(SELECT d.reason FROM dead_letters d WHERE d.batch_id = b.batch_id ORDER BY d.id DESC LIMIT 1)
FROM batches b
CROSS JOIN LATERAL (
	SELECT count(*) AS done,
		count(*) FILTER (WHERE i.status = 'ok') AS ok,
		count(*) FILTER (WHERE i.status = 'failed') AS failed,
		count(*) FILTER (WHERE i.generation >= b.completed_generation) AS counted,
		coalesce(sum(i.stage1_calls), 0)::bigint AS stage1_calls,
		coalesce(sum(i.stage2_calls), 0)::bigint AS stage2_calls,
		coalesce(sum(i.cache_hits), 0)::bigint AS cache_hits,
		coalesce(sum(i.cache_misses), 0)::bigint AS cache_misses,
		coalesce(sum(i.prompt_tokens), 0)::bigint AS prompt_tokens,
		coalesce(sum(i.completion_tokens), 0)::bigint AS completion_tokens,
		coalesce(sum(i.cost), 0)::float8 AS cost,
		min(i.processed_at) AS first_processed
	FROM items i WHERE i.batch_id = b.batch_id
) a
WHERE b.manifest IS NOT NULL`

// Batch returns the status of one batch, or an error wrapping flashpipe.ErrNotFound.
// Its counts and usage are summed over the batch's stored items, and its state derived
// from them and the stored completion (see package store).
func (s *Store) Batch(ctx context.Context, batchID string) (flashpipe.BatchStatus, error) {
	rows, err := s.pool.Query(ctx, sqlBatchStatus+` AND b.batch_id = $1`, batchID)
	if err != nil {
		return flashpipe.BatchStatus{}, fmt.Errorf("postgres: batch %q: %w", batchID, classify(err))
	}
	statuses, err := collectStatuses(rows)
	if err != nil {
		return flashpipe.BatchStatus{}, fmt.Errorf("postgres: batch %q: %w", batchID, err)
	}
	if len(statuses) == 0 {
		return flashpipe.BatchStatus{}, fmt.Errorf("batch %q: %w", batchID, flashpipe.ErrNotFound)
	}
	return statuses[0], nil
}

// Batches lists the most recently submitted batches, newest first (ties by batch id,
// descending). limit <= 0 means no limit.
func (s *Store) Batches(ctx context.Context, limit int) ([]flashpipe.BatchStatus, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, sqlBatchStatus+` ORDER BY b.submitted_at DESC, b.batch_id DESC LIMIT $1`, lim)
	if err != nil {
		return nil, fmt.Errorf("postgres: batches: %w", classify(err))
	}
	statuses, err := collectStatuses(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: batches: %w", err)
	}
	return statuses, nil
}

func collectStatuses(rows pgx.Rows) ([]flashpipe.BatchStatus, error) {
	defer rows.Close()
	var out []flashpipe.BatchStatus
	for rows.Next() {
		var (
			st                                                      flashpipe.BatchStatus
			batchID                                                 string
			manifest                                                []byte
			generation                                              int
			startedAt, completedAt                                  *time.Time
			completedGen, emitted                                   *int
			done, ok, failed, counted, s1, s2, hits, misses, pt, ct int64
			setAside                                                int64
			problem                                                 *string
		)
		if err := rows.Scan(&batchID, &manifest, &generation, &st.SubmittedAt, &startedAt,
			&completedGen, &emitted, &completedAt,
			&done, &ok, &failed, &counted, &s1, &s2, &hits, &misses, &pt, &ct, &st.Usage.Cost,
			&setAside, &problem); err != nil {
			return nil, classify(err)
		}
		m, err := store.DecodeManifest(batchID, manifest)
		if err != nil {
			return nil, err
		}
		st.Manifest = m
		st.SubmittedAt = st.SubmittedAt.UTC()
		st.StartedAt = utcPtr(startedAt)
		var c *store.StoredCompletion
		if completedGen != nil && emitted != nil && completedAt != nil {
			c = &store.StoredCompletion{Generation: *completedGen, Emitted: *emitted, At: completedAt.UTC()}
		}
		st.SetAside, st.Problem = int(setAside), deref(problem)
		st.State, st.CompletedAt = store.BatchState(generation, c, int(counted), st.SetAside)
		st.Done, st.OK, st.Failed = int(done), int(ok), int(failed)
		st.Usage.Stage1Calls, st.Usage.Stage2Calls = int(s1), int(s2)
		st.Usage.CacheHits, st.Usage.CacheMisses = int(hits), int(misses)
		st.Usage.PromptTokens, st.Usage.CompletionTokens = pt, ct
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// SetAside keeps events the store refused, with their reasons; an event already set
// aside keeps one letter, with the latest reason.
func (s *Store) SetAside(ctx context.Context, letters []flashpipe.DeadLetter) error {
	b := &pgx.Batch{}
	for _, d := range letters {
		c, err := store.EncodeDeadLetter(d)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO dead_letters (event_key, batch_id, kind, seq, event, reason, at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (event_key) DO UPDATE SET reason = excluded.reason, at = excluded.at, event = excluded.event`,
			c.Key, c.BatchID, c.Kind, c.Seq, c.Event, c.Reason, c.At)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: set aside %d events: %w", len(letters), classify(err))
	}
	return nil
}

// DeadLetters lists the events set aside, oldest first, of one batch or (batchID
// empty) of all.
func (s *Store) DeadLetters(ctx context.Context, batchID string) ([]flashpipe.DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, event, reason, at FROM dead_letters
WHERE $1 = '' OR batch_id = $1 ORDER BY id`, batchID)
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", classify(err))
	}
	var (
		out    []flashpipe.DeadLetter
		id     int64
		event  []byte
		reason string
		at     time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &event, &reason, &at}, func() error {
		d, err := store.DecodeDeadLetter(id, event, reason, at)
		out = append(out, d)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", classify(err))
	}
	return out, nil
}

// Resolve removes dead letters by id.
func (s *Store) Resolve(ctx context.Context, ids []int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM dead_letters WHERE id = ANY($1::bigint[])`, ids); err != nil {
		return fmt.Errorf("postgres: resolve dead letters: %w", classify(err))
	}
	return nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// sqlResultsPage reads one page of a batch's items after a Seq, each with its cards
// aggregated into a JSON array in card order: one statement, so each item and its
// cards come from one snapshot.
// sqlMetrics reads a batch's metrics row (kept by the triggers of migration 00003)
// with its manifest, for the mode.
const sqlMetrics = `
SELECT b.manifest, coalesce(m.results, 0), coalesce(m.stage1_calls, 0), coalesce(m.stage2_calls, 0),
	coalesce(m.cache_hits, 0), coalesce(m.cache_misses, 0), coalesce(m.prompt_tokens, 0),
	coalesce(m.completion_tokens, 0), coalesce(m.retries, 0), coalesce(m.throttled, 0),
	coalesce(m.rate_limit_waits, 0), coalesce(m.rate_limit_wait_ms, 0), coalesce(m.breaker_waits, 0),
	coalesce(m.breaker_trips, 0), coalesce(m.cost_settled, 0), coalesce(m.cost_reserved, 0),
	m.first_result_at, m.last_result_at
FROM batches b LEFT JOIN batch_metrics m ON m.batch_id = b.batch_id
WHERE b.batch_id = $1 AND b.manifest IS NOT NULL`

// Metrics returns the metrics kept for a batch, or an error wrapping
// flashpipe.ErrNotFound when its manifest is not stored.
func (s *Store) Metrics(ctx context.Context, batchID string) (flashpipe.BatchMetrics, error) {
	m := flashpipe.BatchMetrics{BatchID: batchID}
	var manifest []byte
	err := s.pool.QueryRow(ctx, sqlMetrics, batchID).Scan(&manifest, &m.Results, &m.Stage1Calls,
		&m.Stage2Calls, &m.CacheHits, &m.CacheMisses, &m.PromptTokens, &m.CompletionTokens, &m.Retries,
		&m.Throttled, &m.RateLimitWaits, &m.RateLimitWaitMS, &m.BreakerWaits, &m.BreakerTrips, &m.CostSettled,
		&m.CostReserved, &m.FirstResultAt, &m.LastResultAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("batch %q: %w", batchID, flashpipe.ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("postgres: metrics of batch %q: %w", batchID, classify(err))
	}
	mf, err := store.DecodeManifest(batchID, manifest)
	if err != nil {
		return m, err
	}
	m.Mode = mf.APIMode()
	m.FirstResultAt, m.LastResultAt = utcPtr(m.FirstResultAt), utcPtr(m.LastResultAt)
	m.Finish()
	return m, nil
}

const sqlResultsPage = `
SELECT i.position, i.processing_order, i.generation, i.term, i.type, i.metadata, i.status, i.analysis,
	i.error_stage, i.error_reason, i.error_class, i.next_step, i.attempts, i.stage1_calls,
	i.stage2_calls, i.cache_hits, i.cache_misses, i.prompt_tokens, i.completion_tokens, i.cost, i.processed_at,
	i.retries, i.throttled, i.rate_limit_waits, i.rate_limit_wait_ms, i.breaker_waits, i.breaker_trips,
	(SELECT json_agg(json_build_object('tab_name', c.tab_name, 'primer', c.primer, 'front', c.front,
			'back', c.back, 'tags', c.tags, 'honorific_level', c.honorific_level) ORDER BY c.card_index)
		FROM flashcards c WHERE c.batch_id = i.batch_id AND c.position = i.position)
FROM items i
WHERE i.batch_id = $1 AND i.processing_order > $2 AND ($3::text IS NULL OR i.status = $3)
ORDER BY i.processing_order
LIMIT $4`

// Results calls fn for each stored result of batchID in ascending Seq, with its cards
// in order, stopping at and returning the first error fn returns. It reads
// store.ResultsPageSize items per query and holds no connection while fn runs, so a
// batch of any size streams in bounded memory. Each page is a consistent snapshot;
// a result stored while Results runs may or may not be seen. A batch with no stored
// results (or no batch at all) yields no call and no error.
func (s *Store) Results(ctx context.Context, batchID string, filter flashpipe.ResultFilter, fn func(flashpipe.Result) error) error {
	var status any
	if filter.Status != "" {
		status = string(filter.Status)
	}
	return store.EachPage(func(after int) ([]flashpipe.Result, error) {
		page, err := s.resultsPage(ctx, batchID, after, status)
		if err != nil {
			return nil, fmt.Errorf("postgres: results of batch %q: %w", batchID, err)
		}
		return page, nil
	}, fn)
}

func (s *Store) resultsPage(ctx context.Context, batchID string, after int, status any) ([]flashpipe.Result, error) {
	rows, err := s.pool.Query(ctx, sqlResultsPage, batchID, after, status, store.ResultsPageSize)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	page := make([]flashpipe.Result, 0, store.ResultsPageSize)
	for rows.Next() {
		r := flashpipe.Result{BatchID: batchID}
		var (
			metadata, analysis, cards               []byte
			errStage, errReason, errClass, nextStep *string
			status                                  string
		)
		if err := rows.Scan(&r.Position, &r.Seq, &r.Generation, &r.Term, &r.Type, &metadata, &status, &analysis,
			&errStage, &errReason, &errClass, &nextStep, &r.Attempts, &r.Usage.Stage1Calls,
			&r.Usage.Stage2Calls, &r.Usage.CacheHits, &r.Usage.CacheMisses, &r.Usage.PromptTokens,
			&r.Usage.CompletionTokens, &r.Usage.Cost, &r.ProcessedAt, &r.Usage.Retries, &r.Usage.Throttled,
			&r.Usage.RateLimitWaits, &r.Usage.RateLimitWaitMS, &r.Usage.BreakerWaits, &r.Usage.BreakerTrips,
			&cards); err != nil {
			return nil, classify(err)
		}
		r.Status = flashpipe.Status(status)
		r.ProcessedAt = r.ProcessedAt.UTC()
		if err := store.DecodeItem(&r, metadata, analysis, errStage, errReason, errClass, nextStep); err != nil {
			return nil, err
		}
		if cards != nil {
			if err := json.Unmarshal(cards, &r.Cards); err != nil {
				return nil, fmt.Errorf("seq %d: decode cards: %w", r.Seq, err)
			}
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return page, nil
}

// classify marks err by what it means. Only errors the data itself causes are
// permanent: class 22 (data exception) and 23 (integrity constraint violation), which
// fail the same way however often the write is tried. Every error of the environment
// is transient, to be waited out while an operator fixes it: a permission revoked
// (42501) or a table or schema missing or changed (the rest of class 42, 3F, 0A, during
// a restore or before the migrations ran), authentication (28), a read-only database
// (25006), connections (08), resources and a full disk (53), shutdowns (57), system
// and internal errors (58, XX), locks and serialization (40, 55). Each is wrapped with
// its cause (store.CauseOf) for logs, metrics and status.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		if isConnError(err) {
			return store.Environment(store.CauseConnection, err)
		}
		return err
	}
	code := pgErr.Code
	switch {
	case strings.HasPrefix(code, "22"), strings.HasPrefix(code, "23"):
		return flashpipe.AsPermanent(err)
	case code == "42501", strings.HasPrefix(code, "28"):
		return store.Environment(store.CausePermission, err)
	case strings.HasPrefix(code, "42"), strings.HasPrefix(code, "3F"), strings.HasPrefix(code, "3D"), strings.HasPrefix(code, "0A"):
		return store.Environment(store.CauseSchema, err)
	case code == "25006":
		return store.Environment(store.CauseReadOnly, err)
	case code == "53100":
		return store.Environment(store.CauseDiskFull, err)
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "57"):
		return store.Environment(store.CauseConnection, err)
	}
	return store.Environment(store.CauseOther, err)
}

// isConnError reports whether err, not a server error, means the database could not be
// reached or the connection broke.
func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.SafeToRetry(err) || errors.Is(err, io.ErrUnexpectedEOF)
}

var (
	redactURLUserinfo = regexp.MustCompile(`://[^\s/]*@`)
	redactKVPassword  = regexp.MustCompile(`(?i)password\s*=\s*('[^']*'|\S*)`)
)

// redact returns err with every trace of connString's password removed from its
// message. pgx redacts passwords itself on a best-effort basis; this is the belt to
// its braces. When anything had to be removed, the returned error does not unwrap to
// err (whose own message would still show it), keeping only its classification.
func redact(err error, connString string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := redactURLUserinfo.ReplaceAllString(msg, "://xxxxx@")
	clean = redactKVPassword.ReplaceAllString(clean, "password=xxxxx")
	for _, secret := range passwords(connString) {
		clean = strings.ReplaceAll(clean, secret, "xxxxx")
		if q := url.QueryEscape(secret); q != secret {
			clean = strings.ReplaceAll(clean, q, "xxxxx")
		}
	}
	if clean == msg {
		return err
	}
	redacted := errors.New(clean)
	if flashpipe.IsPermanent(err) {
		return flashpipe.AsPermanent(redacted)
	}
	return redacted
}

// passwords returns the strings of connString that may be a password: the URL's
// password (raw and decoded) and any password=... value.
func passwords(connString string) []string {
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s)
		}
	}
	if rest, ok := strings.CutPrefix(connString, "postgres://"); ok || strings.HasPrefix(connString, "postgresql://") {
		if !ok {
			rest = strings.TrimPrefix(connString, "postgresql://")
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, found := strings.Cut(rest[:at], ":"); found {
				add(pw)
				if dec, err := url.PathUnescape(pw); err == nil && dec != pw {
					add(dec)
				}
			}
		}
		if u, err := url.Parse(connString); err == nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			}
			add(u.Query().Get("password"))
		}
	}
	for _, m := range redactKVPassword.FindAllStringSubmatch(connString, -1) {
		add(strings.Trim(m[1], "'"))
	}
	return out
}
