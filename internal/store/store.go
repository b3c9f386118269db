// Package store holds what flashpipe's Store drivers share: their errors, the
// validation and grouping of an Apply call's events (Plan), and the encoding of
// results into columns. The drivers live in its subpackages: postgres (the production
// store) and sqlite (the embedded store of the single-process mode). Both pass the
// conformance suite in storetest.
//
// # Apply semantics
//
// Every driver stores one Apply call in one transaction, all events or none, writing
// the events as NewPlan groups them: first the manifests, then the results, then the
// completions. What a set of events leaves stored does not depend on how they are
// split into Apply calls nor on the order of the calls (StartedAt aside: it is the
// database's clock), so several sink replicas may share a batch's ordered log.
//
//   - A manifest stores its batch if absent. A manifest of a newer generation than the
//     stored one replaces the stored manifest (a retry generation started); any other
//     manifest leaves it. A manifest with the stored base (the same item list) but
//     another content hash is refused with flashpipe.ErrBatchConflict (permanent): a
//     batch id names one batch. A replacement (Manifest.Base above the stored base)
//     deletes the rows of every older generation when it is stored. The batch's submitted_at is the earliest CreatedAt of its
//     manifests, its first submission. Nothing else is reset: a retry generation makes
//     the batch read running because the stored completion is now of an older
//     generation (see below).
//   - A result is stored (its item row and cards replaced) unless the stored result of
//     the same item belongs to a newer generation, or the result is older than the
//     batch's stored base (a replacement dropped its generation). A result of a newer
//     generation evicts an older generation's row holding the same seq at another
//     position (a replacement renumbers the items). It sets the batch's started_at if the
//     batch has none yet. A batch stored after its results takes as started_at the time
//     its first result was written.
//   - A completion is stored (its generation, Emitted and CompletedAt) unless the stored
//     one is of a newer generation, or of the same generation and no later CompletedAt
//     (a re-sent completion keeps the first time). It needs no manifest: a completion stored before its batch's manifest
//     is kept, unseen by Batch and Batches, until the manifest arrives.
//
// # Metrics
//
// Each driver keeps one batch_metrics row per batch (flashpipe.BatchMetrics), summed
// by triggers on the items table in the transaction that writes the items: every
// result written counts once (a newer generation adds its result, the same one
// written again adds nothing). They follow the rows, so they depend on the order of
// the Apply calls in one case only: an older generation's result applied after a
// newer one of the same item is not written, and not counted, whereas applied before
// it, it was written, then replaced, and counted. A retry generation starts from the
// failed results already stored, and a replay applies the ordered log in order, where
// a batch's generations follow each other, so the sink does not meet that case.
//
// # Batch state
//
// The state is derived when a batch is read (see BatchState), never stored: a batch is
// complete when a completion is stored, its generation is at least the manifest's, and
// at least its Emitted items have a result of that generation or a newer one. So a
// completion stored before some results it counts, or an old generation's completion
// stored after a retry's manifest, leaves the batch running.
//
// # Dead letters
//
// SetAside keeps events the store refused for good (flashpipe.DeadLetter), keyed by
// the event, so setting one aside twice keeps one letter; a batch with letters reads
// blocked until it completes, with the latest reason. Resolve removes them once
// replayed.
//
// # Text
//
// PostgreSQL refuses NUL (U+0000) in text and jsonb values, and invalid UTF-8 in
// either; SQLite takes both. Model output may contain them, and a result must never
// fail to store, so drivers store every string through the encoders of this package,
// which replace each with U+FFFD (see CleanText): both drivers store and return the
// same text.
package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pressly/goose/v3"

	"github.com/flashpipe/flashpipe"
)

// ErrSchemaOutdated is returned (wrapped) by a driver whose database schema is older
// than the code's migrations and that was not asked to migrate it.
var ErrSchemaOutdated = errors.New("database schema is outdated")

