package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/registry"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// ErrBatchConflict is returned when a batch id is already taken by different items
// (flashpipe.ErrBatchConflict).
var ErrBatchConflict = flashpipe.ErrBatchConflict

// DefaultPublishAttempts is how many times a failed item publish is tried.
const DefaultPublishAttempts = 3

// Publisher publishes validated batches: the manifest first, then one message per item.
// It is safe for concurrent use.
type Publisher struct {
	js    jetstream.JetStream
	c     *contract.Contract
	store flashpipe.Store // nil: none
	log   *slog.Logger
	// streamsOK is set once the streams were found: a publisher checks them once, and
	// never creates or changes them (that is the services' and the operator's job).
	streamsOK atomic.Bool
}

// checkStreams fails, saying how to create them, when the streams do not exist.
func (p *Publisher) checkStreams(ctx context.Context) error {
	if p.streamsOK.Load() {
		return nil
	}
	if err := p.c.CheckStreams(ctx, p.js); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	p.streamsOK.Store(true)
	return nil
}

// NewPublisher returns a publisher (New with only a logger).
func NewPublisher(js jetstream.JetStream, c *contract.Contract, logger *slog.Logger) (*Publisher, error) {
	return New(js, c, Config{Logger: logger})
}

// Config configures a Publisher.
type Config struct {
	// Store, when set, is consulted too when a batch id is not in the registry nor
	// the streams (a batch submitted before the registry existed, or a NATS server
	// rebuilt from scratch): a batch id the database holds with other items is refused
	// like any used id.
	Store  flashpipe.Store
	Logger *slog.Logger
}

