// Package batchlog reads one batch's ordered log (its subject on the ordered stream):
// live progress while the batch runs, and the final result of every item, in order,
// once it is complete. It needs only NATS, so `flashpipe submit --wait` works against
// remote services without access to their database.
package batchlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
)

// ErrIncomplete is returned by Results for a batch whose latest generation has not
// completed.
var ErrIncomplete = errors.New("batch is not complete")

// Progress is a batch's state as its ordered log shows it.
type Progress struct {
	BatchID    string
	Generation int
	// Expected is the number of items of the generation: the batch's count, or the
	// items a retry generation re-runs.
	Expected int
	// Done counts items with a result in the log; OK and Failed split it by the item's
	// latest status.
	Done, OK, Failed int
	// Complete is true once the target generation's completion is in the log.
	Complete bool
}

// Watch follows a batch's ordered log from its start and calls fn after every event,
// until the completion of generation target (or a later one) is read, or ctx ends.
// Use the latest manifest's generation as target. Watch reads headers only, so it is
// cheap for large batches.
func Watch(ctx context.Context, js jetstream.JetStream, c *contract.Contract, m flashpipe.Manifest, fn func(Progress)) (Progress, error) {
	return Follow(ctx, js, c, m, fn, nil)
}

// Follow is Watch that also hands every result event, in log order, to onResult as it
// is read (nil: headers only). For a batch of one generation that is every item's
// final result in ascending Seq, so a caller can write its output while the batch
// runs; with retry generations, later results replace earlier ones (see Results).
func Follow(ctx context.Context, js jetstream.JetStream, c *contract.Contract, m flashpipe.Manifest, fn func(Progress), onResult func(flashpipe.Result) error) (Progress, error) {
	// A retry generation's progress counts its own items only.
	p := Progress{BatchID: m.BatchID, Expected: m.Expected(), Generation: m.Generation}
	oc, err := js.OrderedConsumer(ctx, c.OrderedStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.OrderedSubject(m.BatchID)},
		HeadersOnly:    onResult == nil,
	})
	if err != nil {
		return p, fmt.Errorf("watch %s: %w", m.BatchID, err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(1000), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return p, fmt.Errorf("watch %s: %w", m.BatchID, err)
	}
	defer it.Stop()
	failed := map[int]bool{} // seqs whose latest status is failed
	seen := make([]bool, m.Count+1)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return p, fmt.Errorf("watch %s: %w", m.BatchID, err)
		}
		k, err := contract.KeysOf(msg.Headers())
		if err != nil {
			continue
		}
		switch k.Kind {
		case flashpipe.EventResult:
			if k.Seq < 1 || k.Seq > m.Count || k.Generation < m.Generation {
				continue
			}
			if onResult != nil {
				ev, err := contract.DecodeEvent(msg.Headers(), msg.Data())
				if err != nil {
					return p, fmt.Errorf("follow %s: %w", m.BatchID, err)
				}
				if err := onResult(*ev.Result); err != nil {
					return p, err
				}
			}
			if !seen[k.Seq] {
				seen[k.Seq] = true
				p.Done++
			}
			if k.Status == flashpipe.StatusFailed {
				failed[k.Seq] = true
			} else {
				delete(failed, k.Seq)
			}
			p.Failed = len(failed)
			p.OK = p.Done - p.Failed
		case flashpipe.EventComplete:
			if k.Generation >= m.Generation {
				p.Complete = true
			}
		}
		if fn != nil {
			fn(p)
		}
		if p.Complete {
			return p, nil
		}
	}
}

