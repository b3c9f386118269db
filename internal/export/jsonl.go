package export

import (
	"bufio"
	"encoding/json"
	"io"

	"github.com/flashpipe/flashpipe"
)

// CardRecord is one line of the jsonl format: a card with the columns of the TSV, in
// their order.
type CardRecord struct {
	Position   int    `json:"position"`
	Term       string `json:"term"`
	TermNumber int64  `json:"term_number"`
	flashpipe.Card
}

// jsonLines writes one JSON value per line. Memory: one item.
type jsonLines struct {
	w     *bufio.Writer
	enc   *json.Encoder
	items bool // one line per item (the flashpipe.Result) instead of per card
	cards int
	order
}

func newJSONLines(w io.Writer, items bool) *jsonLines {
	b := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	return &jsonLines{w: b, enc: enc, items: items}
}

func openCardsJSONL(w io.Writer, _ Options) (Writer, error) { return newJSONLines(w, false), nil }

func openItemsJSONL(w io.Writer, _ Options) (Writer, error) { return newJSONLines(w, true), nil }

// Write adds the item's line (items), or one line per card of an ok result (cards).
func (j *jsonLines) Write(r flashpipe.Result) error {
	if err := j.order.next(r); err != nil {
		return err
	}
	if j.items {
		return j.enc.Encode(r)
	}
	if r.Status != flashpipe.StatusOK {
		return nil
	}
	for i := range r.Cards {
		j.cards++
		src := noteSource{r: &r, c: &r.Cards[i]}
		if err := j.enc.Encode(CardRecord{Position: j.cards, Term: src.term(), TermNumber: r.Position, Card: r.Cards[i]}); err != nil {
			return err
		}
	}
	return nil
}

// Close flushes the output.
func (j *jsonLines) Close() error { return j.w.Flush() }