// Causes of environment errors (see Environment): what keeps a store from writing that
// the data has nothing to do with.
const (
	CausePermission = "permission denied"
	CauseSchema     = "table or schema missing or changed"
	CauseConnection = "database unreachable"
	CauseReadOnly   = "database read-only"
	CauseDiskFull   = "disk full"
	CauseOther      = "database error"
)

// envError is an error of the store's environment, with its cause.
type envError struct {
	cause string
	err   error
}

func (e *envError) Error() string { return e.err.Error() }
func (e *envError) Unwrap() error { return e.err }

// Environment marks err as caused by the store's environment (cause is one of the
// Cause constants): transient, to be retried until an operator fixes it, never a
// reason to set an event aside.
func Environment(cause string, err error) error {
	if err == nil {
		return nil
	}
	return flashpipe.AsTransient(&envError{cause: cause, err: err})
}

// CauseOf returns the cause of an environment error (see Environment), or "" for any
// other error.
func CauseOf(err error) string {
	var e *envError
	if errors.As(err, &e) {
		return e.cause
	}
	return ""
}

// ErrInvalidEvent is returned (wrapped, and classified permanent) by Apply for an event
// that cannot be stored: wrong pointer for its kind, unknown kind, or invalid fields.
var ErrInvalidEvent = errors.New("invalid event")

// ResultsPageSize is how many items a driver reads per query when streaming Results:
// a page is read whole, then handed to the callback one result at a time, so memory
// stays bounded by one page whatever the batch size, and no connection or read
// transaction is held while the callback runs.
const ResultsPageSize = 1000