// Results calls fn with the final result of every item of a complete batch, in
// ascending Seq: the base generation's result (generation 0's, or the latest
// replacement's: see flashpipe.Manifest.Base), or a later generation's where a retry
// replaced it. Memory is bounded by the number of replaced items, not the batch size.
func Results(ctx context.Context, js jetstream.JetStream, c *contract.Contract, batchID string, fn func(flashpipe.Result) error) error {
	subject := c.OrderedSubject(batchID)
	// Pass 1, headers only: where each generation's results sit, where the latest
	// manifest is, and whether the latest generation completed.
	type at struct {
		gen int
		seq uint64
	}
	replaced := map[int]at{}
	latestGen, completeGen := -1, -1
	var latestManifest uint64
	if err := scan(ctx, js, c, subject, true, func(msg jetstream.Msg, k contract.Keys) error {
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		switch k.Kind {
		case flashpipe.EventManifest:
			if k.Generation > latestGen {
				latestGen, latestManifest = k.Generation, md.Sequence.Stream
			}
		case flashpipe.EventResult:
			if k.Generation > 0 {
				replaced[k.Seq] = at{k.Generation, md.Sequence.Stream}
			}
		case flashpipe.EventComplete:
			completeGen = max(completeGen, k.Generation)
		}
		return nil
	}); err != nil {
		return err
	}
	if latestGen < 0 {
		return fmt.Errorf("batch %q has no ordered events: %w", batchID, flashpipe.ErrNotFound)
	}
	if completeGen < latestGen {
		return fmt.Errorf("batch %q generation %d: %w", batchID, latestGen, ErrIncomplete)
	}
	ordered, err := js.Stream(ctx, c.OrderedStream())
	if err != nil {
		return err
	}
	base := 0
	if latestGen > 0 {
		raw, err := ordered.GetMsg(ctx, latestManifest)
		if err != nil {
			return fmt.Errorf("read the latest manifest of %s: %w", batchID, err)
		}
		ev, err := contract.DecodeEvent(raw.Header, raw.Data)
		if err != nil {
			return err
		}
		base = ev.Manifest.Base
	}
	// Pass 2: the base generation's results in order, each swapped for its latest
	// replacement by a later generation.
	return scan(ctx, js, c, subject, false, func(msg jetstream.Msg, k contract.Keys) error {
		if k.Kind != flashpipe.EventResult || k.Generation != base {
			return nil
		}
		h, data := msg.Headers(), msg.Data()
		if r, ok := replaced[k.Seq]; ok && r.gen > base {
			raw, err := ordered.GetMsg(ctx, r.seq)
			if err != nil {
				return fmt.Errorf("read replacement of seq %d: %w", k.Seq, err)
			}
			h, data = raw.Header, raw.Data
		}
		ev, err := contract.DecodeEvent(h, data)
		if err != nil {
			return err
		}
		return fn(*ev.Result)
	})
}

// Events calls fn with every event of a batch's ordered log that exists when it
// starts, in log order, stopping at the first error fn returns; it returns how many
// it read. A batch with no events is an error wrapping flashpipe.ErrNotFound.
func Events(ctx context.Context, js jetstream.JetStream, c *contract.Contract, batchID string, fn func(flashpipe.Event) error) (int, error) {
	n := 0
	err := scan(ctx, js, c, c.OrderedSubject(batchID), false, func(msg jetstream.Msg, _ contract.Keys) error {
		ev, err := contract.DecodeEvent(msg.Headers(), msg.Data())
		if err != nil {
			return fmt.Errorf("event %d of %s: %w", n+1, batchID, err)
		}
		n++
		return fn(ev)
	})
	if err == nil && n == 0 {
		err = fmt.Errorf("batch %q has no events in the ordered stream: %w", batchID, flashpipe.ErrNotFound)
	}
	return n, err
}

// Spent is what a batch's results in the ordered log report it paid (the sum of
// their Usage.Cost), every generation's; a batch with no events spent 0. Calls in
// flight, and results not yet in order, are not in it.
func Spent(ctx context.Context, js jetstream.JetStream, c *contract.Contract, batchID string) (float64, error) {
	var usd float64
	_, err := Events(ctx, js, c, batchID, func(e flashpipe.Event) error {
		if e.Result != nil {
			usd += e.Result.Usage.Cost
		}
		return nil
	})
	if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
		return 0, fmt.Errorf("what batch %s spent so far: %w", batchID, err)
	}
	return usd, nil
}

// scan reads every message on subject that exists when it starts, in order.
func scan(ctx context.Context, js jetstream.JetStream, c *contract.Contract, subject string, headersOnly bool, fn func(jetstream.Msg, contract.Keys) error) error {
	oc, err := js.OrderedConsumer(ctx, c.OrderedStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		HeadersOnly:    headersOnly,
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	err = natsx.ReadPending(ctx, oc, info.NumPending, 0, func(msg jetstream.Msg) error {
		k, err := contract.KeysOf(msg.Headers())
		if err != nil {
			return err
		}
		return fn(msg, k)
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	return nil
}

// Latest reports the generation of the last event in a batch's ordered log and whether
// that event is the generation's completion. ok is false for a batch with no events.
func Latest(ctx context.Context, js jetstream.JetStream, c *contract.Contract, batchID string) (gen int, complete, ok bool, err error) {
	st, err := js.Stream(ctx, c.OrderedStream())
	if err != nil {
		return 0, false, false, err
	}
	raw, err := st.GetLastMsgForSubject(ctx, c.OrderedSubject(batchID))
	if contract.IsNotFound(err) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, err
	}
	k, err := contract.KeysOf(raw.Header)
	if err != nil {
		return 0, false, false, err
	}
	return k.Generation, k.Kind == flashpipe.EventComplete, true, nil
}
