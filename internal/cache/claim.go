package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Claims: identical look-ups on different replicas pay once.
//
// Before it pays for an answer, a replica claims the answer's key in the claims bucket
// (<Bucket>_CLAIMS, in memory, MaxAge Config.ClaimTTL): a kv.Create, which only one
// replica wins. The winner renews its claim every ClaimTTL/3 while it computes, stores
// the answer, then deletes the claim. The others watch the claim: when it is deleted
// they read the answer (a failed computation stores none: then one of them claims the
// key in turn), and when it has not been renewed for ClaimTTL (its replica died) one of
// them takes it over with a compare-and-set on the stale claim's revision.

// DefaultClaimTTL is how long a claim lasts without renewal: how long the others wait
// for a replica that died while paying for an answer.
const DefaultClaimTTL = 30 * time.Second

// ClaimsBucketSuffix names the claims bucket after the cache bucket (in memory).
const ClaimsBucketSuffix = "_CLAIMS"

// claim tries to claim key for this replica. It returns the claim's revision when it
// got it, or when the current claim, held by another replica, expires. The claims
// bucket is in memory: a NATS server that restarted has lost it, and claim creates it
// again.
func (c *Cache) claim(ctx context.Context, key string) (rev uint64, until time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opTime)
	defer cancel()
	rev, until, err = c.tryClaim(ctx, key)
	if err != nil && bucketGone(err) {
		if _, _, cerr := contract.EnsureKeyValue(ctx, c.js, c.claimsCfg); cerr != nil {
			return 0, time.Time{}, fmt.Errorf("%w (and re-creating the claims bucket: %w)", err, cerr)
		}
		c.log.Info("claims bucket re-created (the NATS server lost it)", "bucket", c.claimsCfg.Bucket)
		rev, until, err = c.tryClaim(ctx, key)
	}
	return rev, until, err
}

// bucketGone reports whether err says the bucket's stream does not exist.
func bucketGone(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, nats.ErrNoResponders)
}

func (c *Cache) tryClaim(ctx context.Context, key string) (rev uint64, until time.Time, err error) {
	for {
		rev, err = c.claims.Create(ctx, key, []byte(c.id))
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return rev, time.Time{}, err
		}
		e, err := c.claims.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		until = e.Created().Add(c.claimTTL)
		if time.Now().Before(until) {
			return 0, until, nil
		}
		// Not renewed for ClaimTTL: its replica stopped. Take it over, unless another
		// replica does first.
		rev, err = c.claims.Update(ctx, key, []byte(c.id), e.Revision())
		if err == nil {
			c.log.Info("took over the claim of a replica that stopped paying for an answer",
				"key", key, "claimant", string(e.Value()))
			return rev, time.Time{}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, time.Time{}, err
		}
	}
}

// hold renews the claim every ClaimTTL/3 until the returned release is called, which
// deletes it (unless another replica took it over).
func (c *Cache) hold(key string, rev uint64) (release func()) {
	done := make(chan struct{})
	stopped := make(chan uint64)
	go func() {
		t := time.NewTicker(c.claimTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				stopped <- rev
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), c.opTime)
				next, err := c.claims.Update(ctx, key, []byte(c.id), rev)
				cancel()
				if err != nil {
					c.log.Warn("claim not renewed; another replica may pay for the same answer", "key", key, "err", err)
					continue
				}
				rev = next
			}
		}
	}()
	return func() {
		close(done)
		rev := <-stopped
		var err error
		for range 2 { // the others wait for a claim not released until it expires
			ctx, cancel := context.WithTimeout(context.Background(), c.opTime)
			err = c.claims.Delete(ctx, key, jetstream.LastRevision(rev))
			cancel()
			if err == nil || errors.Is(err, jetstream.ErrKeyExists) { // released, or taken over
				return
			}
		}
		c.log.Warn("claim not released: replicas waiting for the answer find it when the claim expires",
			"key", key, "claim_ttl", c.claimTTL, "err", err)
	}
}

// await waits until the claim on key, held by another replica until until unless
// renewed, is released or expires, or ctx ends. It listens on the claim's subject (a
// plain subscription: no consumer to create for each look-up that waits).
func (c *Cache) await(ctx context.Context, key string, until time.Time) error {
	ch := make(chan *nats.Msg, 8)
	sub, err := c.js.Conn().ChanSubscribe("$KV."+c.bucket+ClaimsBucketSuffix+"."+key, ch)
	if err != nil {
		return fmt.Errorf("%w: watch claim: %w", ErrUnavailable, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Released between the claim attempt and the subscription?
	gctx, cancel := context.WithTimeout(ctx, c.opTime)
	_, err = c.claims.Get(gctx, key)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("%w: read claim: %w", ErrUnavailable, err)
	}
	expired := time.NewTimer(time.Until(until))
	defer expired.Stop()
	for {
		select {
		case m := <-ch:
			if m.Header.Get(kvOperation) != "" {
				return nil // deleted or purged: released
			}
			expired.Reset(c.claimTTL) // renewed
		case <-expired.C:
			c.log.Info("the replica paying for an answer did not renew its claim", "key", key)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// kvOperation is the header of a key-value delete or purge marker.
const kvOperation = "KV-Operation"
