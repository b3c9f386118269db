package ingest

import (
	"context"
	"fmt"

	"github.com/flashpipe/flashpipe"
)

// Items are the items of a valid batch in seq order: seq 1..Len, ascending unique
// position. A batch file's items are read from the file when they are needed
// (OpenFile, Spool), so a batch of any size costs 16 bytes per item in memory;
// SliceItems wraps items already in memory. Implementations are safe for concurrent
// use.
type Items interface {
	// Len is the number of items.
	Len() int
	// Hash returns flashpipe.HashItems of the items, the manifest's ContentHash. It
	// fails unless the items come in seq order with ascending unique positions, so a
	// batch that would break the seq rule is refused before anything is published.
	Hash(ctx context.Context) (string, error)
	// Each calls fn with every item and its seq, in seq order, and stops at fn's
	// first error, which it returns; it also stops when ctx is done.
	Each(ctx context.Context, fn func(seq int, it flashpipe.Item) error) error
}

// SliceItems returns items held in memory as Items; they must be sorted by unique
// ascending position, as Parse returns them (Hash fails otherwise). The slice must
// not change while it is used.
func SliceItems(items []flashpipe.Item) Items { return sliceItems(items) }

type sliceItems []flashpipe.Item

func (s sliceItems) Len() int { return len(s) }

func (s sliceItems) Hash(ctx context.Context) (string, error) { return hashItems(ctx, s) }

func (s sliceItems) Each(ctx context.Context, fn func(seq int, it flashpipe.Item) error) error {
	for i, it := range s {
		if i%eachCheckEvery == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fn(i+1, it); err != nil {
			return err
		}
	}
	return nil
}

// eachCheckEvery is how many items Each passes between two looks at its context.
const eachCheckEvery = 1024

// hashItems hashes items in one pass, checking the seq rule on the way.
func hashItems(ctx context.Context, items Items) (string, error) {
	h := flashpipe.NewItemHasher()
	n := 0
	var prev int64
	err := items.Each(ctx, func(seq int, it flashpipe.Item) error {
		n++
		switch {
		case seq != n:
			return fmt.Errorf("ingest: item %d has seq %d", n, seq)
		case n > 1 && it.Position <= prev:
			return fmt.Errorf("ingest: items must be sorted by unique ascending position (position %d follows %d)", it.Position, prev)
		}
		prev = it.Position
		h.Add(it)
		return nil
	})
	if err != nil {
		return "", err
	}
	if n != items.Len() {
		return "", fmt.Errorf("ingest: %d items read, %d expected", n, items.Len())
	}
	return h.Sum(), nil
}