// EachPage streams results a page at a time: it calls page with the last Seq read (0
// at first) until a page comes back shorter than ResultsPageSize, handing each result
// to fn, and stops at the first error of either.
func EachPage(page func(after int) ([]flashpipe.Result, error), fn func(flashpipe.Result) error) error {
	after := 0
	for {
		results, err := page(after)
		if err != nil {
			return err
		}
		for _, r := range results {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(results) < ResultsPageSize {
			return nil
		}
		after = results[len(results)-1].Seq
	}
}

// SchemaOutdatedError returns the error a driver reports when the database schema is
// at version current and its code needs version want.
func SchemaOutdatedError(current, want int64) error {
	return flashpipe.AsPermanent(fmt.Errorf("schema is at version %d, want %d: run `flashpipe migrate`: %w",
		current, want, ErrSchemaOutdated))
}

// Plan is one Apply call's events, validated and grouped in the order drivers write
// them. NewPlan builds it; drivers only read it.
type Plan struct {
	// Manifests in event order, CreatedAt normalised with UTCMicro.
	Manifests []flashpipe.Manifest
	// Results holds one result per item (batch id, position): of the events for the
	// same item, the one of the highest generation, and among those the last. They are
	// sorted by batch id then position, so concurrent writers lock rows in one order.
	Results []*flashpipe.Result
	// ResultBatches lists the distinct batch ids of Results, sorted.
	ResultBatches []string
	// Completions in event order, CompletedAt normalised with UTCMicro.
	Completions []flashpipe.Completion
}

// NewPlan validates events and groups them into a Plan. It rejects the whole call, with
// an error wrapping ErrInvalidEvent and naming the event's index and kind, if any event
// has an unknown kind, does not carry exactly the pointer its kind names, or has
// invalid fields (batch id, generation, seq, status). The error is permanent.
func NewPlan(events []flashpipe.Event) (Plan, error) {
	var p Plan
	type key struct {
		batch string
		pos   int64
	}
	index := make(map[key]int)
	for i, e := range events {
		if err := validate(e); err != nil {
			return Plan{}, flashpipe.AsPermanent(fmt.Errorf("event %d (kind %q): %w: %s", i, e.Kind, ErrInvalidEvent, err))
		}
		switch e.Kind {
		case flashpipe.EventManifest:
			m := *e.Manifest
			m.CreatedAt = UTCMicro(m.CreatedAt)
			p.Manifests = append(p.Manifests, m)
		case flashpipe.EventResult:
			r := e.Result
			k := key{r.BatchID, r.Position}
			if j, ok := index[k]; ok {
				if r.Generation >= p.Results[j].Generation {
					p.Results[j] = r
				}
				continue
			}
			index[k] = len(p.Results)
			p.Results = append(p.Results, r)
		case flashpipe.EventComplete:
			c := *e.Completion
			c.CompletedAt = UTCMicro(c.CompletedAt)
			p.Completions = append(p.Completions, c)
		}
	}
	slices.SortFunc(p.Results, func(a, b *flashpipe.Result) int {
		return cmp.Or(cmp.Compare(a.BatchID, b.BatchID), cmp.Compare(a.Position, b.Position))
	})
	for _, r := range p.Results {
		if n := len(p.ResultBatches); n == 0 || p.ResultBatches[n-1] != r.BatchID {
			p.ResultBatches = append(p.ResultBatches, r.BatchID)
		}
	}
	return p, nil
}

// Renumbers reports whether a result of the plan may take its seq from an older
// generation's row (see package doc): only results of a generation above 0 can.
func (p Plan) Renumbers() bool {
	for _, r := range p.Results {
		if r.Generation > 0 {
			return true
		}
	}
	return false
}

// Empty reports whether the plan writes nothing.
func (p Plan) Empty() bool {
	return len(p.Manifests) == 0 && len(p.Results) == 0 && len(p.Completions) == 0
}

func validate(e flashpipe.Event) error {
	set := 0
	for _, ok := range []bool{e.Manifest != nil, e.Result != nil, e.Completion != nil} {
		if ok {
			set++
		}
	}
	switch e.Kind {
	case flashpipe.EventManifest:
		if e.Manifest == nil || set != 1 {
			return errors.New("want exactly the Manifest pointer set")
		}
		m := e.Manifest
		if err := flashpipe.ValidateBatchID(m.BatchID); err != nil {
			return err
		}
		if m.Generation < 0 || m.Count < 0 {
			return fmt.Errorf("negative generation (%d) or count (%d)", m.Generation, m.Count)
		}
	case flashpipe.EventResult:
		if e.Result == nil || set != 1 {
			return errors.New("want exactly the Result pointer set")
		}
		r := e.Result
		if err := flashpipe.ValidateBatchID(r.BatchID); err != nil {
			return err
		}
		if r.Generation < 0 || r.Seq < 1 {
			return fmt.Errorf("batch %q seq %d: want seq >= 1 and generation >= 0 (got %d)", r.BatchID, r.Seq, r.Generation)
		}
		if r.Status != flashpipe.StatusOK && r.Status != flashpipe.StatusFailed {
			return fmt.Errorf("batch %q seq %d: status %q is neither %q nor %q",
				r.BatchID, r.Seq, r.Status, flashpipe.StatusOK, flashpipe.StatusFailed)
		}
	case flashpipe.EventComplete:
		if e.Completion == nil || set != 1 {
			return errors.New("want exactly the Completion pointer set")
		}
		if err := flashpipe.ValidateBatchID(e.Completion.BatchID); err != nil {
			return err
		}
		if c := e.Completion; c.Generation < 0 || c.Emitted < 0 {
			return fmt.Errorf("negative generation (%d) or emitted (%d)", c.Generation, c.Emitted)
		}
	default:
		return errors.New("unknown kind")
	}
	return nil
}

// UTCMicro returns t in UTC, truncated to the microsecond: the precision both
// databases store, so a time read back equals the time written through UTCMicro.
func UTCMicro(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// ItemColumns are a result's values as drivers store them in the items and flashcards
// tables, every string cleaned with CleanText. Nil slices and pointers are SQL NULL.
type ItemColumns struct {
	Term, Type  string
	Metadata    []byte // JSON object, nil when the item has no metadata map
	Analysis    []byte // JSON object, nil when the result has no analysis
	ErrorStage  *string
	ErrorReason *string
	ErrorClass  *string
	NextStep    *string
	ProcessedAt time.Time // UTCMicro
	// Cards are the result's cards, cleaned (r.Cards itself when already clean).
	Cards []flashpipe.Card
}

// EncodeItem returns r's values for the columns that need encoding or cleaning. It
// does not modify r.
func EncodeItem(r *flashpipe.Result) (ItemColumns, error) {
	c := ItemColumns{Term: CleanText(r.Term), Type: CleanText(r.Type), Cards: cleanCards(r.Cards)}
	var err error
	if r.Metadata != nil {
		if c.Metadata, err = json.Marshal(r.Metadata); err != nil {
			return c, flashpipe.AsPermanent(fmt.Errorf("batch %q seq %d: encode metadata: %w", r.BatchID, r.Seq, err))
		}
		c.Metadata = CleanJSON(c.Metadata)
	}
	if r.Analysis != nil {
		if c.Analysis, err = json.Marshal(r.Analysis); err != nil {
			return c, flashpipe.AsPermanent(fmt.Errorf("batch %q seq %d: encode analysis: %w", r.BatchID, r.Seq, err))
		}
		c.Analysis = CleanJSON(c.Analysis)
	}
	if f := r.Failure; f != nil {
		stage, reason, class, next := CleanText(f.Stage), CleanText(f.Reason), CleanText(string(f.Class)), CleanText(f.NextStep)
		c.ErrorStage, c.ErrorReason, c.ErrorClass, c.NextStep = &stage, &reason, &class, &next
	}
	c.ProcessedAt = UTCMicro(r.ProcessedAt)
	return c, nil
}

// cleanCards returns cards with every field cleaned: cards itself when nothing needs
// cleaning, else a copy.
func cleanCards(cards []flashpipe.Card) []flashpipe.Card {
	var out []flashpipe.Card
	for i, c := range cards {
		fields := [...]*string{&c.TabName, &c.Primer, &c.Front, &c.Back, &c.Tags, &c.HonorificLevel}
		changed := false
		for _, f := range fields {
			if clean := CleanText(*f); clean != *f {
				*f, changed = clean, true
			}
		}
		if changed && out == nil {
			out = slices.Clone(cards)
		}
		if out != nil {
			out[i] = c
		}
	}
	if out == nil {
		return cards
	}
	return out
}

// CleanText returns s with each NUL (U+0000) and each run of invalid UTF-8 bytes
// replaced by U+FFFD, so that any database takes it as text. It returns s itself,
// without allocating, when there is nothing to replace.
func CleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// CleanJSON returns data, JSON as encoding/json writes it, with each escaped NUL
// (\u0000, which jsonb refuses) replaced by the escaped U+FFFD (\ufffd). Only whole
// escapes are replaced: an escaped backslash followed by "u0000" is text and stays.
// encoding/json already writes invalid UTF-8 as U+FFFD. It returns data itself when
// there is nothing to replace.
func CleanJSON(data []byte) []byte {
	const nul, replacement = `\u0000`, `\ufffd`
	if !bytes.Contains(data, []byte(nul)) {
		return data
	}
	out := make([]byte, 0, len(data))
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] != '\\':
			out = append(out, data[i])
		case bytes.HasPrefix(data[i:], []byte(nul)):
			out = append(out, replacement...)
			i += len(nul) - 1
		case i+1 < len(data):
			out = append(out, data[i], data[i+1]) // a whole two-byte escape, or \u's start
			i++
		default:
			out = append(out, data[i])
		}
	}
	return out
}

