// Package sqlite is the embedded driver of flashpipe.Store: one SQLite database file,
// through modernc.org/sqlite (pure Go, no cgo). It is the store of the single-process
// mode. Open applies the schema (migrations.SQLite) itself.
//
// The database runs in WAL mode: one writer connection serialises every write, while a
// small pool of read-only connections serves Batch, Batches and Results concurrently
// with the writes and with each other.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	sqlite3 "modernc.org/sqlite"
	sqlite3lib "modernc.org/sqlite/lib"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/migrations"
)

// Defaults of Config.
const (
	DefaultSynchronous = "FULL"
	DefaultBusyTimeout = 5 * time.Second
	DefaultReaders     = 4
)

// Config configures a Store.
type Config struct {
	// Path is the database file, created if missing. Required.
	Path string
	// Synchronous is SQLite's synchronous setting: "FULL" (the default) or "NORMAL".
	//
	// FULL syncs the write-ahead log to disk at every commit: once Apply returns, its
	// events survive a crash of the process and of the machine (power loss, kernel
	// panic). NORMAL skips that sync and syncs only at checkpoints: an Apply that
	// returned survives a crash of the process, but a machine crash may lose the last
	// commits (never corrupting the database). NORMAL writes faster on slow disks; use it
	// only where the events can be replayed (the ordered stream keeps them), since the
	// sink acknowledges events once Apply returns.
	Synchronous string
	// BusyTimeout is how long a statement waits for a lock held by another process
	// using the same file before failing. Default DefaultBusyTimeout.
	BusyTimeout time.Duration
	// Readers is the number of read connections. Default DefaultReaders.
	Readers int
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Synchronous == "" {
		c.Synchronous = DefaultSynchronous
	}
	c.Synchronous = strings.ToUpper(c.Synchronous)
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
	if c.Readers == 0 {
		c.Readers = DefaultReaders
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Path == "":
		return errors.New("sqlite: Config.Path is empty")
	case c.Synchronous != "FULL" && c.Synchronous != "NORMAL":
		return fmt.Errorf("sqlite: Config.Synchronous is %q, want FULL or NORMAL", c.Synchronous)
	case c.BusyTimeout < 0:
		return fmt.Errorf("sqlite: Config.BusyTimeout is negative (%v)", c.BusyTimeout)
	case c.Readers < 0:
		return fmt.Errorf("sqlite: Config.Readers is negative (%d)", c.Readers)
	}
	return nil
}

// Store is a flashpipe.Store on a SQLite file. It is safe for concurrent use.
type Store struct {
	writer  *sql.DB // one connection: writes are serialised
	readers *sql.DB // query_only connections

	// Statements of Apply, prepared once on the writer connection and reused by each
	// transaction (tx.StmtContext finds them prepared on that connection).
	upsertManifest, submittedAt, upsertItem, deleteCards, insertCard, startBatch, completeBatch *sql.Stmt
}

var _ flashpipe.Store = (*Store)(nil)

// Open opens (creating if needed) the database at cfg.Path, brings its schema up to
// date and returns a Store on it. Close releases it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, flashpipe.AsPermanent(err)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: Config.Path: %w", err)
	}
	logger := cfg.Logger.With("component", "store", "driver", "sqlite", "path", path)
	s := &Store{}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	busy := strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)
	common := []string{"busy_timeout(" + busy + ")", "foreign_keys(1)"}
	// BEGIN IMMEDIATE takes the write lock when a write transaction starts, so
	// another process's writer makes it wait (busy_timeout) instead of failing later.
	s.writer, err = sql.Open("sqlite", dsn(path, append(common, "journal_mode(WAL)", "synchronous("+cfg.Synchronous+")"),
		"_txlock=immediate"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)
	// The writer connection sets WAL mode (kept in the file) before any reader opens.
	if err := store.Migrate(ctx, goose.DialectSQLite3, s.writer, migrations.SQLite, logger); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", path, classify(err))
	}

	s.readers, err = sql.Open("sqlite", dsn(path, append(common, "query_only(1)")))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.readers.SetMaxOpenConns(cfg.Readers)
	s.readers.SetMaxIdleConns(cfg.Readers)

	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.upsertManifest, sqlUpsertManifest},
		{&s.submittedAt, sqlSubmittedAt},
		{&s.upsertItem, sqlUpsertItem},
		{&s.deleteCards, sqlDeleteCards},
		{&s.insertCard, sqlInsertCard},
		{&s.startBatch, sqlStartBatch},
		{&s.completeBatch, sqlCompleteBatch},
	} {
		if *p.stmt, err = s.writer.PrepareContext(ctx, p.sql); err != nil {
			return nil, fmt.Errorf("sqlite: prepare: %w", classify(err))
		}
	}
	ok = true
	return s, nil
}

