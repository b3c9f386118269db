package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/lease"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func TestLeaseIsExclusiveRenewableAndExpires(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	const ttl = time.Second
	cfg := jetstream.KeyValueConfig{Bucket: c.Name("LEASES"), History: 1, TTL: ttl}
	a, err := lease.Open(ctx, js, cfg, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lease.Open(ctx, js, cfg, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.Acquire(ctx, "batch1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "batch1"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second acquire: %v, want lease.ErrHeld", err)
	}
	// Renewing keeps it past its TTL.
	for range 4 {
		time.Sleep(ttl / 2)
		if err := la.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Acquire(ctx, "batch1"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("acquire of a renewed lease: %v", err)
	}
	// Without renewal it expires; then b takes it and a's renewal fails.
	var lb *lease.Lease
	natstest.Eventually(t, 10*ttl, func() bool {
		lb, err = b.Acquire(ctx, "batch1")
		return err == nil
	}, "the abandoned lease never expired")
	if err := la.Renew(ctx); err == nil {
		t.Fatal("the old owner renewed a lease it lost")
	}
	// Releasing lets another take it at once.
	lb.Release(ctx)
	if _, err := a.Acquire(ctx, "batch1"); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}
