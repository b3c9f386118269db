package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/export"
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

// output is where and how a command writes a batch's results.
func (o OutputFlags) output(path string) app.Output {
	return app.Output{Path: path, Format: o.OutputFormat, Deck: o.Deck, SubdecksPerTab: o.SubdecksPerTab}
}

// checkOutput refuses a bad format or deck before anything is published or paid for,
// with exit code 2.
func checkOutput(out app.Output) error {
	err := out.Check()
	switch {
	case errors.Is(err, app.ErrBadDeck):
		return &exitError{code: 2, err: fmt.Errorf("--deck: %w", errors.Unwrap(err))}
	case err != nil:
		return &exitError{code: 2, err: err}
	}
	return nil
}

// writeStored writes a stored batch to out and records the card count and failed
// items in sum.
func writeStored(ctx context.Context, store flashpipe.Store, m flashpipe.Manifest, out app.Output, sum *summary) error {
	tally, err := out.Write(m, func(write func(flashpipe.Result) error) error {
		return store.Results(ctx, m.BatchID, flashpipe.ResultFilter{}, write)
	})
	if err != nil {
		return err
	}
	sum.Output, sum.Cards = out.Path, tally.Cards
	for _, f := range tally.Failed {
		sum.FailedItems = append(sum.FailedItems, app.FailedItemOf(f))
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