// dsn returns modernc.org/sqlite's data source name for the file at path (absolute)
// with the given pragmas, run on every new connection, and extra parameters.
func dsn(path string, pragmas []string, extra ...string) string {
	q := make([]string, 0, len(pragmas)+len(extra))
	for _, p := range pragmas {
		q = append(q, "_pragma="+url.QueryEscape(p))
	}
	q = append(q, extra...)
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: strings.Join(q, "&")}
	return u.String()
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.upsertManifest, s.submittedAt, s.upsertItem, s.deleteCards, s.insertCard, s.startBatch, s.completeBatch} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, db := range []*sql.DB{s.readers, s.writer} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// Time columns are TEXT in UTC with microseconds, fixed width, so that they sort.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

func formatTime(t time.Time) string { return store.UTCMicro(t).Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
	}
	return t.UTC(), nil
}

func parseTimePtr(s *string) (*time.Time, error) {
	if s == nil {
		return nil, nil
	}
	t, err := parseTime(*s)
	return &t, err
}

const (
	// A newer generation's manifest replaces the stored one; a row holding only a
	// completion (stored first) takes its manifest and the batch's started_at.
	sqlUpsertManifest = `
INSERT INTO batches AS b (batch_id, generation, item_count, source, content_hash, settings, manifest,
	submitted_at, started_at, updated_at, base)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT min(written_at) FROM items WHERE batch_id = ?1), ?9, ?10)
ON CONFLICT (batch_id) DO UPDATE SET
	generation = excluded.generation, item_count = excluded.item_count, source = excluded.source,
	content_hash = excluded.content_hash, settings = excluded.settings, manifest = excluded.manifest,
	base = max(coalesce(b.base, 0), excluded.base),
	submitted_at = coalesce(min(b.submitted_at, excluded.submitted_at), excluded.submitted_at),
	started_at = coalesce(b.started_at, excluded.started_at), updated_at = excluded.updated_at
WHERE b.generation IS NULL OR b.generation < excluded.generation`

	// submitted_at is the earliest manifest's, whatever order they came in.
	sqlSubmittedAt = `UPDATE batches SET submitted_at = ?2, updated_at = ?3 WHERE batch_id = ?1 AND submitted_at > ?2`

	// Only an incoming generation at least as new as the stored one, not older than the
	// batch's base, and not older than a row holding its seq at another position (a
	// replacement renumbered the items), is written; the statement changes no row otherwise, which Apply
	// reads from RowsAffected.
	sqlUpsertItem = `
INSERT INTO items AS i (batch_id, position, processing_order, generation, term, type, metadata, status,
	analysis, error_stage, error_reason, error_class, next_step, attempts, stage1_calls, stage2_calls,
	cache_hits, cache_misses, prompt_tokens, completion_tokens, cost, processed_at, written_at,
	retries, throttled, rate_limit_waits, rate_limit_wait_ms, breaker_waits, breaker_trips)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23,
	?24, ?25, ?26, ?27, ?28, ?29
WHERE ?4 >= coalesce((SELECT base FROM batches WHERE batch_id = ?1), 0)
	AND NOT EXISTS (SELECT 1 FROM items x WHERE x.batch_id = ?1 AND x.processing_order = ?3
		AND x.position <> ?2 AND x.generation > ?4)
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
WHERE i.generation <= excluded.generation`

	sqlDeleteCards = `DELETE FROM flashcards WHERE batch_id = ? AND position = ?`

	// The stored manifest of a batch, to check an incoming one against.
	sqlStoredManifest = `
SELECT generation, coalesce(base, 0), content_hash FROM batches WHERE batch_id = ? AND manifest IS NOT NULL`

	// A replacement drops the rows of every generation older than the stored base.
	sqlDropReplaced = `
DELETE FROM items WHERE batch_id = ?1 AND generation < (SELECT base FROM batches WHERE batch_id = ?1)`

	// A result of a newer generation takes its seq from an older generation's row at
	// another position (a replacement renumbered the items).
	sqlEvictSeq = `
DELETE FROM items WHERE batch_id = ?1 AND processing_order = ?2 AND position <> ?3 AND generation < ?4`

	sqlInsertCard = `
INSERT INTO flashcards (batch_id, position, card_index, tab_name, primer, front, back, tags, honorific_level)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

	sqlStartBatch = `UPDATE batches SET started_at = ?1, updated_at = ?1 WHERE batch_id = ?2 AND started_at IS NULL`

	// The newest generation's completion is kept; of one generation, the earliest.
	sqlCompleteBatch = `
INSERT INTO batches AS b (batch_id, completed_generation, emitted, completed_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (batch_id) DO UPDATE SET
	completed_generation = excluded.completed_generation, emitted = excluded.emitted,
	completed_at = excluded.completed_at, updated_at = excluded.updated_at
WHERE b.completed_generation IS NULL OR b.completed_generation < excluded.completed_generation
	OR (b.completed_generation = excluded.completed_generation AND b.completed_at > excluded.completed_at)`
)

// Apply stores events in one transaction: all of them or none. It is idempotent and
// commutative; see package store for the semantics. Invalid events are rejected,
// before anything is written, with an error wrapping store.ErrInvalidEvent.
//
// SQLite runs in this process, so a statement costs no round trip: Apply executes the
// prepared statements once per row (an item, then its cards only if the item was
// written) inside one write transaction, with a single commit (and, with Synchronous
// FULL, a single WAL sync) per call. Calls are serialised on the one writer connection.
func (s *Store) Apply(ctx context.Context, events []flashpipe.Event) (err error) {
	plan, err := store.NewPlan(events)
	if err != nil {
		return err
	}
	if plan.Empty() {
		return nil
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("sqlite: apply %d events: %w", len(events), classify(err))
		}
	}()
	now := formatTime(time.Now())
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit

	if len(plan.Manifests) > 0 {
		stored := map[string]store.StoredManifest{}
		for _, m := range plan.Manifests {
			var st store.StoredManifest
			err := tx.QueryRowContext(ctx, sqlStoredManifest, m.BatchID).Scan(&st.Generation, &st.Base, &st.ContentHash)
			switch {
			case err == nil:
				stored[m.BatchID] = st
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("batch %q manifest: %w", m.BatchID, err)
			}
		}
		if err := store.CheckManifests(stored, plan.Manifests); err != nil {
			return err
		}
		upsert, submitted := tx.StmtContext(ctx, s.upsertManifest), tx.StmtContext(ctx, s.submittedAt)
		for _, m := range plan.Manifests {
			c, err := store.EncodeManifest(m)
			if err != nil {
				return err
			}
			created := formatTime(m.CreatedAt)
			if _, err := upsert.ExecContext(ctx, m.BatchID, m.Generation, m.Count, c.Source, c.ContentHash,
				nullText(c.Settings), string(c.Manifest), created, now, m.Base); err != nil {
				return fmt.Errorf("batch %q manifest: %w", m.BatchID, err)
			}
			if _, err := submitted.ExecContext(ctx, m.BatchID, created, now); err != nil {
				return fmt.Errorf("batch %q manifest: %w", m.BatchID, err)
			}
			if m.Base > 0 {
				if _, err := tx.ExecContext(ctx, sqlDropReplaced, m.BatchID); err != nil {
					return fmt.Errorf("batch %q manifest: %w", m.BatchID, err)
				}
			}
		}
	}
	if len(plan.Results) > 0 {
		upsert, del, ins := tx.StmtContext(ctx, s.upsertItem), tx.StmtContext(ctx, s.deleteCards), tx.StmtContext(ctx, s.insertCard)
		for _, r := range plan.Results {
			cols, err := store.EncodeItem(r)
			if err != nil {
				return err
			}
			if r.Generation > 0 {
				if _, err := tx.ExecContext(ctx, sqlEvictSeq, r.BatchID, r.Seq, r.Position, r.Generation); err != nil {
					return fmt.Errorf("batch %q seq %d: %w", r.BatchID, r.Seq, err)
				}
			}
			u := r.Usage
			res, err := upsert.ExecContext(ctx, r.BatchID, r.Position, r.Seq, r.Generation, cols.Term, cols.Type,
				nullText(cols.Metadata), string(r.Status), nullText(cols.Analysis), cols.ErrorStage, cols.ErrorReason,
				cols.ErrorClass, cols.NextStep, r.Attempts, u.Stage1Calls, u.Stage2Calls, u.CacheHits, u.CacheMisses,
				u.PromptTokens, u.CompletionTokens, u.Cost, formatTime(cols.ProcessedAt), now,
				u.Retries, u.Throttled, u.RateLimitWaits, u.RateLimitWaitMS, u.BreakerWaits, u.BreakerTrips)
			if err != nil {
				return fmt.Errorf("batch %q seq %d: %w", r.BatchID, r.Seq, err)
			}
			written, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if written == 0 {
				continue // a newer generation is stored
			}
			if _, err := del.ExecContext(ctx, r.BatchID, r.Position); err != nil {
				return fmt.Errorf("batch %q seq %d: delete cards: %w", r.BatchID, r.Seq, err)
			}
			for i, c := range cols.Cards {
				if _, err := ins.ExecContext(ctx, r.BatchID, r.Position, i, c.TabName, c.Primer, c.Front, c.Back,
					c.Tags, c.HonorificLevel); err != nil {
					return fmt.Errorf("batch %q seq %d: card %d: %w", r.BatchID, r.Seq, i, err)
				}
			}
		}
		st := tx.StmtContext(ctx, s.startBatch)
		for _, id := range plan.ResultBatches {
			if _, err := st.ExecContext(ctx, now, id); err != nil {
				return fmt.Errorf("batch %q: %w", id, err)
			}
		}
	}
	if len(plan.Completions) > 0 {
		st := tx.StmtContext(ctx, s.completeBatch)
		for _, c := range plan.Completions {
			if _, err := st.ExecContext(ctx, c.BatchID, c.Generation, c.Emitted, formatTime(c.CompletedAt), now); err != nil {
				return fmt.Errorf("batch %q completion: %w", c.BatchID, err)
			}
		}
	}
	return tx.Commit()
}

// SetAside keeps events the store refused, with their reasons; an event already set
// aside keeps one letter, with the latest reason.
func (s *Store) SetAside(ctx context.Context, letters []flashpipe.DeadLetter) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("sqlite: set aside %d events: %w", len(letters), classify(err))
		}
	}()
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, d := range letters {
		c, err := store.EncodeDeadLetter(d)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (event_key, batch_id, kind, seq, event, reason, at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (event_key) DO UPDATE SET reason = excluded.reason, at = excluded.at, event = excluded.event`,
			c.Key, c.BatchID, c.Kind, c.Seq, c.Event, c.Reason, formatTime(c.At)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// DeadLetters lists the events set aside, oldest first, of one batch or (batchID
// empty) of all.
func (s *Store) DeadLetters(ctx context.Context, batchID string) ([]flashpipe.DeadLetter, error) {
	rows, err := s.readers.QueryContext(ctx, `SELECT id, event, reason, at FROM dead_letters
WHERE ?1 = '' OR batch_id = ?1 ORDER BY id`, batchID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", classify(err))
	}
	defer rows.Close()
	var out []flashpipe.DeadLetter
	for rows.Next() {
		var (
			id         int64
			event      []byte
			reason, at string
		)
		if err := rows.Scan(&id, &event, &reason, &at); err != nil {
			return nil, fmt.Errorf("sqlite: dead letters: %w", classify(err))
		}
		t, err := parseTime(at)
		if err != nil {
			return nil, err
		}
		d, err := store.DecodeDeadLetter(id, event, reason, t)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", classify(err))
	}
	return out, nil
}

// Resolve removes dead letters by id.
func (s *Store) Resolve(ctx context.Context, ids []int64) (err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: resolve dead letters: %w", classify(err))
	}
	defer tx.Rollback()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM dead_letters WHERE id = ?`, id); err != nil {
			return fmt.Errorf("sqlite: resolve dead letters: %w", classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: resolve dead letters: %w", classify(err))
	}
	return nil
}

// nullText returns JSON for a TEXT column: NULL when b is nil.
func nullText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// sqlBatchStatus selects batches (from the subquery b, which filters and limits) with
// their counts and usage summed over their items, and counted: the items that the
// stored completion counts (see store.BatchState). One pass over each batch's items
// computes them all, so deriving the state costs nothing beyond the counts, and
// Batches is one statement however many batches it lists.
const sqlBatchStatus = `
SELECT b.batch_id, b.manifest, b.generation, b.submitted_at, min(i.processed_at),
	b.completed_generation, b.emitted, b.completed_at,
	count(i.batch_id), coalesce(sum(i.status = 'ok'), 0), coalesce(sum(i.status = 'failed'), 0),
	coalesce(sum(i.generation >= b.completed_generation), 0),
	coalesce(sum(i.stage1_calls), 0), coalesce(sum(i.stage2_calls), 0), coalesce(sum(i.cache_hits), 0),
	coalesce(sum(i.cache_misses), 0), coalesce(sum(i.prompt_tokens), 0), coalesce(sum(i.completion_tokens), 0),
	coalesce(sum(i.cost), 0.0),
	(SELECT count(*) FROM dead_letters d WHERE d.batch_id = b.batch_id),
	(SELECT d.reason FROM dead_letters d WHERE d.batch_id = b.batch_id ORDER BY d.id DESC LIMIT 1)
FROM (%s) b
LEFT JOIN items i ON i.batch_id = b.batch_id
GROUP BY b.batch_id
ORDER BY b.submitted_at DESC, b.batch_id DESC`

// Batch returns the status of one batch, or an error wrapping flashpipe.ErrNotFound.
// Its counts and usage are summed over the batch's stored items, and its state derived
// from them and the stored completion (see package store).
func (s *Store) Batch(ctx context.Context, batchID string) (flashpipe.BatchStatus, error) {
	// A row without a manifest (a completion stored first) is no batch yet.
	statuses, err := s.statuses(ctx, `SELECT * FROM batches WHERE batch_id = ? AND manifest IS NOT NULL`, batchID)
	if err != nil {
		return flashpipe.BatchStatus{}, fmt.Errorf("sqlite: batch %q: %w", batchID, err)
	}
	if len(statuses) == 0 {
		return flashpipe.BatchStatus{}, fmt.Errorf("batch %q: %w", batchID, flashpipe.ErrNotFound)
	}
	return statuses[0], nil
}

// Batches lists the most recently submitted batches, newest first (ties by batch id,
// descending). limit <= 0 means no limit.
func (s *Store) Batches(ctx context.Context, limit int) ([]flashpipe.BatchStatus, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	statuses, err := s.statuses(ctx, `SELECT * FROM batches WHERE manifest IS NOT NULL
		ORDER BY submitted_at DESC, batch_id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: batches: %w", err)
	}
	return statuses, nil
}

