package sequencer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func TestLeaseIsExclusiveRenewableAndExpires(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	const ttl = time.Second
	a, err := openLeases(ctx, js, c, ttl, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := openLeases(ctx, js, c, ttl, "b")
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.acquire(ctx, "batch1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.acquire(ctx, "batch1"); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("second acquire: %v, want errLeaseHeld", err)
	}
	// Renewing keeps it past its TTL.
	for range 4 {
		time.Sleep(ttl / 2)
		if err := la.renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.acquire(ctx, "batch1"); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("acquire of a renewed lease: %v", err)
	}
	// Without renewal it expires; then b takes it and a's renewal fails.
	var lb *lease
	natstest.Eventually(t, 10*ttl, func() bool {
		lb, err = b.acquire(ctx, "batch1")
		return err == nil
	}, "the abandoned lease never expired")
	if err := la.renew(ctx); err == nil {
		t.Fatal("the old owner renewed a lease it lost")
	}
	// Releasing lets another take it at once.
	lb.release(ctx)
	if _, err := a.acquire(ctx, "batch1"); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}
