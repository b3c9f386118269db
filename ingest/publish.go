package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// ErrBatchConflict is returned when a batch id is already taken by different items
// (flashpipe.ErrBatchConflict).
var ErrBatchConflict = flashpipe.ErrBatchConflict

// DefaultPublishAttempts is how many times a failed item publish is tried.
const DefaultPublishAttempts = 3

// Publisher publishes validated batches: the manifest first, then one message per item.
// It is safe for concurrent use.
type Publisher struct {
	js  jetstream.JetStream
	c   *contract.Contract
	log *slog.Logger
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

// NewPublisher returns a publisher.
func NewPublisher(js jetstream.JetStream, c *contract.Contract, logger *slog.Logger) (*Publisher, error) {
	if js == nil || c == nil {
		return nil, errors.New("ingest: JetStream and contract are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{js: js, c: c, log: logger.With("component", "ingest")}, nil
}

// Batch is what to submit.
type Batch struct {
	ID       string
	Source   string
	Settings map[string]string
	// Items sorted by ascending, unique Position (as Parse returns them).
	Items []flashpipe.Item
}

// Submission reports what Submit did.
type Submission struct {
	Manifest flashpipe.Manifest
	// Published counts the item messages this call stored (duplicates not counted).
	Published int
	// Resubmitted is true when the batch already existed with the same items; only
	// items missing from the items stream (an earlier submit interrupted) were published.
	Resubmitted bool
}

// Submit publishes a batch. It is idempotent by batch id: submitting the same items
// again publishes only what an earlier, interrupted submit left out, and causes no new
// work; submitting different items under a used id fails with ErrBatchConflict.
// Every message carries a Nats-Msg-Id, so even a concurrent double submit stores each
// message once.
func (p *Publisher) Submit(ctx context.Context, b Batch) (*Submission, error) {
	if err := flashpipe.ValidateBatchID(b.ID); err != nil {
		return nil, err
	}
	if len(b.Items) == 0 {
		return nil, errors.New("ingest: batch has no items")
	}
	for i := 1; i < len(b.Items); i++ {
		if b.Items[i].Position <= b.Items[i-1].Position {
			return nil, fmt.Errorf("ingest: items must be sorted by unique ascending position (position %d follows %d)",
				b.Items[i].Position, b.Items[i-1].Position)
		}
	}
	if err := p.checkStreams(ctx); err != nil {
		return nil, err
	}
	m := flashpipe.Manifest{
		BatchID:     b.ID,
		Count:       len(b.Items),
		Source:      b.Source,
		ContentHash: flashpipe.HashItems(b.Items),
		Settings:    b.Settings,
		CreatedAt:   time.Now().UTC(),
	}
	for {
		existing, _, err := p.manifestAt(ctx, b.ID)
		switch {
		case errors.Is(err, flashpipe.ErrNotFound):
		case err != nil:
			return nil, err
		case existing.ContentHash != m.ContentHash:
			return nil, fmt.Errorf("ingest: batch %q: %w (submitted %s from %q)", b.ID, ErrBatchConflict,
				existing.CreatedAt.Format(time.RFC3339), existing.Source)
		default:
			n, err := p.publishMissing(ctx, b)
			return &Submission{Manifest: existing, Published: n, Resubmitted: true}, err
		}
		// The first manifest of the batch: refused if another submit got there first,
		// in which case its manifest is compared like any existing one.
		err = p.publishManifest(ctx, m, 0)
		if errors.Is(err, errManifestRace) {
			continue
		}
		if err != nil {
			return nil, err
		}
		n, err := p.publishItems(ctx, b.ID, b.Items, nil)
		return &Submission{Manifest: m, Published: n}, err
	}
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

// manifestAt returns the latest manifest of a batch and its stream sequence.
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
	m, err := contract.DecodeManifest(raw.Header, raw.Data)
	return m, raw.Sequence, err
}

// publishMissing publishes the items of an existing batch that the items stream lacks.
func (p *Publisher) publishMissing(ctx context.Context, b Batch) (int, error) {
	st, err := p.js.Stream(ctx, p.c.ItemsStream())
	if err != nil {
		return 0, fmt.Errorf("items stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(p.c.BatchItems(b.ID)))
	if err != nil {
		return 0, fmt.Errorf("items of %s: %w", b.ID, err)
	}
	if len(info.State.Subjects) >= len(b.Items) {
		return 0, nil
	}
	have := info.State.Subjects
	return p.publishItems(ctx, b.ID, b.Items, func(seq int) bool {
		return have[p.c.ItemSubject(b.ID, seq)] > 0
	})
}

// publishItems publishes a batch's items of generation 0 (seq = index+1); skip, when
// set, leaves out seqs already present.
func (p *Publisher) publishItems(ctx context.Context, batchID string, items []flashpipe.Item, skip func(seq int) bool) (int, error) {
	wis := make([]flashpipe.WorkItem, 0, len(items))
	for i, it := range items {
		if skip == nil || !skip(i+1) {
			wis = append(wis, flashpipe.WorkItem{BatchID: batchID, Seq: i + 1, Item: it})
		}
	}
	return p.publishWorkItems(ctx, wis)
}

// publishWorkItems publishes work items asynchronously and waits for every ack,
// retrying failed publishes. It returns how many were stored (duplicates not counted).
func (p *Publisher) publishWorkItems(ctx context.Context, wis []flashpipe.WorkItem) (int, error) {
	published := 0
	for attempt := 1; len(wis) > 0; attempt++ {
		fresh, failed, err := p.publishAsync(ctx, wis)
		published += fresh
		if len(failed) == 0 {
			break
		}
		if attempt >= DefaultPublishAttempts || ctx.Err() != nil {
			return published, fmt.Errorf("ingest: %d of %d items of %s not published (submit again to finish): %w",
				len(failed), len(wis), wis[0].BatchID, err)
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
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(contract.MsgID(wi.BatchID, wi.Position, wi.Generation)),
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
