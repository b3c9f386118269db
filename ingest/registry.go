package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
)

// Record is what the batch id registry keeps of a batch, for ever, whatever the
// streams' retention: enough to tell a resubmission from another batch under the same
// id, to say when and from where the batch was first submitted, and to number the
// generation of a replacement after the batch's messages have expired.
type Record struct {
	ContentHash string    `json:"content_hash"`
	Count       int       `json:"count"`
	Source      string    `json:"source"`
	SubmittedAt time.Time `json:"submitted_at"`
	// Generation is the latest generation started; Base the generation that
	// published the current item list (see flashpipe.Manifest.Base).
	Generation int        `json:"generation"`
	Base       int        `json:"base,omitempty"`
	ReplacedAt *time.Time `json:"replaced_at,omitempty"`
}

// recordOf is the record of a manifest (a batch submitted before the registry existed,
// or by a publisher that does not write it).
func recordOf(m flashpipe.Manifest) Record {
	return Record{ContentHash: m.ContentHash, Count: m.Count, Source: m.Source, SubmittedAt: m.CreatedAt,
		Generation: m.Generation, Base: m.Base}
}

// describe says when, from where and with how many items a batch was submitted.
func (r Record) describe() string {
	return fmt.Sprintf("submitted %s from %q with %d items", r.SubmittedAt.Local().Format(time.DateTime), r.Source, r.Count)
}

// registry is the batch id registry: a key-value bucket, one key per batch id.
type registry struct{ kv jetstream.KeyValue }

func (p *Publisher) registry(ctx context.Context) (registry, error) {
	kv, err := p.js.KeyValue(ctx, p.c.RegistryBucket())
	if err != nil {
		return registry{}, fmt.Errorf("ingest: batch id registry: %w", err)
	}
	return registry{kv}, nil
}

// get returns a batch's record and its revision, or ok false.
func (r registry) get(ctx context.Context, id string) (rec Record, rev uint64, ok bool, err error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, false, nil
	}
	if err != nil {
		return rec, 0, false, fmt.Errorf("ingest: batch id registry: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, false, fmt.Errorf("ingest: batch id registry: record of %s: %w", id, err)
	}
	return rec, e.Revision(), true, nil
}

// errRegistryRace means another publisher wrote the batch's record first.
var errRegistryRace = errors.New("another publisher wrote the batch's record first")

// put writes a batch's record: created when rev is 0, else updated from rev. A record
// written meanwhile by another publisher fails with errRegistryRace.
func (r registry) put(ctx context.Context, id string, rec Record, rev uint64) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = r.kv.Create(ctx, id, data)
	} else {
		_, err = r.kv.Update(ctx, id, data, rev)
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrKeyExists),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		return errRegistryRace
	case err != nil:
		return fmt.Errorf("ingest: batch id registry: %w", err)
	}
	return nil
}

// noteGeneration records that generation gen of a batch started (retry, reprocess),
// so that a later replacement is numbered after it even once the streams have dropped
// the batch. Best effort: a replacement also reads the streams.
func (p *Publisher) noteGeneration(ctx context.Context, m flashpipe.Manifest) {
	reg, err := p.registry(ctx)
	if err != nil {
		return
	}
	for range 5 {
		rec, rev, ok, err := reg.get(ctx, m.BatchID)
		if err != nil {
			return
		}
		if !ok {
			rec, rev = recordOf(m), 0
		} else if rec.Generation >= m.Generation {
			return
		}
		rec.Generation = m.Generation
		if err := reg.put(ctx, m.BatchID, rec, rev); !errors.Is(err, errRegistryRace) {
			if err != nil {
				p.log.Warn("generation not recorded in the batch id registry", "batch", m.BatchID, "err", err)
			}
			return
		}
	}
}
