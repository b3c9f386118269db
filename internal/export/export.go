package export

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe"
)

// Writer writes a batch's results in one format. Call Write once per item with its
// final result, in ascending Seq (as flashpipe.Store.Results and batchlog.Results give
// them), then Close once, also after a failed Write: Close finishes the output
// (flushes it, or for a package builds it) and releases what the writer holds; after a
// failed Write the output is incomplete and the caller throws it away (the package
// writer then builds nothing and returns that error). A caller that gives up for its
// own reasons calls Discard instead. A Writer is not safe for concurrent use.
// Memory is bounded by one item, except where a format needs more (noted on the
// format). Where the bytes go (atomically, or written through) is the caller's
// choice: see internal/outfile.
type Writer interface {
	Write(flashpipe.Result) error
	Close() error
}

// Discard releases a writer whose output is thrown away, for a caller whose own feed
// failed: it does not finish the output (a package is not built). Use it instead of
// Close.
func Discard(w Writer) {
	if t, ok := w.(*Tally); ok {
		w = t.Writer
	}
	if d, ok := w.(interface{ discard() }); ok {
		d.discard()
		return
	}
	_ = w.Close()
}

// Default option values.
const (
	// DefaultDeck names the Anki deck when neither Options.Deck nor a source is given.
	DefaultDeck = "flashpipe"
	// DefaultFormat is the format of an output whose name says nothing (no --format,
	// an unknown extension, or standard output).
	DefaultFormat = "tsv"
)

// Options configure the writers; formats ignore what does not apply to them.
type Options struct {
	// Deck names the Anki deck of the apkg and anki-tsv formats ("::" separates
	// parent and sub-deck). It is also the deck's identity in each note's GUID, so
	// re-exporting a batch into the same deck name updates the notes imported before
	// (see docs/exports.md). Default DefaultDeck; DeckFor derives one from a manifest.
	Deck string
	// SubdecksPerTab puts each card in a sub-deck of Deck named after its tab
	// (Deck::Scene, Deck::Hanja, ...). It does not change any GUID.
	SubdecksPerTab bool
	// TempDir is where the apkg format builds its collection before zipping it.
	// Default os.TempDir().
	TempDir string
	// Now is the clock; default time.Now. The apkg format takes the collection's
	// creation time and the note and card ids from it.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if strings.TrimSpace(o.Deck) == "" {
		o.Deck = DefaultDeck
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o Options) validate() error {
	if _, err := normalizeDeck(o.Deck); err != nil {
		return fmt.Errorf("export: Options.Deck %w", err)
	}
	return nil
}

// ValidateDeck reports whether name can name an Anki deck (Options.Deck): not empty,
// no control characters, no empty component between "::".
func ValidateDeck(name string) error {
	if _, err := normalizeDeck(name); err != nil {
		return fmt.Errorf("deck %q %w", name, err)
	}
	return nil
}

// DeckFor is the default deck of a batch: its source file's name without the
// extension (so a changed file under the same name, which is a new batch, still
// updates the same notes), or the batch id when the source is not a file name (no
// extension: "http", "nats").
func DeckFor(m flashpipe.Manifest) string {
	base := filepath.Base(strings.TrimSpace(m.Source))
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	if ext == "" || stem == "" {
		return m.BatchID
	}
	if _, err := normalizeDeck(stem); err != nil {
		return m.BatchID
	}
	return stem
}

// Format is one export format.
type Format struct {
	// Name is what --format takes.
	Name string
	// Ext is the file name ending the format is inferred from ("" for none); the
	// longest ending that matches wins, so words.items.jsonl is items-jsonl and
	// words.jsonl is jsonl.
	Ext string
	// Description says what the file holds, for --help and --list-formats.
	Description string
	open        func(io.Writer, Options) (Writer, error)
}

// New returns a writer of the format to w.
func (f Format) New(w io.Writer, o Options) (Writer, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return f.open(w, o)
}

// Formats lists the export formats, the default first.
func Formats() []Format {
	return []Format{
		{"tsv", ".tsv", "the flashcards TSV of docs/domain: a header and 9 columns, tabs and newlines escaped as \\t and \\n", openTSV},
		{"apkg", ".apkg", "an Anki package: one note per card in one deck, with its own note type; importing a newer export updates the notes in place", openAPKG},
		{"anki-tsv", ".txt", "a text file for Anki's File > Import: #-headers (notetype, deck, columns, tags and GUID columns), HTML fields", openAnkiTSV},
		{"csv", ".csv", "the flashcards as CSV (RFC 4180): the 9 columns of the TSV, fields quoted instead of escaped", openCardsCSV},
		{"jsonl", ".jsonl", "the flashcards as JSON Lines: one object per card with the 9 fields of the TSV", openCardsJSONL},
		{"items-jsonl", ".items.jsonl", "the items as JSON Lines: one object per item with its status, stage 1 analysis, cards or failure, usage", openItemsJSONL},
		{"failed", ".failed.csv", "the failed items as CSV: position, term, stage, reason, attempts, next step", openFailedCSV},
	}
}

// Names lists the format names, comma-separated, for help texts.
func Names() string {
	var names []string
	for _, f := range Formats() {
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

// Lookup returns the format named name.
func Lookup(name string) (Format, error) {
	for _, f := range Formats() {
		if strings.EqualFold(f.Name, name) {
			return f, nil
		}
	}
	return Format{}, fmt.Errorf("export: unknown format %q (known: %s)", name, Names())
}

// Resolve picks the format of an output: the one named (if name is not empty), else
// the one whose Ext ends path (the longest), else DefaultFormat.
func Resolve(name, path string) (Format, error) {
	if name != "" {
		return Lookup(name)
	}
	lower := strings.ToLower(path)
	var best Format
	for _, f := range Formats() {
		if f.Ext != "" && strings.HasSuffix(lower, f.Ext) && len(f.Ext) > len(best.Ext) {
			best = f
		}
	}
	if best.Name != "" {
		return best, nil
	}
	return Lookup(DefaultFormat)
}

// Tally is a Writer that counts what passes through it to another: items, cards of
// the ok items, and the failed items (without cards or analysis) for the report.
type Tally struct {
	Writer
	Items, Cards int
	Failed       []flashpipe.Result
}

// Write counts r and hands it on.
func (t *Tally) Write(r flashpipe.Result) error {
	if err := t.Writer.Write(r); err != nil {
		return err
	}
	t.Items++
	if r.Status == flashpipe.StatusOK {
		t.Cards += len(r.Cards)
	} else {
		r.Cards, r.Analysis = nil, nil
		t.Failed = append(t.Failed, r)
	}
	return nil
}

// order checks that results ascend in Seq.
type order struct{ last int }

func (o *order) next(r flashpipe.Result) error {
	if r.Seq <= o.last {
		return fmt.Errorf("export: result seq %d after %d: results must ascend", r.Seq, o.last)
	}
	o.last = r.Seq
	return nil
}
