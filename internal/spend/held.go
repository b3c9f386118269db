package spend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Held items: an item a spend cap refuses must not stay at the processors' consumer,
// where it would take one of its MaxAckPending slots for as long as the batch is
// paused and starve every other batch. The processor records the item's ready message
// here (Set aside), then acknowledges it; the scheduler publishes it to the ready
// stream again once the cap allows (Requeue), and deletes the record; the items of a
// generation a replacement superseded, or of a batch gone, it deletes unpublished. A
// crash between the two steps of either side publishes an item twice at worst, which
// the pipeline absorbs (results are idempotent; the answers are cached).

// HeldItem is the ready message of an item set aside by a spend cap.
type HeldItem struct {
	Subject string      `json:"subject"`
	Header  nats.Header `json:"header,omitempty"`
	Data    []byte      `json:"data"`
	At      time.Time   `json:"at"`
}

func heldKey(batch string, seq, generation int) string {
	return "held." + batch + "." + strconv.Itoa(seq) + "." + strconv.Itoa(generation)
}

// SetAside records an item held by a cap. Its message id header is dropped: the
// message published again is a new message.
func (l *Ledger) SetAside(ctx context.Context, batch string, seq, generation int, subject string, header nats.Header, data []byte) error {
	h := nats.Header{}
	for k, v := range header {
		if k != jetstream.MsgIDHeader {
			h[k] = v
		}
	}
	raw, err := json.Marshal(HeldItem{Subject: subject, Header: h, Data: data, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := l.kv.Put(ctx, heldKey(batch, seq, generation), raw); err != nil {
		return fmt.Errorf("spend: set aside %s seq %d: %w", batch, seq, err)
	}
	return nil
}

// HeldCounts returns how many items are set aside, by batch.
func (l *Ledger) HeldCounts(ctx context.Context) (map[string]int, error) {
	keys, err := l.heldKeys(ctx, "held.>")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, k := range keys {
		if parts := strings.Split(k, "."); len(parts) == 4 {
			out[parts[1]]++
		}
	}
	return out, nil
}

// HeldCount returns how many items of batch are set aside.
func (l *Ledger) HeldCount(ctx context.Context, batch string) (int, error) {
	keys, err := l.heldKeys(ctx, "held."+batch+".>")
	return len(keys), err
}

func (l *Ledger) heldKeys(ctx context.Context, filter string) ([]string, error) {
	lister, err := l.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("spend: list held items: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// Requeue publishes the items set aside of batch with publish (the scheduler's
// publish to the ready stream) and forgets each one published; it returns how many.
// Items of a generation below from (one a replacement of the batch superseded, or any
// of a batch gone: from math.MaxInt) are forgotten without being published, so that
// no one pays for an item whose result would be dropped. It publishes at most limit
// items (the room the caller has for them); the others stay for a next call.
func (l *Ledger) Requeue(ctx context.Context, batch string, from, limit int, publish func(ctx context.Context, msg *nats.Msg) error) (int, error) {
	keys, err := l.heldKeys(ctx, "held."+batch+".>")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		if g, ok := heldGeneration(k); ok && g < from {
			if err := l.kv.Delete(ctx, k); err != nil {
				return n, fmt.Errorf("spend: forget %s: %w", k, err)
			}
			l.log.Info("item set aside by a spend cap dropped: its generation is superseded or its batch gone", "key", k)
			continue
		}
		if n >= limit {
			continue
		}
		e, err := l.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("spend: read %s: %w", k, err)
		}
		var it HeldItem
		if err := json.Unmarshal(e.Value(), &it); err != nil {
			l.log.Error("held item unreadable: dropped", "key", k, "err", err)
			_ = l.kv.Delete(ctx, k, jetstream.LastRevision(e.Revision()))
			continue
		}
		if err := publish(ctx, &nats.Msg{Subject: it.Subject, Header: it.Header, Data: it.Data}); err != nil {
			return n, err
		}
		n++
		// Set aside again meanwhile (a new revision): that one stays for the next round.
		if err := l.kv.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return n, fmt.Errorf("spend: forget %s: %w", k, err)
		}
	}
	return n, nil
}

// heldGeneration reads the generation of a held item's key.
func heldGeneration(key string) (int, bool) {
	parts := strings.Split(key, ".")
	if len(parts) != 4 {
		return 0, false
	}
	g, err := strconv.Atoi(parts[3])
	return g, err == nil
}
