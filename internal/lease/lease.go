// Package lease gives a replica exclusive, expiring ownership of a key: a sequencer
// replica owns a batch, one scheduler replica leads. Leases are entries of a key-value
// bucket whose entries expire the bucket's TTL after their last write: a replica
// creates the key to take it (creation fails while another holds it), rewrites it
// with its last revision to renew it (a failed renewal means it was lost: the owner
// stops at once), and deletes it when done. A crashed owner's lease expires within the
// TTL. Safe for concurrent use.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// ErrHeld is returned (wrapped in a *HeldError) when another replica holds the lease.
var ErrHeld = errors.New("leased by another replica")

// HeldError says another replica holds a lease, and how long until it expires if it
// is not renewed.
type HeldError struct{ Left time.Duration }

func (e *HeldError) Error() string { return ErrHeld.Error() }
func (e *HeldError) Unwrap() error { return ErrHeld }

// Leases takes leases in one bucket for one replica.
type Leases struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	id  string
}

// Open opens the bucket cfg describes (creating it if it does not exist; its TTL is
// the leases' TTL) for the replica named id.
func Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, id string, log *slog.Logger) (*Leases, error) {
	if cfg.TTL <= 0 {
		return nil, errors.New("lease: the bucket needs a TTL")
	}
	kv, err := contract.OpenKeyValue(ctx, js, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	return &Leases{kv: kv, ttl: cfg.TTL, id: id}, nil
}

// TTL is how long a lease lasts without renewal.
func (l *Leases) TTL() time.Duration { return l.ttl }

// left returns how long the key's lease has before it expires unrenewed.
func (l *Leases) left(ctx context.Context, key string) time.Duration {
	e, err := l.kv.Get(ctx, key)
	if err != nil {
		return 0
	}
	return max(0, l.ttl-time.Since(e.Created()))
}

// Lease is one held lease.
type Lease struct {
	l   *Leases
	key string
	rev uint64
}

// Acquire takes the key's lease, or fails with a *HeldError.
func (l *Leases) Acquire(ctx context.Context, key string) (*Lease, error) {
	rev, err := l.kv.Create(ctx, key, []byte(l.id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, &HeldError{Left: l.left(ctx, key)}
	}
	if err != nil {
		return nil, fmt.Errorf("acquire lease of %s: %w", key, err)
	}
	return &Lease{l: l, key: key, rev: rev}, nil
}

// Renew extends the lease; an error means it is lost (another replica may hold it
// now). Not safe for concurrent use with Release.
func (le *Lease) Renew(ctx context.Context) error {
	rev, err := le.l.kv.Update(ctx, le.key, []byte(le.l.id), le.rev)
	if err != nil {
		return fmt.Errorf("renew lease of %s: %w", le.key, err)
	}
	le.rev = rev
	return nil
}

// Release gives the lease up, if it is still ours.
func (le *Lease) Release(ctx context.Context) {
	_ = le.l.kv.Delete(ctx, le.key, jetstream.LastRevision(le.rev))
}
