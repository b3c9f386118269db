package export

import (
	"crypto/sha1" //nolint:gosec // Anki's field checksum is defined as SHA-1
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"html"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"

	"github.com/flashpipe/flashpipe"
)

// The Anki note type of flashpipe's cards. Anki matches the note type of an imported
// package to one in the collection by its id, and accepts it as the same only while
// its field names and template names are the same; notes are then matched by GUID.
// So NoteTypeID, the field names and the template name never change: a change to them
// is a new note type (a new name and id). Templates, styling and field rendering may
// change: bump NoteTypeRevision then, so packages made afterwards update them.
const (
	NoteTypeName = "flashpipe card"
	// NoteTypeID was derived once from SHA-256("flashpipe note type").
	NoteTypeID int64 = 1209621000853861
	// NoteTypeRevision (Unix seconds, 2026-12-06) is when the note type's templates,
	// styling or the rendering of its fields last changed. Every note's modification
	// time is at least this, so a package made after a change updates notes imported
	// before it; it must never be later than the day it is set.
	NoteTypeRevision int64 = 1796515200
	templateName           = "Card"
)

// field is one field of the note type: its name and its HTML from a card.
type field struct {
	name  string
	value func(n *noteSource) string
}

// noteSource is what one note is made of: the item's result and one of its cards.
type noteSource struct {
	r *flashpipe.Result
	c *flashpipe.Card
}

func (n *noteSource) analysis() *flashpipe.Analysis {
	if n.r.Analysis != nil {
		return n.r.Analysis
	}
	return &flashpipe.Analysis{}
}

// term is the term with its pronunciation (stage 1), or as submitted.
func (n *noteSource) term() string {
	if a := n.r.Analysis; a != nil && a.Term != "" {
		return a.Term
	}
	return n.r.Term
}

// Indexes of the fields that Anki's checksum (the first) and sort field use.
const (
	fieldFront = 0
	fieldTerm  = 2
)

// fields of the note type, in order. Their names are part of the note type's
// identity (see NoteTypeID): append only with a new note type.
var fields = []field{
	{"Front", func(n *noteSource) string { return fieldHTML(n.c.Front) }},
	{"Back", func(n *noteSource) string { return fieldHTML(n.c.Back) }},
	{"Term", func(n *noteSource) string { return fieldHTML(n.term()) }},
	{"Number", func(n *noteSource) string { return strconv.FormatInt(n.r.Position, 10) }},
	{"Tab", func(n *noteSource) string { return fieldHTML(n.c.TabName) }},
	{"Primer", func(n *noteSource) string { return fieldHTML(n.c.Primer) }},
	{"Honorific", func(n *noteSource) string { return fieldHTML(n.c.HonorificLevel) }},
	{"IPA", func(n *noteSource) string { return fieldHTML(n.analysis().IPA) }},
	{"PartOfSpeech", func(n *noteSource) string {
		if pos := n.analysis().POS; pos != "" {
			return fieldHTML(pos)
		}
		return fieldHTML(n.r.Type)
	}},
	{"Meaning", func(n *noteSource) string { return fieldHTML(n.analysis().PrimaryMeaning) }},
	{"OtherMeanings", func(n *noteSource) string { return fieldHTML(deref(n.analysis().OtherMeanings)) }},
	{"Metaphor", func(n *noteSource) string { return fieldHTML(n.analysis().Metaphor) }},
	{"Location", func(n *noteSource) string { return fieldHTML(n.analysis().SuggestedLocation) }},
	{"Anchor", func(n *noteSource) string {
		a := n.analysis()
		return joinHTML(" — ", a.AnchorObject, a.AnchorSensory)
	}},
	{"Explanation", func(n *noteSource) string { return fieldHTML(n.analysis().Explanation) }},
	{"Usage", func(n *noteSource) string { return fieldHTML(deref(n.analysis().UsageContext)) }},
	{"Comparison", func(n *noteSource) string {
		c := n.analysis().Comparison
		if c == nil || (c.Vs == "" && c.Nuance == "") {
			return ""
		}
		return joinHTML(": ", c.Vs, c.Nuance)
	}},
	{"Homonyms", func(n *noteSource) string {
		var lines []string
		for _, h := range n.analysis().Homonyms {
			head := h.Hanja
			if h.Reading != "" {
				head = strings.TrimSpace(head + " (" + h.Reading + ")")
			}
			lines = append(lines, joinHTML(" — ", joinPlain(": ", head, h.Meaning), h.Differentiator))
		}
		return strings.Join(lines, "<br>")
	}},
	{"Keywords", func(n *noteSource) string { return fieldHTML(strings.Join(n.analysis().KoreanKeywords, ", ")) }},
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// joinPlain joins the non-empty parts with sep.
func joinPlain(sep string, parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, sep)
}

// joinHTML joins the non-empty parts with sep, as HTML.
func joinHTML(sep string, parts ...string) string { return fieldHTML(joinPlain(sep, parts...)) }

var lineBreaks = strings.NewReplacer("\r\n", "<br>", "\n", "<br>", "\r", "<br>", "\t", "&#9;")

