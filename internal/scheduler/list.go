package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// List returns the generations being dispatched, as the leader last wrote them
// (within Config.FlushInterval), in no particular order. A missing bucket (no
// scheduler ever ran) lists none. It reads the bucket with one watch, so it costs one
// consumer however many generations there are.
func List(ctx context.Context, js jetstream.JetStream, c *contract.Contract) ([]Entry, error) {
	kv, err := js.KeyValue(ctx, c.ScheduleBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("scheduler: watch %s: %w", c.ScheduleBucket(), err)
	}
	defer w.Stop()
	var out []Entry
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("scheduler: watch %s ended early", c.ScheduleBucket())
			}
			if e == nil { // the initial values are all delivered
				return out, nil
			}
			var en Entry
			if json.Unmarshal(e.Value(), &en) == nil {
				out = append(out, en)
			}
		}
	}
}
