package export

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/flashpipe/flashpipe"
)

// ankiTSV writes a text file for Anki's File > Import (Anki 2.1.54 and later read its
// header lines): tab-separated, HTML fields, one line per card with the fields of the
// note type (NoteTypeName, matched by column name, so with no such note type in the
// collection Anki's Basic type still gets Front and Back), the tags, the GUID (the
// same as the apkg format's, so either updates the notes the other imported) and,
// with sub-decks, the deck. Memory: one item plus the GUID keys.
type ankiTSV struct {
	w     *bufio.Writer
	deck  string
	opts  Options
	guids *guids
	order
}

func openAnkiTSV(w io.Writer, o Options) (Writer, error) {
	deck, _ := normalizeDeck(o.Deck) // validated by Format.New
	t := &ankiTSV{w: bufio.NewWriterSize(w, 64<<10), deck: deck, opts: o, guids: newGUIDs(deck)}
	return t, t.header()
}

func (t *ankiTSV) header() error {
	cols := make([]string, 0, len(fields)+3)
	for _, f := range fields {
		cols = append(cols, f.name)
	}
	cols = append(cols, "Tags", "GUID")
	fmt.Fprintf(t.w, "#separator:tab\n#html:true\n#notetype:%s\n", NoteTypeName)
	if t.opts.SubdecksPerTab {
		cols = append(cols, "Deck")
		fmt.Fprintf(t.w, "#deck column:%d\n", len(cols))
	} else {
		fmt.Fprintf(t.w, "#deck:%s\n", t.deck)
	}
	fmt.Fprintf(t.w, "#tags column:%d\n#guid column:%d\n", len(fields)+1, len(fields)+2)
	_, err := fmt.Fprintf(t.w, "#columns:%s\n", strings.Join(cols, "\t"))
	return err
}

// Write adds one line per card of an ok result.
func (t *ankiTSV) Write(r flashpipe.Result) error {
	if err := t.order.next(r); err != nil {
		return err
	}
	if r.Status != flashpipe.StatusOK {
		return nil
	}
	for _, n := range notesOf(&r, t.guids) {
		line := strings.Join(n.fields, "\t") + "\t" + strings.Join(n.tags, " ") + "\t" + n.guid
		if t.opts.SubdecksPerTab {
			line += "\t" + t.deck + "::" + subdeckName(n.tab)
		}
		if strings.HasPrefix(line, "#") {
			// Anki's reader skips lines starting with '#' as comments.
			line = "&#35;" + line[1:]
		}
		if _, err := t.w.WriteString(line + "\n"); err != nil {
			return err
		}
	}
	return nil
}

// Close flushes the output.
func (t *ankiTSV) Close() error { return t.w.Flush() }