// fieldHTML renders plain text as the HTML of an Anki field: Unicode NFC (as Anki
// stores fields), control characters dropped, HTML special characters escaped,
// newlines as <br>, tabs as &#9; (so a field never holds a raw tab or newline, in a
// package or in a text file).
func fieldHTML(s string) string {
	s = norm.NFC.String(s)
	s = strings.Map(func(r rune) rune {
		if r != '\n' && r != '\r' && r != '\t' && unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return lineBreaks.Replace(html.EscapeString(s))
}

// stripHTML is Anki's text of a field, from which it computes the checksum (the first
// field) and the sort field: comments, style and script elements and tags removed,
// entities decoded, no-break spaces as spaces.
func stripHTML(s string) string {
	s = htmlTag.ReplaceAllString(s, "")
	if strings.Contains(s, "&") {
		s = strings.ReplaceAll(html.UnescapeString(s), "\u00a0", " ")
	}
	return s
}

var htmlTag = regexp.MustCompile(`(?si)(<!--.*?-->)|(<style.*?>.*?</style>)|(<script.*?>.*?</script>)|(<.*?>)`)

// fieldChecksum is Anki's checksum of a note's first field: the first 4 bytes of the
// SHA-1 of its text, big-endian.
func fieldChecksum(field string) int64 {
	sum := sha1.Sum([]byte(stripHTML(field))) //nolint:gosec // Anki's definition
	return int64(binary.BigEndian.Uint32(sum[:4]))
}

// ankiTags turns a card's comma-separated tags into Anki's: no spaces inside a tag
// (runs of white space become _), empty and repeated tags dropped, in order.
func ankiTags(tags string) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range strings.Split(tags, ",") {
		t = strings.Join(strings.FieldsFunc(norm.NFC.String(t), func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r)
		}), "_")
		if t == "" || seen[strings.ToLower(t)] {
			continue
		}
		seen[strings.ToLower(t)] = true
		out = append(out, t)
	}
	return out
}

// normalizeDeck checks and tidies a deck name: components separated by "::", each
// trimmed and not empty, no control characters.
func normalizeDeck(name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", errors.New("is empty")
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", errors.New("holds a control character")
	}
	parts := strings.Split(name, "::")
	for i, p := range parts {
		if parts[i] = strings.TrimSpace(p); parts[i] == "" {
			return "", errors.New("has an empty component between \"::\"")
		}
	}
	return norm.NFC.String(strings.Join(parts, "::")), nil
}

// subdeckName is a tab's sub-deck component: its name without "::".
func subdeckName(tab string) string {
	tab = strings.TrimSpace(strings.ReplaceAll(tab, "::", ":"))
	tab = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, tab)
	if tab == "" {
		return "Other"
	}
	return tab
}

// stableID is a positive id below 2^51 derived from s (Anki ids are JavaScript-safe
// integers).
func stableID(s string) int64 {
	sum := sha256.Sum256([]byte(s))
	return 1<<50 | int64(binary.BigEndian.Uint64(sum[:8])&(1<<50-1))
}

// deckID is the stable id of a deck name (Anki matches decks by name, case
// insensitively; the id only has to be stable and unique).
func deckID(name string) int64 { return stableID("flashpipe deck\x00" + strings.ToLower(name)) }

// guids gives each note its GUID: a hash of the deck's identity (its name, case
// folded), the item's term as submitted and the card's tab name, so a later export of
// the same deck gives the same card the same GUID, whatever its text. The n-th note
// with the same deck, term and tab in one export (a term listed twice, two cards of
// one tab) gets n in its hash too. It remembers 12 bytes per distinct note key.
type guids struct {
	deck string
	seen map[[8]byte]uint32
}

func newGUIDs(deck string) *guids {
	return &guids{deck: strings.ToLower(deck), seen: map[[8]byte]uint32{}}
}

func (g *guids) next(term, tab string) string {
	key := "flashpipe note\x00" + g.deck + "\x00" + norm.NFC.String(strings.TrimSpace(term)) + "\x00" + strings.ToLower(strings.TrimSpace(tab))
	sum := sha256.Sum256([]byte(key))
	k := [8]byte(sum[:8])
	g.seen[k]++
	if n := g.seen[k]; n > 1 {
		sum = sha256.Sum256([]byte(key + "\x00" + strconv.FormatUint(uint64(n), 10)))
	}
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// note is one Anki note (one flashcard) ready to be written.
type note struct {
	guid   string
	fields []string // HTML, in the order of fields
	tags   []string
	tab    string
	mod    int64 // modification time, Unix seconds
}

// noteMod is the modification time of the notes of a result: when its item was
// processed (or NoteTypeRevision if later), in Unix seconds as Anki keeps it, plus the
// result's generation, so a retry or reprocess counts as newer even when it ran within
// the same second as the result it replaces.
func noteMod(r *flashpipe.Result) int64 {
	return max(r.ProcessedAt.Unix(), NoteTypeRevision) + int64(r.Generation)
}

// notesOf returns the notes of an ok result, one per card.
func notesOf(r *flashpipe.Result, g *guids) []note {
	mod := noteMod(r)
	notes := make([]note, 0, len(r.Cards))
	for i := range r.Cards {
		src := &noteSource{r: r, c: &r.Cards[i]}
		n := note{guid: g.next(r.Term, src.c.TabName), tags: ankiTags(src.c.Tags), tab: src.c.TabName, mod: mod}
		n.fields = make([]string, len(fields))
		for j, f := range fields {
			n.fields[j] = f.value(src)
		}
		notes = append(notes, n)
	}
	return notes
}
