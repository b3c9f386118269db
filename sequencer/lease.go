package sequencer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// errLeaseHeld is returned when another replica holds a batch's lease.
var errLeaseHeld = errors.New("batch leased by another sequencer")

// leases keeps one lease per batch in a KV bucket whose entries expire LeaseTTL after
// their last write: a replica creates the key to own the batch (creation fails while
// another holds it), rewrites it with its last revision to renew (a failed renewal
// means the lease was lost), and deletes it when done.
type leases struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	id  string
}

// LeaseBucketSuffix names the lease KV bucket after the contract's prefix:
// FLASHPIPE_SEQUENCER_LEASES.
const LeaseBucketSuffix = "SEQUENCER_LEASES"

// LeaseBucket is the configuration of the lease KV bucket for a lease TTL (zero:
// DefaultLeaseTTL): entries expire ttl after their last write.
func LeaseBucket(c *contract.Contract, ttl time.Duration) jetstream.KeyValueConfig {
	cfg := c.Config()
	return jetstream.KeyValueConfig{
		Bucket:      c.Name(LeaseBucketSuffix),
		Description: "flashpipe: which sequencer replica orders which batch",
		History:     1,
		TTL:         cmp.Or(ttl, DefaultLeaseTTL),
		Storage:     c.StorageType(),
		Replicas:    cfg.Replicas,
	}
}

func openLeases(ctx context.Context, js jetstream.JetStream, c *contract.Contract, ttl time.Duration, id string, log *slog.Logger) (*leases, error) {
	kv, err := contract.OpenKeyValue(ctx, js, LeaseBucket(c, ttl), log)
	if err != nil {
		return nil, fmt.Errorf("sequencer leases: %w", err)
	}
	return &leases{kv: kv, ttl: ttl, id: id}, nil
}

// heldError says another replica holds the lease, and how long until it expires if it
// is not renewed.
type heldError struct{ left time.Duration }

func (e *heldError) Error() string { return errLeaseHeld.Error() }
func (e *heldError) Unwrap() error { return errLeaseHeld }

// left returns how long the batch's lease has before it expires unrenewed.
func (l *leases) left(ctx context.Context, batch string) time.Duration {
	e, err := l.kv.Get(ctx, batch)
	if err != nil {
		return 0
	}
	return max(0, l.ttl-time.Since(e.Created()))
}

// lease is one held lease.
type lease struct {
	l     *leases
	batch string
	rev   uint64
}

// acquire takes the batch's lease, or fails with errLeaseHeld.
func (l *leases) acquire(ctx context.Context, batch string) (*lease, error) {
	rev, err := l.kv.Create(ctx, batch, []byte(l.id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, &heldError{left: l.left(ctx, batch)}
	}
	if err != nil {
		return nil, fmt.Errorf("acquire lease of %s: %w", batch, err)
	}
	return &lease{l: l, batch: batch, rev: rev}, nil
}

// renew extends the lease; an error means it is lost (another replica may own the
// batch now).
func (le *lease) renew(ctx context.Context) error {
	rev, err := le.l.kv.Update(ctx, le.batch, []byte(le.l.id), le.rev)
	if err != nil {
		return fmt.Errorf("renew lease of %s: %w", le.batch, err)
	}
	le.rev = rev
	return nil
}

// release gives the lease up, if it is still ours.
func (le *lease) release(ctx context.Context) {
	_ = le.l.kv.Delete(ctx, le.batch, jetstream.LastRevision(le.rev))
}