// New returns a publisher.
func New(js jetstream.JetStream, c *contract.Contract, cfg Config) (*Publisher, error) {
	if js == nil || c == nil {
		return nil, errors.New("ingest: JetStream and contract are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{js: js, c: c, store: cfg.Store, log: cfg.Logger.With("component", "ingest")}, nil
}

// Batch is what to submit.
type Batch struct {
	ID       string
	Source   string
	Settings map[string]string
	// Items in seq order: a File (OpenFile, Spool) or SliceItems of items sorted by
	// ascending, unique Position (as Parse returns them).
	Items Items
	// Tenant and Priority are the manifest's (see flashpipe.Manifest).
	Tenant   string
	Priority int
	// Replace asks to replace the batch if its id is already used by other items: a
	// new generation runs the new items, and the old items' rows and results are
	// dropped, never mixed with the new ones. Without it such a submit is refused.
	Replace bool
}

// Submission reports what Submit did.
type Submission struct {
	Manifest flashpipe.Manifest
	// Published counts the item messages this call stored (duplicates not counted).
	Published int
	// Resubmitted is true when the batch already existed with the same items; only
	// items missing from the items stream (an earlier submit interrupted) were published.
	Resubmitted bool
	// Expired is true for a resubmission of a batch whose messages the streams no
	// longer hold: nothing was published (its rows are in the database).
	Expired bool
	// Replaced is true when the submit replaced a batch of other items (Batch.Replace).
	Replaced bool
	// Previous is the registry's record of the batch before this call, when it had one.
	Previous *Record
}

// Submit publishes a batch. A batch id names one batch for ever: the batch id
// registry (a key-value bucket kept whatever the streams' retention), the batches
// stream and, when configured, the store are checked first. Submitting the same items
// again publishes only what an earlier, interrupted submit left out, and causes no new
// work; submitting different items under a used id fails with ErrBatchConflict, naming
// the original submission, unless Batch.Replace asks to replace it. Every message
// carries a Nats-Msg-Id and the registry is written with compare-and-set, so even a
// concurrent double submit stores one batch. The items are read twice (their hash,
// then their publish) and published a chunk at a time, so memory does not grow with
// the batch.
func (p *Publisher) Submit(ctx context.Context, b Batch) (*Submission, error) {
	if err := flashpipe.ValidateBatchID(b.ID); err != nil {
		return nil, err
	}
	if b.Items == nil || b.Items.Len() == 0 {
		return nil, errors.New("ingest: batch has no items")
	}
	if err := flashpipe.ValidateTenant(b.Tenant); err != nil {
		return nil, err
	}
	if b.Priority < -flashpipe.MaxPriority || b.Priority > flashpipe.MaxPriority {
		return nil, fmt.Errorf("priority %d: want %d to %d", b.Priority, -flashpipe.MaxPriority, flashpipe.MaxPriority)
	}
	if err := flashpipe.ValidateSettings(b.Settings); err != nil {
		return nil, err
	}
	hash, err := b.Items.Hash(ctx) // also checks the order, before anything is published
	if err != nil {
		return nil, err
	}
	if err := p.checkStreams(ctx); err != nil {
		return nil, err
	}
	reg, err := registry.Open(ctx, p.js, p.c)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	m := flashpipe.Manifest{
		BatchID:     b.ID,
		Count:       b.Items.Len(),
		Source:      b.Source,
		ContentHash: hash,
		Settings:    b.Settings,
		Tenant:      b.Tenant,
		Priority:    b.Priority,
		CreatedAt:   time.Now().UTC(),
	}
	for range 10 {
		sub, err := p.submitOnce(ctx, reg, b, m)
		if errors.Is(err, errManifestRace) || errors.Is(err, registry.ErrRace) {
			continue // another submit got there first: look again
		}
		return sub, err
	}
	return nil, fmt.Errorf("ingest: batch %q: too many concurrent submits", b.ID)
}

// submitOnce looks the batch up (registry, stream, store) and publishes what is due.
func (p *Publisher) submitOnce(ctx context.Context, reg registry.Registry, b Batch, m flashpipe.Manifest) (*Submission, error) {
	rec, rev, known, err := reg.Get(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	latest, last, err := p.manifestAt(ctx, b.ID)
	inStream := err == nil
	if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
		return nil, err
	}
	if !known && inStream {
		rec = registry.RecordOf(latest) // a batch from before the registry, or published directly
	}
	used := known || inStream
	if !used && p.store != nil {
		st, err := p.store.Batch(ctx, b.ID)
		switch {
		case err == nil:
			rec, used = registry.RecordOf(st.Manifest), true
			rec.SubmittedAt = st.SubmittedAt
		case !errors.Is(err, flashpipe.ErrNotFound):
			return nil, fmt.Errorf("ingest: look up batch %q in the store: %w", b.ID, err)
		}
	}
	return p.decide(ctx, reg, b, m, rec, used, rev, latest, inStream, last)
}

// decide publishes a batch given what is known of its id: rec (valid when used), the
// registry revision (0: no record yet), and the latest manifest in the stream (when
// inStream) at stream sequence last.
func (p *Publisher) decide(ctx context.Context, reg registry.Registry, b Batch, m flashpipe.Manifest, rec Record, used bool,
	rev uint64, latest flashpipe.Manifest, inStream bool, last uint64) (*Submission, error) {
	var prev *Record
	if used {
		prev = &rec
	}
	switch {
	case !used:
		// A new batch: its record first (compare-and-set makes one submit win), then
		// the manifest, then the items.
		if err := reg.Put(ctx, b.ID, registry.RecordOf(m), 0); err != nil {
			return nil, err
		}
		if err := p.applyCap(ctx, m); err != nil {
			return nil, err
		}
		if err := p.publishManifest(ctx, m, 0); err != nil {
			return nil, err
		}
		n, err := p.publishItems(ctx, b.ID, 0, b.Items, nil)
		return &Submission{Manifest: m, Published: n}, err

	case rec.ContentHash == m.ContentHash && inStream:
		if rev == 0 {
			_ = reg.Put(ctx, b.ID, rec, 0) // backfill the registry; best effort
		}
		// The same batch again with a max_cost: the submitter sets its cap anew (how
		// `run --max-cost` raises the cap of the batch it resumes).
		if err := p.applyCap(ctx, m); err != nil {
			return nil, err
		}
		n, err := p.publishMissing(ctx, b, latest)
		return &Submission{Manifest: latest, Published: n, Resubmitted: true, Previous: prev}, err

	case rec.ContentHash == m.ContentHash:
		// Known, but its manifest is not in the stream: either a submit died between
		// the record and the manifest (the record is younger than the stream keeps
		// messages), or the messages have expired (nothing to publish: the rows are in
		// the database).
		published := rec.SubmittedAt
		if rec.ReplacedAt != nil {
			published = *rec.ReplacedAt
		}
		if rev > 0 && p.youngerThanRetention(ctx, p.c.BatchesStream(), published) {
			m.Generation, m.Base, m.CreatedAt = rec.Generation, rec.Base, published
			if err := p.applyCap(ctx, m); err != nil {
				return nil, err
			}
			if err := p.publishManifest(ctx, m, 0); err != nil {
				return nil, err
			}
			n, err := p.publishItems(ctx, b.ID, m.Base, b.Items, nil)
			return &Submission{Manifest: m, Published: n}, err
		}
		m.Generation, m.Base, m.CreatedAt = rec.Generation, rec.Base, published
		return &Submission{Manifest: m, Resubmitted: true, Expired: true, Previous: prev}, nil

	case !b.Replace:
		return nil, fmt.Errorf("ingest: batch %q was %s; these %d items differ: %w (choose another batch id, or replace the batch with --replace)",
			b.ID, rec.Describe(), b.Items.Len(), ErrBatchConflict)
	}

	// Replace: a new generation, numbered after every one known, with the new items.
	gen := rec.Generation
	if inStream {
		gen = max(gen, latest.Generation)
		done, err := p.generationDone(ctx, latest)
		if err != nil {
			return nil, err
		}
		if !done {
			return nil, fmt.Errorf("ingest: replace %q: %w (generation %d): wait for it to complete", b.ID, ErrBatchRunning, latest.Generation)
		}
	}
	m.Generation, m.Base = gen+1, gen+1
	now := m.CreatedAt
	next := registry.RecordOf(m)
	next.SubmittedAt, next.ReplacedAt = rec.SubmittedAt, &now
	if err := reg.Put(ctx, b.ID, next, rev); err != nil {
		return nil, err
	}
	if err := p.applyCap(ctx, m); err != nil {
		return nil, err
	}
	if err := p.publishManifest(ctx, m, last); err != nil {
		return nil, err
	}
	p.log.Warn("batch replaced: the old items' results are dropped", "batch", b.ID, "generation", m.Generation,
		"old_items", rec.Count, "new_items", m.Count)
	n, err := p.publishItems(ctx, b.ID, m.Generation, b.Items, nil)
	return &Submission{Manifest: m, Published: n, Replaced: true, Previous: prev}, err
}

// applyCap records the batch's max_cost setting as its spend cap before its manifest
// is published, so that no item of it is processed without the cap in force; a
// resubmission with a max_cost sets the cap anew. A batch submitted without max_cost
// keeps the cap it has, if any; retry and reprocess generations never change it (the
// account, and what it spent, belong to the batch id). A batch's first cap counts
// what its results in the ordered log report it spent before it (batchlog.Spent).
func (p *Publisher) applyCap(ctx context.Context, m flashpipe.Manifest) error {
	usd, ok := m.MaxCost()
	if !ok {
		return nil
	}
	l, err := spend.New(ctx, p.js, p.c, spend.Config{Holder: "ingest", Logger: p.log})
	if err != nil {
		return fmt.Errorf("ingest: batch %s: record its max_cost: %w", m.BatchID, err)
	}
	before, err := batchlog.Spent(ctx, p.js, p.c, m.BatchID)
	if err != nil {
		return fmt.Errorf("ingest: batch %s: record its max_cost: %w", m.BatchID, err)
	}
	if _, err := l.SetBatchCapAfter(ctx, m.BatchID, spend.ByManifest, usd, before); err != nil {
		return fmt.Errorf("ingest: batch %s: record its max_cost: %w", m.BatchID, err)
	}
	return nil
}

// youngerThanRetention reports whether something published at t on stream is still
// within the stream's max age (so it would be there, had it been published).
func (p *Publisher) youngerThanRetention(ctx context.Context, stream string, t time.Time) bool {
	st, err := p.js.Stream(ctx, stream)
	if err != nil {
		return true
	}
	age := st.CachedInfo().Config.MaxAge
	return age <= 0 || time.Since(t) < age
}

// generationDone reports whether the latest generation of a batch, whose manifest
// the batches stream holds, is over: completed in the ordered log, or expired from it
// (the log holds nothing of the batch and the manifest is older than the stream keeps
// messages).
func (p *Publisher) generationDone(ctx context.Context, latest flashpipe.Manifest) (bool, error) {
	g, complete, ok, err := batchlog.Latest(ctx, p.js, p.c, latest.BatchID)
	if err != nil {
		return false, fmt.Errorf("batch %s: %w", latest.BatchID, err)
	}
	if !ok {
		return !p.youngerThanRetention(ctx, p.c.OrderedStream(), latest.CreatedAt), nil
	}
	return g > latest.Generation || (g == latest.Generation && complete), nil
}

// errManifestRace means another publisher added a manifest to the batch first.
var errManifestRace = errors.New("another manifest of the batch was published first")

// publishManifest appends m to its batch's manifest subject, expecting the subject's
// last message to be at prev (0: none), so that only one submit creates a batch and
// only one retry creates each generation.
func (p *Publisher) publishManifest(ctx context.Context, m flashpipe.Manifest, prev uint64) error {
	mm, err := p.c.ManifestMsg(m)
	if err != nil {
		return err
	}
	ack, err := p.js.PublishMsg(ctx, mm, jetstream.WithMsgID(contract.ManifestMsgID(m.BatchID, m.Generation)),
		jetstream.WithExpectLastSequencePerSubject(prev))
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return errManifestRace
	case err != nil:
		return fmt.Errorf("ingest: publish manifest of %s: %w", m.BatchID, err)
	case ack.Duplicate:
		return errManifestRace
	}
	return nil
}

// Manifest returns the latest manifest of a batch, or an error wrapping
// flashpipe.ErrNotFound.
func (p *Publisher) Manifest(ctx context.Context, batchID string) (flashpipe.Manifest, error) {
	m, _, err := p.manifestAt(ctx, batchID)
	return m, err
}

// manifestAt returns the latest manifest of a batch, the last one on its subject that
// is valid and agrees with the batch id registry, and the stream sequence of the last
// message on that subject (whatever it is: the expectation a next manifest's publish
// carries, so that nothing published since is overtaken). A manifest
// someone else published that contradicts them (the scheduler refused it) is passed
// over, so it cannot make retry wait for a generation that never runs, or a
// resubmission follow the wrong items.
func (p *Publisher) manifestAt(ctx context.Context, batchID string) (flashpipe.Manifest, uint64, error) {
	js, c := p.js, p.c
	st, err := js.Stream(ctx, c.BatchesStream())
	if err != nil {
		return flashpipe.Manifest{}, 0, fmt.Errorf("batches stream: %w", err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, c.ManifestSubject(batchID))
	if contract.IsNotFound(err) {
		return flashpipe.Manifest{}, 0, fmt.Errorf("batch %q: %w", batchID, flashpipe.ErrNotFound)
	}
	if err != nil {
		return flashpipe.Manifest{}, 0, fmt.Errorf("read manifest of %s: %w", batchID, err)
	}
	trusts, err := p.trusts(ctx, batchID)
	if err != nil {
		return flashpipe.Manifest{}, 0, err
	}
	if m, err := contract.DecodeManifest(raw.Header, raw.Data); err == nil && trusts(m) {
		return m, raw.Sequence, nil
	}
	// The last one is not to be trusted: the latest that is, reading them all (a batch
	// has a manifest per generation, and the few refused ones).
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{c.ManifestSubject(batchID)}})
	if err != nil {
		return flashpipe.Manifest{}, 0, fmt.Errorf("read manifests of %s: %w", batchID, err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return flashpipe.Manifest{}, 0, fmt.Errorf("read manifests of %s: %w", batchID, err)
	}
	var latest flashpipe.Manifest
	found := false
	err = natsx.ReadPending(ctx, oc, info.NumPending, 0, func(msg jetstream.Msg) error {
		if m, err := contract.DecodeManifest(msg.Headers(), msg.Data()); err == nil && trusts(m) {
			latest, found = m, true
		}
		return nil
	})
	if err != nil {
		return flashpipe.Manifest{}, 0, fmt.Errorf("read manifests of %s: %w", batchID, err)
	}
	if !found {
		return flashpipe.Manifest{}, 0, fmt.Errorf("batch %q: no valid manifest (every one was refused): %w", batchID, flashpipe.ErrNotFound)
	}
	return latest, raw.Sequence, nil
}

// trusts returns the test of a batch's manifests: valid and agreeing with the batch's
// registry record, when it has one.
func (p *Publisher) trusts(ctx context.Context, batchID string) (func(flashpipe.Manifest) bool, error) {
	reg, err := registry.Open(ctx, p.js, p.c)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	rec, _, known, err := reg.Get(ctx, batchID)
	if err != nil {
		return nil, err
	}
	if !known {
		return func(m flashpipe.Manifest) bool { return m.Validate() == nil }, nil
	}
	return rec.Trusts, nil
}

// publishMissing publishes the items of an existing batch that the items stream lacks
// (an earlier submit was interrupted): for generation 0, the seqs without a message
// (of any generation); for a replacement, the seqs whose latest message is of an
// older generation. Memory is a byte per item, not the items.
func (p *Publisher) publishMissing(ctx context.Context, b Batch, latest flashpipe.Manifest) (int, error) {
	gen, have := latest.Base, -1
	if gen > 0 {
		have = gen
	}
	done, err := p.seqsPublished(ctx, b.ID, b.Items.Len(), have)
	if err != nil {
		return 0, fmt.Errorf("items of %s: %w", b.ID, err)
	}
	if !slices.Contains(done[1:], false) {
		return 0, nil
	}
	return p.publishItems(ctx, b.ID, gen, b.Items, func(seq int) bool { return done[seq] })
}

// publishChunk is how many items Submit publishes before it waits for their acks.
const publishChunk = 1000

// publishItems publishes a batch's items as generation gen, a chunk at a time; skip,
// when set, leaves out seqs already present. Memory is one chunk. On failure the
// error says how many of the batch's items are not known to be stored.
func (p *Publisher) publishItems(ctx context.Context, batchID string, gen int, items Items, skip func(seq int) bool) (int, error) {
	published, stored := 0, 0 // stored: acked (new or duplicate) or skipped
	wis := make([]flashpipe.WorkItem, 0, min(items.Len(), publishChunk))
	flush := func() error {
		n, err := p.publishWorkItems(ctx, wis)
		published += n
		stored += len(wis)
		if np := (*notPublishedError)(nil); errors.As(err, &np) {
			stored -= np.failed
		} else if err != nil {
			stored -= len(wis)
		}
		wis = wis[:0]
		return err
	}
	err := items.Each(ctx, func(seq int, it flashpipe.Item) error {
		if skip != nil && skip(seq) {
			stored++
			return nil
		}
		wis = append(wis, flashpipe.WorkItem{BatchID: batchID, Seq: seq, Generation: gen, Item: it})
		if len(wis) == publishChunk {
			return flush()
		}
		return nil
	})
	if err == nil && len(wis) > 0 {
		err = flush()
	}
	if err != nil {
		if np := (*notPublishedError)(nil); errors.As(err, &np) {
			err = np.err
		}
		return published, fmt.Errorf("ingest: %d of %d items of %s not published (%w): submit again to finish",
			items.Len()-stored, items.Len(), batchID, err)
	}
	return published, nil
}

// notPublishedError is a publish of work items that left some unstored after its
// retries.
type notPublishedError struct {
	batchID       string
	failed, total int
	err           error
}

func (e *notPublishedError) Error() string {
	return fmt.Sprintf("ingest: %d of %d items of %s not published: %v", e.failed, e.total, e.batchID, e.err)
}

func (e *notPublishedError) Unwrap() error { return e.err }

// publishWorkItems publishes work items asynchronously and waits for every ack,
// retrying failed publishes. It returns how many were stored (duplicates not
// counted); an error is a *notPublishedError.
func (p *Publisher) publishWorkItems(ctx context.Context, wis []flashpipe.WorkItem) (int, error) {
	published, total := 0, len(wis)
	for attempt := 1; len(wis) > 0; attempt++ {
		fresh, failed, err := p.publishAsync(ctx, wis)
		published += fresh
		if len(failed) == 0 {
			break
		}
		if attempt >= DefaultPublishAttempts || ctx.Err() != nil {
			return published, &notPublishedError{batchID: wis[0].BatchID, failed: len(failed), total: total, err: err}
		}
		p.log.Warn("retrying item publishes", "batch", wis[0].BatchID, "failed", len(failed), "err", err)
		wis = failed
	}
	return published, nil
}

// publishAsync publishes work items and returns how many were new (not duplicates) and
// the items whose publish failed.
func (p *Publisher) publishAsync(ctx context.Context, wis []flashpipe.WorkItem) (int, []flashpipe.WorkItem, error) {
	type pending struct {
		f  jetstream.PubAckFuture
		wi flashpipe.WorkItem
	}
	futures := make([]pending, 0, len(wis))
	var firstErr error
	var failed []flashpipe.WorkItem
	for _, wi := range wis {
		msg, err := p.c.ItemMsg(wi)
		if err != nil {
			return 0, wis, err
		}
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(contract.ItemMsgID(wi.BatchID, wi.Seq, wi.Generation)),
			jetstream.WithStallWait(30*time.Second))
		if err != nil {
			failed = append(failed, wi)
			firstErr = cmpErr(firstErr, err)
			continue
		}
		futures = append(futures, pending{f, wi})
	}
	fresh := 0
	for _, pf := range futures {
		select {
		case ack := <-pf.f.Ok():
			if !ack.Duplicate {
				fresh++
			}
		case err := <-pf.f.Err():
			failed = append(failed, pf.wi)
			firstErr = cmpErr(firstErr, err)
		case <-ctx.Done():
			return fresh, wis, ctx.Err()
		}
	}
	return fresh, failed, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