// DecodeItem sets the fields of r that EncodeItem encoded. errorStage, errorReason,
// errorClass and nextStep are nil when their columns are NULL.
func DecodeItem(r *flashpipe.Result, metadata, analysis []byte, errorStage, errorReason, errorClass, nextStep *string) error {
	r.Metadata, r.Analysis, r.Failure = nil, nil, nil
	if metadata != nil {
		if err := json.Unmarshal(metadata, &r.Metadata); err != nil {
			return fmt.Errorf("batch %q seq %d: decode metadata: %w", r.BatchID, r.Seq, err)
		}
	}
	if analysis != nil {
		r.Analysis = new(flashpipe.Analysis)
		if err := json.Unmarshal(analysis, r.Analysis); err != nil {
			return fmt.Errorf("batch %q seq %d: decode analysis: %w", r.BatchID, r.Seq, err)
		}
	}
	if errorStage != nil {
		r.Failure = &flashpipe.Failure{
			Stage:    *errorStage,
			Reason:   deref(errorReason),
			Class:    flashpipe.ErrorClass(deref(errorClass)),
			NextStep: deref(nextStep),
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ManifestColumns are a manifest's values as drivers store them in the batches table,
// every string cleaned with CleanText.
type ManifestColumns struct {
	Source, ContentHash string
	Manifest            []byte // the whole manifest as JSON
	Settings            []byte // JSON object, nil when the manifest has no settings
}

// EncodeManifest returns m's values for the batches columns that need encoding or
// cleaning.
func EncodeManifest(m flashpipe.Manifest) (ManifestColumns, error) {
	c := ManifestColumns{Source: CleanText(m.Source), ContentHash: CleanText(m.ContentHash)}
	var err error
	if c.Manifest, err = json.Marshal(m); err != nil {
		return c, flashpipe.AsPermanent(fmt.Errorf("batch %q: encode manifest: %w", m.BatchID, err))
	}
	c.Manifest = CleanJSON(c.Manifest)
	if m.Settings != nil {
		if c.Settings, err = json.Marshal(m.Settings); err != nil {
			return c, flashpipe.AsPermanent(fmt.Errorf("batch %q: encode settings: %w", m.BatchID, err))
		}
		c.Settings = CleanJSON(c.Settings)
	}
	return c, nil
}

// DecodeManifest decodes the batches.manifest column, with CreatedAt in UTC.
func DecodeManifest(batchID string, data []byte) (flashpipe.Manifest, error) {
	var m flashpipe.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("batch %q: decode manifest: %w", batchID, err)
	}
	m.CreatedAt = m.CreatedAt.UTC()
	return m, nil
}

// StoredManifest is what a driver reads of a stored batch's manifest to check an
// incoming one against it.
type StoredManifest struct {
	Generation, Base int
	ContentHash      string
}

// CheckManifest refuses a manifest that would mix two item lists under one batch id:
// one with the stored base but another content hash, or a replacement (a higher base)
// that does not come after the stored generation. The error wraps
// flashpipe.ErrBatchConflict and is permanent.
func CheckManifest(stored StoredManifest, m flashpipe.Manifest) error {
	switch {
	case m.Base == stored.Base && m.ContentHash != stored.ContentHash:
		return flashpipe.AsPermanent(fmt.Errorf("batch %q generation %d: %w (stored items %.12s, these %.12s)",
			m.BatchID, m.Generation, flashpipe.ErrBatchConflict, stored.ContentHash, m.ContentHash))
	case m.Base > stored.Base && m.Generation <= stored.Generation:
		return flashpipe.AsPermanent(fmt.Errorf("batch %q: replacement generation %d is not after the stored generation %d: %w",
			m.BatchID, m.Generation, stored.Generation, flashpipe.ErrBatchConflict))
	}
	return nil
}

// CheckManifests checks a plan's manifests, in order, against the stored manifests of
// their batches (stored, by batch id; a batch absent from it is not stored yet), each
// manifest checked against the newest one before it.
func CheckManifests(stored map[string]StoredManifest, manifests []flashpipe.Manifest) error {
	for _, m := range manifests {
		st, ok := stored[m.BatchID]
		if ok {
			if err := CheckManifest(st, m); err != nil {
				return err
			}
		}
		if !ok || m.Generation > st.Generation {
			stored[m.BatchID] = StoredManifest{Generation: m.Generation, Base: m.Base, ContentHash: m.ContentHash}
		}
	}
	return nil
}

// DeadLetterColumns are a dead letter's values as drivers store them.
type DeadLetterColumns struct {
	Key, BatchID, Kind, Reason string
	Seq                        int
	Event                      []byte // the event as JSON
	At                         time.Time
}

// EncodeDeadLetter returns d's column values.
func EncodeDeadLetter(d flashpipe.DeadLetter) (DeadLetterColumns, error) {
	ev, err := json.Marshal(d.Event)
	if err != nil {
		return DeadLetterColumns{}, flashpipe.AsPermanent(fmt.Errorf("encode dead letter: %w", err))
	}
	c := DeadLetterColumns{Key: d.Key(), BatchID: d.Event.BatchID(), Kind: string(d.Event.Kind),
		Reason: CleanText(d.Reason), Event: ev, At: UTCMicro(d.At)}
	if d.Event.Result != nil {
		c.Seq = d.Event.Result.Seq
	}
	if c.At.IsZero() {
		c.At = UTCMicro(time.Now())
	}
	return c, nil
}

// DecodeDeadLetter rebuilds a dead letter from its columns.
func DecodeDeadLetter(id int64, event []byte, reason string, at time.Time) (flashpipe.DeadLetter, error) {
	d := flashpipe.DeadLetter{ID: id, Reason: reason, At: at.UTC()}
	if err := json.Unmarshal(event, &d.Event); err != nil {
		return d, fmt.Errorf("dead letter %d: decode event: %w", id, err)
	}
	return d, nil
}

// StoredCompletion is the completion stored for a batch (see package doc), as a driver
// reads it back.
type StoredCompletion struct {
	Generation, Emitted int
	At                  time.Time
}

// BatchState derives the state of a batch whose latest manifest is of generation
// generation, whose newest stored completion is c (nil when none is stored), and of
// whose items counted have a result of generation c.Generation or newer. It returns the
// state and the completion time to report, nil unless the batch is complete.
//
// The batch is complete when c's generation is at least the manifest's and at least
// c.Emitted results count: its latest generation completed and every result that
// completion announced is stored, whatever order they were stored in.
//
// A batch that is not complete and has setAside dead letters is blocked: it cannot
// complete until they are replayed.
func BatchState(generation int, c *StoredCompletion, counted, setAside int) (string, *time.Time) {
	if c == nil || c.Generation < generation || counted < c.Emitted {
		if setAside > 0 {
			return flashpipe.BatchBlocked, nil
		}
		return flashpipe.BatchRunning, nil
	}
	at := c.At
	return flashpipe.BatchComplete, &at
}

// LatestVersion returns the highest migration version in fsys, a goose migration set
// such as migrations.Postgres: the schema version the code needs.
func LatestVersion(fsys fs.FS) (int64, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return 0, fmt.Errorf("migration %s: %w", name, err)
		}
		latest = max(latest, v)
	}
	if latest == 0 {
		return 0, errors.New("no migrations found")
	}
	return latest, nil
}

// Migrate applies the pending migrations of fsys to db with goose's Provider API and
// logs each one applied. opts are extra provider options, such as a session locker.
// Migrations already applied are skipped, so Migrate is idempotent.
func Migrate(ctx context.Context, dialect goose.Dialect, db *sql.DB, fsys fs.FS, logger *slog.Logger, opts ...goose.ProviderOption) error {
	opts = append([]goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}, opts...)
	p, err := goose.NewProvider(dialect, db, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			logger.InfoContext(ctx, "applied migration", "version", r.Source.Version,
				"file", r.Source.Path, "duration", r.Duration)
		}
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
