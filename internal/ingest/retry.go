package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
)

// ErrNothingToRetry is returned by Retry for a batch without failed items.
var ErrNothingToRetry = errors.New("no failed items to retry")

// ErrBatchRunning is returned by Retry for a batch whose latest generation has not
// completed yet.
var ErrBatchRunning = errors.New("batch is still running")

// Retry runs the failed items of a complete batch again, as its next generation: a
// manifest listing their seqs, then one item message each. Their new results replace
// the failed ones in place (same position), and the ordered log carries them, in
// order, after the previous generation's completion. Items that succeeded are not
// touched. Retry is idempotent while the new generation runs: calling it again
// publishes nothing new (it reports ErrBatchRunning).
func (p *Publisher) Retry(ctx context.Context, batchID string) (*Submission, error) {
	latest, seq, err := p.nextGeneration(ctx, batchID)
	if err != nil {
		return p.resume(ctx, latest, "retry", err)
	}
	var failed []flashpipe.Result
	err = batchlog.Results(ctx, p.js, p.c, batchID, func(r flashpipe.Result) error {
		if r.Status == flashpipe.StatusFailed {
			r.Analysis, r.Cards = nil, nil
			failed = append(failed, r)
		}
		return nil
	})
	switch {
	case errors.Is(err, batchlog.ErrIncomplete):
		return nil, fmt.Errorf("retry %s: %w (generation %d): wait for it to complete", batchID, ErrBatchRunning, latest.Generation)
	case err != nil:
		return nil, fmt.Errorf("retry %s: %w", batchID, err)
	case len(failed) == 0:
		return nil, fmt.Errorf("retry %s: %w", batchID, ErrNothingToRetry)
	}
	next := latest
	next.Generation = latest.Generation + 1
	next.CreatedAt = time.Now().UTC()
	next.Seqs = make([]int, len(failed))
	for i, r := range failed {
		next.Seqs[i] = r.Seq
	}
	if err := p.publishManifest(ctx, next, seq); err != nil {
		if errors.Is(err, errManifestRace) {
			return nil, fmt.Errorf("retry %s: %w (another retry or reprocess started first)", batchID, ErrBatchRunning)
		}
		return nil, err
	}
	p.noteGeneration(ctx, next)
	items := make([]flashpipe.WorkItem, len(failed))
	for i, r := range failed {
		items[i] = flashpipe.WorkItem{BatchID: batchID, Seq: r.Seq, Generation: next.Generation, Item: r.Item}
	}
	n, err := p.publishWorkItems(ctx, items)
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w (run retry again to finish publishing)", batchID, err)
	}
	return &Submission{Manifest: next, Published: n}, nil
}

// nextGeneration checks that a batch may start a new generation: its latest manifest's
// generation is complete in the ordered log. It returns that manifest and its stream
// sequence (the expectation the next manifest's publish carries), or an error wrapping
// ErrBatchRunning (with the latest manifest, so an interrupted start can be resumed).
func (p *Publisher) nextGeneration(ctx context.Context, batchID string) (flashpipe.Manifest, uint64, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return flashpipe.Manifest{}, 0, err
	}
	latest, seq, err := p.manifestAt(ctx, batchID)
	if errors.Is(err, flashpipe.ErrNotFound) {
		return flashpipe.Manifest{BatchID: batchID}, 0, fmt.Errorf("%w (never submitted, or its manifests are older than the batches stream keeps them, %s: --stream-max-age)",
			err, window(p.c.Config().MaxAge))
	}
	if err != nil {
		return latest, 0, err
	}
	gen, complete, _, err := batchlog.Latest(ctx, p.js, p.c, batchID)
	if err != nil {
		return latest, 0, fmt.Errorf("batch %s: %w", batchID, err)
	}
	if !complete || gen < latest.Generation {
		return latest, 0, fmt.Errorf("%w (generation %d): wait for it to complete", ErrBatchRunning, latest.Generation)
	}
	return latest, seq, nil
}

// resume finishes publishing a retry or reprocess generation that an earlier call
// left half published; otherwise it returns err.
func (p *Publisher) resume(ctx context.Context, latest flashpipe.Manifest, op string, err error) (*Submission, error) {
	if !errors.Is(err, ErrBatchRunning) || latest.Generation == 0 {
		return nil, fmt.Errorf("%s %s: %w", op, latest.BatchID, err)
	}
	var n int
	var ferr error
	if len(latest.Seqs) > 0 {
		n, ferr = p.finishRetry(ctx, latest)
	} else {
		n, ferr = p.republish(ctx, latest)
	}
	if ferr != nil || n > 0 {
		return &Submission{Manifest: latest, Published: n, Resubmitted: true}, ferr
	}
	return nil, fmt.Errorf("%s %s: %w", op, latest.BatchID, err)
}

