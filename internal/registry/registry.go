// Package registry is the batch id registry: a key-value bucket with one key per
// batch id ever submitted, kept for ever (whatever the streams' retention), holding
// the batch's content hash, count, source and latest generation. It makes a batch id
// name one batch for ever: ingest checks and writes it when it submits, and the
// scheduler and the sequencer admit a manifest published by any client only if it
// agrees with it (see Admit). Writes are compare-and-set. Safe for concurrent use.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
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

// RecordOf is the record of a manifest (a batch submitted before the registry existed,
// or by a publisher that does not write it).
func RecordOf(m flashpipe.Manifest) Record {
	return Record{ContentHash: m.ContentHash, Count: m.Count, Source: m.Source, SubmittedAt: m.CreatedAt,
		Generation: m.Generation, Base: m.Base}
}

// Trusts reports whether m may be the latest manifest of the batch the record
// describes, by the rules Admit applies: a valid manifest of the record's item list
// (its base and content hash), of an older, replaced list, or a replacement numbered
// after every generation the record knows. A manifest published by someone else that
// contradicts the record (the scheduler refuses it) is not trusted, whatever its place
// in the stream.
func (r Record) Trusts(m flashpipe.Manifest) bool {
	if m.Validate() != nil {
		return false
	}
	switch {
	case m.Base < r.Base:
		return true
	case m.Base == r.Base:
		return m.ContentHash == r.ContentHash
	default:
		return m.Generation > r.Generation
	}
}

// Describe says when, from where and with how many items a batch was submitted.
func (r Record) Describe() string {
	return fmt.Sprintf("submitted %s from %q with %d items", r.SubmittedAt.Local().Format(time.DateTime), r.Source, r.Count)
}

// Registry is the batch id registry.
type Registry struct{ kv jetstream.KeyValue }

// Open opens the registry (it must exist: the services and `streams apply` create it).
func Open(ctx context.Context, js jetstream.JetStream, c *contract.Contract) (Registry, error) {
	kv, err := js.KeyValue(ctx, c.RegistryBucket())
	if err != nil {
		return Registry{}, fmt.Errorf("batch id registry: %w", err)
	}
	return Registry{kv}, nil
}

// Get returns a batch's record and its revision, or ok false.
func (r Registry) Get(ctx context.Context, id string) (rec Record, rev uint64, ok bool, err error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, false, nil
	}
	if err != nil {
		return rec, 0, false, fmt.Errorf("batch id registry: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, false, fmt.Errorf("batch id registry: record of %s: %w", id, err)
	}
	return rec, e.Revision(), true, nil
}

// ErrRace means another publisher wrote the batch's record first.
var ErrRace = errors.New("another publisher wrote the batch's record first")

// Put writes a batch's record: created when rev is 0, else updated from rev. A record
// written meanwhile by another publisher fails with ErrRace.
func (r Registry) Put(ctx context.Context, id string, rec Record, rev uint64) error {
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
		return ErrRace
	case err != nil:
		return fmt.Errorf("batch id registry: %w", err)
	}
	return nil
}

// NoteGeneration records that generation m of a batch started (retry, reprocess), so
// that a later replacement is numbered after it even once the streams have dropped the
// batch. Best effort: a replacement also reads the streams.
func (r Registry) NoteGeneration(ctx context.Context, m flashpipe.Manifest) error {
	for range 5 {
		rec, rev, ok, err := r.Get(ctx, m.BatchID)
		if err != nil {
			return err
		}
		if !ok {
			rec, rev = RecordOf(m), 0
		} else if rec.Generation >= m.Generation {
			return nil
		}
		rec.Generation = m.Generation
		if err := r.Put(ctx, m.BatchID, rec, rev); !errors.Is(err, ErrRace) {
			return err
		}
	}
	return ErrRace
}

// Admit checks a manifest, published by any client, against the registry: a batch id
// the registry holds with other items at the same base (and not replaced by this
// manifest) is refused with an error wrapping flashpipe.ErrBatchConflict; an unknown
// one is recorded, so that it names this batch for ever. A manifest published by
// ingest is always admitted (ingest wrote its record first).
func (r Registry) Admit(ctx context.Context, m flashpipe.Manifest) error {
	for range 5 {
		rec, rev, ok, err := r.Get(ctx, m.BatchID)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			err = r.Put(ctx, m.BatchID, RecordOf(m), 0)
		case m.Base < rec.Base:
			return nil // an older generation's manifest: not this record's business
		case m.Base == rec.Base && rec.ContentHash != m.ContentHash:
			return fmt.Errorf("batch %q was %s, with other items: %w", m.BatchID, rec.Describe(), flashpipe.ErrBatchConflict)
		case m.Base > rec.Base && m.Generation <= rec.Generation:
			return fmt.Errorf("batch %q: replacement generation %d is not after generation %d: %w", m.BatchID, m.Generation, rec.Generation, flashpipe.ErrBatchConflict)
		case m.Base > rec.Base || m.Generation > rec.Generation:
			next := RecordOf(m)
			next.SubmittedAt = rec.SubmittedAt
			if m.Base > rec.Base {
				at := m.CreatedAt
				next.ReplacedAt = &at
			} else {
				next.ReplacedAt = rec.ReplacedAt
			}
			err = r.Put(ctx, m.BatchID, next, rev)
		default:
			return nil
		}
		if !errors.Is(err, ErrRace) {
			return err
		}
	}
	return ErrRace
}
