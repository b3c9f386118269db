// Package export writes a batch's results to files in the formats learners and tools
// use: the Anki-ready TSV of docs/domain (the default), an Anki package (.apkg) whose
// notes update in place when a newer export is imported, Anki's text import format
// with headers, CSV and JSON Lines of the cards, JSON Lines of the items with their
// stage 1 analysis, and the failed-items report. Every format is a Writer made by a
// Format of the registry (Formats, Lookup, Resolve), so the CLI and the HTTP API call
// the same code; Writers take results in ascending Seq, as flashpipe.Store.Results and
// batchlog give them, and stream (see each format for what it holds in memory).
package export

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/flashpipe/flashpipe"
)

// Header is the TSV's first line.
var Header = []string{"position", "term", "term_number", "tab_name", "primer", "front", "back", "tags", "honorific_level"}

var escaper = strings.NewReplacer("\t", `\t`, "\n", `\n`, "\r", `\r`)

// TSV writes results as TSV. Write results in ascending Seq; TSV is not safe for
// concurrent use.
type TSV struct {
	w      *bufio.Writer
	cards  int
	items  int
	failed []flashpipe.Result
	last   int
	header bool
}

func (t *TSV) writeHeader() error {
	if t.header {
		return nil
	}
	t.header = true
	_, err := t.w.WriteString(strings.Join(Header, "\t") + "\n")
	return err
}

// NewTSV returns a writer that writes the header line first.
func NewTSV(w io.Writer) *TSV {
	return &TSV{w: bufio.NewWriterSize(w, 64<<10)}
}

func openTSV(w io.Writer, _ Options) (Writer, error) { return NewTSV(w), nil }

// Write adds one item's cards, or records it as failed.
func (t *TSV) Write(r flashpipe.Result) error {
	if r.Seq <= t.last {
		return fmt.Errorf("export: result seq %d after %d: results must ascend", r.Seq, t.last)
	}
	t.last = r.Seq
	if err := t.writeHeader(); err != nil {
		return err
	}
	t.items++
	if r.Status != flashpipe.StatusOK {
		r.Cards, r.Analysis = nil, nil // keep only what the report needs
		t.failed = append(t.failed, r)
		return nil
	}
	for i := range r.Cards {
		t.cards++
		for j, f := range cardColumns(t.cards, &r, &r.Cards[i]) {
			if j > 0 {
				_ = t.w.WriteByte('\t')
			}
			_, _ = escaper.WriteString(t.w, f)
		}
		if err := t.w.WriteByte('\n'); err != nil {
			return err
		}
	}
	return nil
}

// Close flushes the output (writing the header if no result was written).
func (t *TSV) Close() error {
	if err := t.writeHeader(); err != nil {
		return err
	}
	return t.w.Flush()
}

// Cards is the number of card lines written.
func (t *TSV) Cards() int { return t.cards }

// Items is the number of results written (ok and failed).
func (t *TSV) Items() int { return t.items }

// Failed returns the failed items, without cards, in order.
func (t *TSV) Failed() []flashpipe.Result { return t.failed }
