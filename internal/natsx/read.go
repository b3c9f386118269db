package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultReadStall is how long ReadPending waits for the next message before it gives
// up.
const DefaultReadStall = 30 * time.Second

// ErrReadStalled is returned by ReadPending when the server sends nothing for the
// stall time although messages are pending: most often a user not allowed to pull
// from the stream (the server then answers nothing), or a server gone.
var ErrReadStalled = errors.New("no message arrived although some are pending (is this NATS user allowed to read the stream? see docs/security.md)")

// ReadPending reads the messages a consumer had pending when it was created (an
// ordered consumer: ask its Info first), n of them, calling fn for each in order. It
// pulls up to 1,000 at a time and fails with ErrReadStalled when nothing arrives for
// stall (zero: DefaultReadStall), so a read never hangs on a missing permission.
func ReadPending(ctx context.Context, c jetstream.Consumer, n uint64, stall time.Duration, fn func(jetstream.Msg) error) error {
	if n == 0 {
		return nil
	}
	if stall <= 0 {
		stall = DefaultReadStall
	}
	it, err := c.Messages(jetstream.PullMaxMessages(int(min(n, 1000))), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return err
	}
	defer it.Stop()
	for i := uint64(0); i < n; i++ {
		nctx, cancel := context.WithTimeout(ctx, stall)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d of %d read, then nothing for %s", ErrReadStalled, i, n, stall)
			}
			return err
		}
		if err := fn(msg); err != nil {
			return err
		}
	}
	return nil
}
