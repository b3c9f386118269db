package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// ReadPending reads what is pending, in order, and never hangs: when the server sends
// nothing (here: fewer messages than said; in production, a user not allowed to pull)
// it fails with ErrReadStalled after the stall time.
func TestReadPendingReadsInOrderAndNeverHangs(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "READ", Subjects: []string{"read.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2500 {
		if _, err := js.Publish(ctx, "read.x", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(n uint64) ([]string, error) {
		oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		err = natsx.ReadPending(ctx, oc, n, 300*time.Millisecond, func(m jetstream.Msg) error {
			got = append(got, string(m.Data()))
			return nil
		})
		return got, err
	}
	got, err := read(2500)
	if err != nil || len(got) != 2500 || got[0] != "0" || got[2499] != "2499" {
		t.Fatalf("read %d messages (%v ... ), %v; want 0..2499 in order", len(got), got[:min(3, len(got))], err)
	}
	start := time.Now()
	got, err = read(2501)
	if !errors.Is(err, natsx.ErrReadStalled) || len(got) != 2500 || time.Since(start) > 10*time.Second {
		t.Fatalf("reading one more than the stream holds: %d read, %v after %s; want ErrReadStalled after 2500", len(got), err, time.Since(start))
	}
}