// finishRetry publishes the items of retry generation m that the items stream lacks
// (the latest message of their subject is of an older generation).
func (p *Publisher) finishRetry(ctx context.Context, m flashpipe.Manifest) (int, error) {
	st, err := p.js.Stream(ctx, p.c.ItemsStream())
	if err != nil {
		return 0, err
	}
	var missing []flashpipe.WorkItem
	for _, seq := range m.Seqs {
		raw, err := st.GetLastMsgForSubject(ctx, p.c.ItemSubject(m.BatchID, seq))
		if err != nil {
			return 0, fmt.Errorf("item %d of %s: %w", seq, m.BatchID, err)
		}
		wi, err := contract.DecodeItem(raw.Header, raw.Data)
		if err != nil {
			return 0, fmt.Errorf("item %d of %s: %w", seq, m.BatchID, err)
		}
		if wi.Generation < m.Generation {
			wi.Generation = m.Generation
			missing = append(missing, wi)
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}
	return p.publishWorkItems(ctx, missing)
}

// Reprocess runs every item of a complete batch again as its next generation, read
// back from the items stream: answers already cached cost nothing (a reprocess after a
// change of model or prompts pays for the new answers). Every row is rewritten and
// the ordered log carries the whole batch again after the previous completion.
func (p *Publisher) Reprocess(ctx context.Context, batchID string) (*Submission, error) {
	latest, seq, err := p.nextGeneration(ctx, batchID)
	if err != nil {
		return p.resume(ctx, latest, "reprocess", err)
	}
	// Every item must still be in the items stream before the generation starts.
	if n, err := p.itemsOf(ctx, batchID); err != nil {
		return nil, fmt.Errorf("reprocess %s: %w", batchID, err)
	} else if n < latest.Count {
		return nil, fmt.Errorf("reprocess %s: %w", batchID, p.itemsExpired(n, latest.Count))
	}
	next := latest
	next.Generation = latest.Generation + 1
	next.Seqs = nil // every item
	next.CreatedAt = time.Now().UTC()
	if err := p.publishManifest(ctx, next, seq); err != nil {
		if errors.Is(err, errManifestRace) {
			return nil, fmt.Errorf("reprocess %s: %w (another retry or reprocess started first)", batchID, ErrBatchRunning)
		}
		return nil, err
	}
	p.noteGeneration(ctx, next)
	n, err := p.republish(ctx, next)
	if err != nil {
		return nil, fmt.Errorf("reprocess %s: %w (run reprocess again to finish publishing)", batchID, err)
	}
	return &Submission{Manifest: next, Published: n}, nil
}

// itemsOf counts the item subjects of a batch in the items stream.
func (p *Publisher) itemsOf(ctx context.Context, batchID string) (int, error) {
	st, err := p.js.Stream(ctx, p.c.ItemsStream())
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(p.c.BatchItems(batchID)))
	if err != nil {
		return 0, err
	}
	return len(info.State.Subjects), nil
}

// republish reads a batch's items from the items stream, as published by its base
// generation (0, or the latest replacement), and publishes each as generation
// m.Generation, a thousand at a time, leaving out those already
// published as that generation (an earlier, interrupted call): memory is one bit per
// item, not the items.
func (p *Publisher) republish(ctx context.Context, m flashpipe.Manifest) (int, error) {
	done, err := p.seqsPublished(ctx, m.BatchID, m.Count, m.Generation)
	if err != nil {
		return 0, err
	}
	oc, err := p.js.OrderedConsumer(ctx, p.c.ItemsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{p.c.BatchItems(m.BatchID)},
	})
	if err != nil {
		return 0, err
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return 0, err
	}
	const chunk = 1000
	published, seen := 0, 0
	wis := make([]flashpipe.WorkItem, 0, chunk)
	flush := func() error {
		n, err := p.publishWorkItems(ctx, wis)
		published += n
		wis = wis[:0]
		return err
	}
	err = natsx.ReadPending(ctx, oc, info.NumPending, 0, func(msg jetstream.Msg) error {
		wi, err := contract.DecodeItem(msg.Headers(), msg.Data())
		if err != nil {
			return err
		}
		if wi.Generation != m.Base {
			return nil
		}
		seen++
		if wi.Seq >= 1 && wi.Seq < len(done) && done[wi.Seq] {
			return nil
		}
		wi.Generation = m.Generation
		if wis = append(wis, wi); len(wis) == chunk {
			return flush()
		}
		return nil
	})
	if err != nil {
		return published, fmt.Errorf("read the items of %s: %w", m.BatchID, err)
	}
	if err := flush(); err != nil {
		return published, err
	}
	if seen != m.Count {
		return published, p.itemsExpired(seen, m.Count)
	}
	return published, nil
}

// ErrItemsExpired is returned by Reprocess for a batch whose items the items stream no
// longer holds (they are kept for the contract's ItemsMaxAge).
var ErrItemsExpired = errors.New("items expired")

func (p *Publisher) itemsExpired(have, want int) error {
	return fmt.Errorf("%w: the items stream holds %d of the batch's %d items; it keeps items for %s (--items-max-age), so reprocess within that window of a submission, or submit the batch again",
		ErrItemsExpired, have, want, window(p.c.Config().ItemsMaxAge))
}

// window says a stream's max age (0: forever).
func window(d time.Duration) string {
	if d == 0 {
		return "ever"
	}
	return d.String()
}

// seqsPublished reads the headers of a batch's items and reports, by seq (1..count),
// which are already published as generation gen (any generation when gen < 0).
func (p *Publisher) seqsPublished(ctx context.Context, batchID string, count, gen int) ([]bool, error) {
	done := make([]bool, count+1)
	oc, err := p.js.OrderedConsumer(ctx, p.c.ItemsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{p.c.BatchItems(batchID)}, HeadersOnly: true,
	})
	if err != nil {
		return nil, err
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return nil, err
	}
	err = natsx.ReadPending(ctx, oc, info.NumPending, 0, func(msg jetstream.Msg) error {
		k, err := contract.KeysOf(msg.Headers())
		if err == nil && (gen < 0 || k.Generation == gen) && k.Seq >= 1 && k.Seq <= count {
			done[k.Seq] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the items of %s: %w", batchID, err)
	}
	return done, nil
}
