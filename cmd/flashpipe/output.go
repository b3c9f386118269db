package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/outfile"
)

// DeckFlags name the Anki deck of the apkg and anki-tsv formats.
type DeckFlags struct {
	Deck           string `help:"Anki deck of the apkg and anki-tsv formats (default: the source file's name without extension, else the batch id). It is also the notes' identity: export into the same deck to update notes imported before." env:"FLASHPIPE_DECK"`
	SubdecksPerTab bool   `help:"apkg, anki-tsv: put each card in a sub-deck named after its tab (DECK::Scene, DECK::Hanja, ...)."`
}

// OutputFlags choose the format of the file a command writes with -o.
type OutputFlags struct {
	OutputFormat string `name:"output-format" help:"Format of the -o file: ${formats} (default: from its extension, .apkg, .txt (anki-tsv), .csv, .jsonl, .items.jsonl, .failed.csv, else tsv)." env:"FLASHPIPE_OUTPUT_FORMAT"`
	DeckFlags
}

// exportTarget is where and how a command writes a batch's results.
type exportTarget struct {
	path, format string
	deck         DeckFlags
}

func (o OutputFlags) target(path string) exportTarget {
	return exportTarget{path: path, format: o.OutputFormat, deck: o.DeckFlags}
}

// check refuses a bad format or deck before anything is published or paid for.
func (t exportTarget) check() error {
	if _, err := export.Resolve(t.format, t.path); err != nil {
		return &exitError{code: 2, err: err}
	}
	if t.deck.Deck != "" {
		if err := export.ValidateDeck(t.deck.Deck); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--deck: %w", err)}
		}
	}
	return nil
}

// writeExport writes a batch's results to the target: feed calls write with each
// result in ascending Seq. The output appears only complete (see internal/outfile);
// the tally counts what was written.
func writeExport(t exportTarget, m flashpipe.Manifest, feed func(write func(flashpipe.Result) error) error) (*export.Tally, error) {
	format, err := export.Resolve(t.format, t.path)
	if err != nil {
		return nil, err
	}
	out, err := outfile.Create(t.path)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	w, err := format.New(out, export.Options{Deck: cmp.Or(t.deck.Deck, export.DeckFor(m)), SubdecksPerTab: t.deck.SubdecksPerTab})
	if err != nil {
		return nil, err
	}
	tally := &export.Tally{Writer: w}
	if err := feed(tally.Write); err != nil {
		export.Discard(w)
		return nil, fmt.Errorf("write %s: %w", t.path, err)
	}
	err = w.Close()
	if err == nil {
		err = out.Commit()
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", t.path, err)
	}
	return tally, nil
}

// writeStored writes a stored batch to the target and records the card count and
// failed items in sum.
func writeStored(ctx context.Context, store flashpipe.Store, m flashpipe.Manifest, t exportTarget, sum *summary) error {
	tally, err := writeExport(t, m, func(write func(flashpipe.Result) error) error {
		return store.Results(ctx, m.BatchID, flashpipe.ResultFilter{}, write)
	})
	if err != nil {
		return err
	}
	sum.Output, sum.Cards = t.path, tally.Cards
	for _, f := range tally.Failed {
		sum.FailedItems = append(sum.FailedItems, failedItem(f))
	}
	return nil
}

// printFormats lists the export formats.
func printFormats() error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FORMAT\tFILE NAME\tCONTENT")
	for _, f := range export.Formats() {
		fmt.Fprintf(tw, "%s\t*%s\t%s\n", f.Name, f.Ext, f.Description)
	}
	return tw.Flush()
}
