package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/outfile"
)

// Output says where and how a batch's results are written: a file (or "-" for
// standard output) in one of the export formats.
type Output struct {
	// Path is the file; "-" is standard output. A regular file appears only complete;
	// a device, FIFO or symlink target is written through (see internal/outfile).
	Path string
	// Format is an export format's name (export.Names); empty: from Path's extension.
	Format string
	// Deck names the Anki deck (apkg, anki-tsv); empty: export.DeckFor the manifest.
	Deck string
	// SubdecksPerTab puts each card in a sub-deck named after its tab.
	SubdecksPerTab bool
}

// ErrBadDeck wraps Check's refusal of a deck name.
var ErrBadDeck = errors.New("bad deck name")

// Check refuses a bad format or deck before anything is published or paid for.
func (o Output) Check() error {
	if _, err := export.Resolve(o.Format, o.Path); err != nil {
		return err
	}
	if o.Deck != "" {
		if err := export.ValidateDeck(o.Deck); err != nil {
			return fmt.Errorf("%w: %w", ErrBadDeck, err)
		}
	}
	return nil
}

// NewWriter returns the export writer of o's format on w, for the batch of manifest m
// (whose deck it names by default).
func (o Output) NewWriter(w io.Writer, m flashpipe.Manifest) (export.Writer, error) {
	format, err := export.Resolve(o.Format, o.Path)
	if err != nil {
		return nil, err
	}
	return format.New(w, export.Options{Deck: cmp.Or(o.Deck, export.DeckFor(m)), SubdecksPerTab: o.SubdecksPerTab})
}

// Write writes a batch's results to o's file: feed calls write with each result in
// ascending Seq. The file appears only complete; the tally counts what was written.
func (o Output) Write(m flashpipe.Manifest, feed func(write func(flashpipe.Result) error) error) (*export.Tally, error) {
	out, err := outfile.Create(o.Path)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	w, err := o.NewWriter(out, m)
	if err != nil {
		return nil, err
	}
	tally := &export.Tally{Writer: w}
	if err := feed(tally.Write); err != nil {
		export.Discard(w)
		return nil, fmt.Errorf("write %s: %w", o.Path, err)
	}
	err = w.Close()
	if err == nil {
		err = out.Commit()
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", o.Path, err)
	}
	return tally, nil
}

// BatchRun is one batch to run to completion: submit, follow, write the output.
type BatchRun struct {
	Batch ingest.Batch
	// Output, when set, receives the results as the batch runs.
	Output *Output
	// OnProgress is called as the batch progresses (see FollowOptions).
	OnProgress func(Progress)
}

// Run submits a batch, follows it to completion writing its output, and, with a
// store, waits until the store holds it complete. The summary's Elapsed and
// ItemsPerSecond count the generation this run followed, from the submit.
func (c *Client) Run(ctx context.Context, b BatchRun) (*Summary, error) {
	start := time.Now()
	sub, err := c.Submit(ctx, b.Batch)
	if err != nil {
		return nil, err
	}
	sum, err := c.FollowTo(ctx, sub.Manifest, b.Output, b.OnProgress)
	if err != nil {
		return nil, err
	}
	if c.store != nil {
		if _, err := c.WaitStored(ctx, sub.Manifest.BatchID, sub.Manifest.Generation); err != nil {
			return nil, err
		}
	}
	sum.Resubmitted = sub.Resubmitted
	if sub.Resubmitted {
		sum.Republished = sub.Published
	}
	sum.Timed(time.Since(start), sub.Manifest.Expected())
	return sum, nil
}

// FollowTo follows generation m of a batch to completion (see Follow), writing every
// item's final result to out when it is set.
func (c *Client) FollowTo(ctx context.Context, m flashpipe.Manifest, out *Output, onProgress func(Progress)) (*Summary, error) {
	if out == nil {
		return c.Follow(ctx, m, FollowOptions{OnProgress: onProgress})
	}
	var sum *Summary
	tally, err := out.Write(m, func(write func(flashpipe.Result) error) error {
		var err error
		sum, err = c.Follow(ctx, m, FollowOptions{OnProgress: onProgress, OnResult: write})
		return err
	})
	if err != nil {
		return nil, err
	}
	sum.Output, sum.Cards = out.Path, tally.Cards
	return sum, nil
}

// Timed sets the summary's elapsed time and rate: items over elapsed.
func (s *Summary) Timed(elapsed time.Duration, items int) {
	s.Elapsed = elapsed.Seconds()
	if s.Elapsed > 0 {
		s.ItemsPerSecond = float64(items) / s.Elapsed
	}
}
