package export

import (
	"encoding/csv"
	"io"
	"strconv"

	"github.com/flashpipe/flashpipe"
)

// cardsCSV writes the flashcards as CSV (RFC 4180): the header and columns of the
// TSV, fields quoted where needed instead of escaped. Memory: one item.
type cardsCSV struct {
	w     *csv.Writer
	cards int
	order
}

func openCardsCSV(w io.Writer, _ Options) (Writer, error) {
	c := &cardsCSV{w: csv.NewWriter(w)}
	return c, c.w.Write(Header)
}

// Write adds one record per card of an ok result.
func (c *cardsCSV) Write(r flashpipe.Result) error {
	if err := c.order.next(r); err != nil {
		return err
	}
	if r.Status != flashpipe.StatusOK {
		return nil
	}
	for i := range r.Cards {
		c.cards++
		cols := cardColumns(c.cards, &r, &r.Cards[i])
		if err := c.w.Write(cols[:]); err != nil {
			return err
		}
	}
	return nil
}

// Close flushes the output.
func (c *cardsCSV) Close() error {
	c.w.Flush()
	return c.w.Error()
}

// FailedHeader is the header of the failed-items report.
var FailedHeader = []string{"position", "term", "stage", "reason", "attempts", "next_step"}

// failedCSV writes the failed-items report as CSV: one record per failed item, with
// where it failed, why, and what to do next. Memory: one item.
type failedCSV struct {
	w *csv.Writer
	order
}

func openFailedCSV(w io.Writer, _ Options) (Writer, error) {
	f := &failedCSV{w: csv.NewWriter(w)}
	return f, f.w.Write(FailedHeader)
}

// Write adds a failed item; an ok item adds nothing.
func (f *failedCSV) Write(r flashpipe.Result) error {
	if err := f.order.next(r); err != nil {
		return err
	}
	if r.Status == flashpipe.StatusOK {
		return nil
	}
	var stage, reason, next string
	if r.Failure != nil {
		stage, reason, next = r.Failure.Stage, r.Failure.Reason, r.Failure.NextStep
	}
	return f.w.Write([]string{strconv.FormatInt(r.Position, 10), r.Term, stage, reason, strconv.Itoa(r.Attempts), next})
}

// Close flushes the output.
func (f *failedCSV) Close() error {
	f.w.Flush()
	return f.w.Error()
}

// cardColumns is one card as the 9 columns of the TSV (Header), unescaped.
func cardColumns(number int, r *flashpipe.Result, c *flashpipe.Card) [9]string {
	src := noteSource{r: r, c: c}
	return [9]string{strconv.Itoa(number), src.term(), strconv.FormatInt(r.Position, 10), c.TabName, c.Primer, c.Front, c.Back, c.Tags, c.HonorificLevel}
}