func (s *Store) statuses(ctx context.Context, from string, args ...any) ([]flashpipe.BatchStatus, error) {
	rows, err := s.readers.QueryContext(ctx, fmt.Sprintf(sqlBatchStatus, from), args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []flashpipe.BatchStatus
	for rows.Next() {
		var (
			st                    flashpipe.BatchStatus
			batchID, submitted    string
			manifest              []byte
			generation, counted   int
			started, completed    *string
			completedGen, emitted *int
			s1, s2, hits, misses  int
			problem               *string
		)
		if err := rows.Scan(&batchID, &manifest, &generation, &submitted, &started, &completedGen, &emitted, &completed,
			&st.Done, &st.OK, &st.Failed, &counted, &s1, &s2, &hits, &misses, &st.Usage.PromptTokens,
			&st.Usage.CompletionTokens, &st.Usage.Cost, &st.SetAside, &problem); err != nil {
			return nil, classify(err)
		}
		st.Usage.Stage1Calls, st.Usage.Stage2Calls, st.Usage.CacheHits, st.Usage.CacheMisses = s1, s2, hits, misses
		if st.Manifest, err = store.DecodeManifest(batchID, manifest); err != nil {
			return nil, err
		}
		if st.SubmittedAt, err = parseTime(submitted); err != nil {
			return nil, err
		}
		if st.StartedAt, err = parseTimePtr(started); err != nil {
			return nil, err
		}
		var c *store.StoredCompletion
		if completedGen != nil && emitted != nil && completed != nil {
			c = &store.StoredCompletion{Generation: *completedGen, Emitted: *emitted}
			if c.At, err = parseTime(*completed); err != nil {
				return nil, err
			}
		}
		if problem != nil {
			st.Problem = *problem
		}
		st.State, st.CompletedAt = store.BatchState(generation, c, counted, st.SetAside)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// sqlMetrics reads a batch's metrics row (kept by the triggers of migration 00003)
// with its manifest, for the mode.
const sqlMetrics = `
SELECT b.manifest, coalesce(m.results, 0), coalesce(m.stage1_calls, 0), coalesce(m.stage2_calls, 0),
	coalesce(m.cache_hits, 0), coalesce(m.cache_misses, 0), coalesce(m.prompt_tokens, 0),
	coalesce(m.completion_tokens, 0), coalesce(m.retries, 0), coalesce(m.throttled, 0),
	coalesce(m.rate_limit_waits, 0), coalesce(m.rate_limit_wait_ms, 0), coalesce(m.breaker_waits, 0),
	coalesce(m.breaker_trips, 0), coalesce(m.cost_settled, 0.0), coalesce(m.cost_reserved, 0.0),
	m.first_result_at, m.last_result_at
FROM batches b LEFT JOIN batch_metrics m ON m.batch_id = b.batch_id
WHERE b.batch_id = ? AND b.manifest IS NOT NULL`

// Metrics returns the metrics kept for a batch, or an error wrapping
// flashpipe.ErrNotFound when its manifest is not stored.
func (s *Store) Metrics(ctx context.Context, batchID string) (flashpipe.BatchMetrics, error) {
	m := flashpipe.BatchMetrics{BatchID: batchID}
	var (
		manifest    []byte
		first, last *string
	)
	err := s.readers.QueryRowContext(ctx, sqlMetrics, batchID).Scan(&manifest, &m.Results, &m.Stage1Calls,
		&m.Stage2Calls, &m.CacheHits, &m.CacheMisses, &m.PromptTokens, &m.CompletionTokens, &m.Retries,
		&m.Throttled, &m.RateLimitWaits, &m.RateLimitWaitMS, &m.BreakerWaits, &m.BreakerTrips, &m.CostSettled,
		&m.CostReserved, &first, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("batch %q: %w", batchID, flashpipe.ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("sqlite: metrics of batch %q: %w", batchID, classify(err))
	}
	mf, err := store.DecodeManifest(batchID, manifest)
	if err != nil {
		return m, err
	}
	m.Mode = mf.APIMode()
	if m.FirstResultAt, err = parseTimePtr(first); err != nil {
		return m, err
	}
	if m.LastResultAt, err = parseTimePtr(last); err != nil {
		return m, err
	}
	m.Finish()
	return m, nil
}

const (
	sqlResultsPage = `
SELECT position, processing_order, generation, term, type, metadata, status, analysis, error_stage,
	error_reason, error_class, next_step, attempts, stage1_calls, stage2_calls, cache_hits, cache_misses,
	prompt_tokens, completion_tokens, cost, processed_at, retries, throttled, rate_limit_waits,
	rate_limit_wait_ms, breaker_waits, breaker_trips
FROM items
WHERE batch_id = ?1 AND processing_order > ?2 AND (?3 IS NULL OR status = ?3)
ORDER BY processing_order
LIMIT ?4`

	// The cards of the items with Seq in (?2, ?3], in Seq then card order.
	sqlPageCards = `
SELECT c.position, c.tab_name, c.primer, c.front, c.back, c.tags, c.honorific_level
FROM items i JOIN flashcards c ON c.batch_id = i.batch_id AND c.position = i.position
WHERE i.batch_id = ?1 AND i.processing_order > ?2 AND i.processing_order <= ?3
ORDER BY i.processing_order, c.card_index`
)

// Results calls fn for each stored result of batchID in ascending Seq, with its cards
// in order, stopping at and returning the first error fn returns. It reads
// store.ResultsPageSize items per read transaction and holds none while fn runs (a
// long read transaction would stop WAL checkpoints), so a batch of any size streams in
// bounded memory. Each page is a consistent snapshot; a result stored while Results
// runs may or may not be seen. A batch with no stored results (or no batch at all)
// yields no call and no error.
func (s *Store) Results(ctx context.Context, batchID string, filter flashpipe.ResultFilter, fn func(flashpipe.Result) error) error {
	var status any
	if filter.Status != "" {
		status = string(filter.Status)
	}
	return store.EachPage(func(after int) ([]flashpipe.Result, error) {
		page, err := s.resultsPage(ctx, batchID, after, status)
		if err != nil {
			return nil, fmt.Errorf("sqlite: results of batch %q: %w", batchID, classify(err))
		}
		return page, nil
	}, fn)
}

func (s *Store) resultsPage(ctx context.Context, batchID string, after int, status any) ([]flashpipe.Result, error) {
	tx, err := s.readers.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	rows, err := tx.QueryContext(ctx, sqlResultsPage, batchID, after, status, store.ResultsPageSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	page := make([]flashpipe.Result, 0, store.ResultsPageSize)
	for rows.Next() {
		r := flashpipe.Result{BatchID: batchID}
		var (
			metadata, analysis                      []byte
			errStage, errReason, errClass, nextStep *string
			status, processed                       string
		)
		if err := rows.Scan(&r.Position, &r.Seq, &r.Generation, &r.Term, &r.Type, &metadata, &status, &analysis,
			&errStage, &errReason, &errClass, &nextStep, &r.Attempts, &r.Usage.Stage1Calls,
			&r.Usage.Stage2Calls, &r.Usage.CacheHits, &r.Usage.CacheMisses, &r.Usage.PromptTokens,
			&r.Usage.CompletionTokens, &r.Usage.Cost, &processed, &r.Usage.Retries, &r.Usage.Throttled,
			&r.Usage.RateLimitWaits, &r.Usage.RateLimitWaitMS, &r.Usage.BreakerWaits, &r.Usage.BreakerTrips); err != nil {
			return nil, err
		}
		r.Status = flashpipe.Status(status)
		if r.ProcessedAt, err = parseTime(processed); err != nil {
			return nil, err
		}
		if err := store.DecodeItem(&r, metadata, analysis, errStage, errReason, errClass, nextStep); err != nil {
			return nil, err
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(page) == 0 {
		return page, nil
	}

	index := make(map[int64]int, len(page))
	for i, r := range page {
		index[r.Position] = i
	}
	cards, err := tx.QueryContext(ctx, sqlPageCards, batchID, after, page[len(page)-1].Seq)
	if err != nil {
		return nil, err
	}
	defer cards.Close()
	for cards.Next() {
		var pos int64
		var c flashpipe.Card
		if err := cards.Scan(&pos, &c.TabName, &c.Primer, &c.Front, &c.Back, &c.Tags, &c.HonorificLevel); err != nil {
			return nil, err
		}
		if i, ok := index[pos]; ok { // not ok: an item the status filter left out
			page[i].Cards = append(page[i].Cards, c)
		}
	}
	if err := cards.Err(); err != nil {
		return nil, err
	}
	return page, nil
}

// classify marks err by what it means. Only errors the data itself causes are
// permanent: a violated constraint, a type mismatch, a value too big or out of range.
// Every error of the environment is transient, to be waited out while an operator
// fixes it, wrapped with its cause (store.CauseOf): a database made read-only or
// unwritable (permissions), a missing table (SQLITE_ERROR: the schema changed), a full
// disk, I/O errors, a busy or locked database, a corrupt file.
func classify(err error) error {
	var se *sqlite3.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff { // primary result code
	case sqlite3lib.SQLITE_CONSTRAINT, sqlite3lib.SQLITE_MISMATCH, sqlite3lib.SQLITE_TOOBIG, sqlite3lib.SQLITE_RANGE:
		return flashpipe.AsPermanent(err)
	case sqlite3lib.SQLITE_READONLY:
		return store.Environment(store.CauseReadOnly, err)
	case sqlite3lib.SQLITE_PERM, sqlite3lib.SQLITE_AUTH, sqlite3lib.SQLITE_CANTOPEN:
		return store.Environment(store.CausePermission, err)
	case sqlite3lib.SQLITE_FULL:
		return store.Environment(store.CauseDiskFull, err)
	case sqlite3lib.SQLITE_ERROR, sqlite3lib.SQLITE_SCHEMA:
		return store.Environment(store.CauseSchema, err)
	}
	return store.Environment(store.CauseOther, err)
}
