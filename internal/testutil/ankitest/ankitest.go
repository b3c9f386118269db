// Package ankitest reads an Anki package (.apkg) the way Anki's importer does, and
// imports it into an in-memory collection by the importer's rules, so tests can check
// what a learner gets without Anki installed. It follows Anki's importer (rslib
// import_export/package/apkg/import): the zip holds collection.anki2 (schema 11) and
// a media list; note types are matched by id and accepted as the same while their
// field and template names are; notes are matched by GUID and updated only when the
// incoming note is newer and of the same note type; decks are matched by name; a
// card is added only for a note without a card of its ordinal, so existing cards and
// their review history stay.
package ankitest

import (
	"archive/zip"
	"crypto/sha1" //nolint:gosec // Anki's field checksum is defined as SHA-1
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Package is the content of an Anki package.
type Package struct {
	Version   int
	Conf      map[string]any
	NoteTypes map[int64]NoteType
	Decks     map[int64]Deck
	Notes     []Note
	Cards     []Card
	Media     map[string]string
}

// NoteType is a note type of a package or collection.
type NoteType struct {
	ID        int64
	Name      string
	Mod       int64
	SortField int
	Fields    []string
	Templates []Template
	CSS       string
}

// Template is a card template.
type Template struct{ Name, Front, Back string }

// Deck is a deck.
type Deck struct {
	ID   int64
	Name string
	Conf int64
}

// Note is a note.
type Note struct {
	ID         int64
	GUID       string
	NoteTypeID int64
	Mod        int64
	Tags       []string
	Fields     []string
	SortField  string
	Checksum   int64
}

// Card is a card.
type Card struct {
	ID, NoteID, DeckID int64
	Ord                int
	Type, Queue        int
	Due                int64
	// Reps stands for the review history the learner has with the card.
	Reps int
}

// Open reads the package at path as Anki's importer does, failing the test on
// anything that importer would refuse or that breaks the collection's invariants
// (field counts, checksums, sort fields, references between notes, cards, note types
// and decks).
func Open(t testing.TB, path string) *Package {
	t.Helper()
	p, err := read(t, path)
	if err != nil {
		t.Fatalf("ankitest: %s: %v", path, err)
	}
	return p
}

func read(t testing.TB, path string) (*Package, error) {
	z, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("not a zip: %w", err)
	}
	defer z.Close()
	var names []string
	for _, f := range z.File {
		names = append(names, f.Name)
	}
	// A package without a "meta" entry and without collection.anki21 is a legacy
	// package whose collection is collection.anki2.
	if slices.Contains(names, "meta") || slices.Contains(names, "collection.anki21") {
		return nil, fmt.Errorf("entries %v: want a legacy package (collection.anki2, no meta)", names)
	}
	p := &Package{}
	media, err := readEntry(z, "media")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(media, &p.Media); err != nil {
		return nil, fmt.Errorf("media list: %w", err)
	}
	col, err := readEntry(z, "collection.anki2")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(t.TempDir(), "collection.anki2")
	if err := os.WriteFile(file, col, 0o600); err != nil {
		return nil, err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(file), RawQuery: "mode=ro"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := p.load(db); err != nil {
		return nil, err
	}
	return p, p.check()
}

func readEntry(z *zip.ReadCloser, name string) ([]byte, error) {
	f, err := z.Open(name)
	if err != nil {
		return nil, fmt.Errorf("entry %s: %w", name, err)
	}
	defer f.Close()
	return io.ReadAll(f)
}

// schema11 is the columns of each table of a schema 11 collection.
var schema11 = map[string][]string{
	"col":    {"id", "crt", "mod", "scm", "ver", "dty", "usn", "ls", "conf", "models", "decks", "dconf", "tags"},
	"notes":  {"id", "guid", "mid", "mod", "usn", "tags", "flds", "sfld", "csum", "flags", "data"},
	"cards":  {"id", "nid", "did", "ord", "mod", "usn", "type", "queue", "due", "ivl", "factor", "reps", "lapses", "left", "odue", "odid", "flags", "data"},
	"revlog": {"id", "cid", "usn", "ease", "ivl", "lastIvl", "factor", "time", "type"},
	"graves": {"usn", "oid", "type"},
}

func (p *Package) load(db *sql.DB) error {
	if ok, err := integrity(db); err != nil || !ok {
		return fmt.Errorf("integrity check failed: %v", err)
	}
	for table, want := range schema11 {
		rows, err := db.Query("SELECT name FROM pragma_table_info(?)", table)
		if err != nil {
			return err
		}
		var got []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return err
			}
			got = append(got, n)
		}
		rows.Close()
		if !slices.Equal(got, want) {
			return fmt.Errorf("table %s has columns %v, want %v", table, got, want)
		}
	}
	var conf, models, decks, dconf, tags string
	var n int
	if err := db.QueryRow("SELECT count(*) FROM col").Scan(&n); err != nil || n != 1 {
		return fmt.Errorf("col has %d rows (%v), want 1", n, err)
	}
	var crt int64
	if err := db.QueryRow("SELECT ver, crt, conf, models, decks, dconf, tags FROM col").Scan(&p.Version, &crt, &conf, &models, &decks, &dconf, &tags); err != nil {
		return err
	}
	if p.Version != 11 {
		return fmt.Errorf("collection version %d, want 11", p.Version)
	}
	if crt <= 0 {
		return fmt.Errorf("collection creation time %d", crt)
	}
	for name, s := range map[string]string{"conf": conf, "dconf": dconf, "tags": tags} {
		var v map[string]any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return fmt.Errorf("col.%s: %w", name, err)
		}
		if name == "conf" {
			p.Conf = v
		}
	}
	var err error
	if p.NoteTypes, err = parseNoteTypes(models); err != nil {
		return fmt.Errorf("col.models: %w", err)
	}
	if p.Decks, err = parseDecks(decks); err != nil {
		return fmt.Errorf("col.decks: %w", err)
	}
	rows, err := db.Query("SELECT id, guid, mid, mod, tags, flds, CAST(sfld AS TEXT), csum FROM notes ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var nt Note
		var tags, flds string
		if err := rows.Scan(&nt.ID, &nt.GUID, &nt.NoteTypeID, &nt.Mod, &tags, &flds, &nt.SortField, &nt.Checksum); err != nil {
			return err
		}
		nt.Tags, nt.Fields = strings.Fields(tags), strings.Split(flds, "\x1f")
		p.Notes = append(p.Notes, nt)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	crows, err := db.Query("SELECT id, nid, did, ord, type, queue, due, reps FROM cards ORDER BY id")
	if err != nil {
		return err
	}
	defer crows.Close()
	for crows.Next() {
		var c Card
		if err := crows.Scan(&c.ID, &c.NoteID, &c.DeckID, &c.Ord, &c.Type, &c.Queue, &c.Due, &c.Reps); err != nil {
			return err
		}
		p.Cards = append(p.Cards, c)
	}
	return crows.Err()
}

func integrity(db *sql.DB) (bool, error) {
	var s string
	err := db.QueryRow("PRAGMA integrity_check").Scan(&s)
	return s == "ok", err
}

// required checks that obj has every key (as Anki's schema 11 parser requires them).
func required(obj map[string]json.RawMessage, keys ...string) error {
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("missing key %q", k)
		}
	}
	return nil
}

func parseNoteTypes(s string) (map[int64]NoteType, error) {
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, err
	}
	out := map[int64]NoteType{}
	for key, obj := range raw {
		if err := required(obj, "id", "name", "type", "mod", "usn", "sortf", "did", "tmpls", "flds", "css"); err != nil {
			return nil, fmt.Errorf("note type %s: %w", key, err)
		}
		var m struct {
			ID    int64  `json:"id"`
			Name  string `json:"name"`
			Type  int    `json:"type"`
			Mod   int64  `json:"mod"`
			SortF int    `json:"sortf"`
			CSS   string `json:"css"`
			Flds  []map[string]json.RawMessage
			Tmpls []map[string]json.RawMessage
		}
		all, _ := json.Marshal(obj)
		if err := json.Unmarshal(all, &m); err != nil {
			return nil, fmt.Errorf("note type %s: %w", key, err)
		}
		if fmt.Sprint(m.ID) != key || m.Type != 0 {
			return nil, fmt.Errorf("note type %s: id %d, type %d", key, m.ID, m.Type)
		}
		nt := NoteType{ID: m.ID, Name: m.Name, Mod: m.Mod, SortField: m.SortF, CSS: m.CSS}
		for i, f := range m.Flds {
			if err := required(f, "name", "ord", "sticky", "rtl", "font", "size"); err != nil {
				return nil, fmt.Errorf("note type %s field %d: %w", key, i, err)
			}
			var name string
			var ord int
			_ = json.Unmarshal(f["name"], &name)
			_ = json.Unmarshal(f["ord"], &ord)
			if ord != i || name == "" {
				return nil, fmt.Errorf("note type %s field %d: %q has ord %d", key, i, name, ord)
			}
			nt.Fields = append(nt.Fields, name)
		}
		for i, tm := range m.Tmpls {
			if err := required(tm, "name", "ord", "qfmt"); err != nil {
				return nil, fmt.Errorf("note type %s template %d: %w", key, i, err)
			}
			var tpl Template
			_ = json.Unmarshal(tm["name"], &tpl.Name)
			_ = json.Unmarshal(tm["qfmt"], &tpl.Front)
			_ = json.Unmarshal(tm["afmt"], &tpl.Back)
			nt.Templates = append(nt.Templates, tpl)
		}
		if len(nt.Fields) == 0 || len(nt.Templates) == 0 || m.SortF >= len(nt.Fields) {
			return nil, fmt.Errorf("note type %s: %d fields, %d templates, sort field %d", key, len(nt.Fields), len(nt.Templates), m.SortF)
		}
		out[nt.ID] = nt
	}
	return out, nil
}

func parseDecks(s string) (map[int64]Deck, error) {
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, err
	}
	out := map[int64]Deck{}
	for key, obj := range raw {
		if err := required(obj, "id", "name", "usn", "lrnToday", "revToday", "newToday", "timeToday", "collapsed", "dyn", "conf"); err != nil {
			return nil, fmt.Errorf("deck %s: %w", key, err)
		}
		var d Deck
		var dyn int
		_ = json.Unmarshal(obj["id"], &d.ID)
		_ = json.Unmarshal(obj["name"], &d.Name)
		_ = json.Unmarshal(obj["conf"], &d.Conf)
		_ = json.Unmarshal(obj["dyn"], &dyn)
		if fmt.Sprint(d.ID) != key || d.Name == "" || dyn != 0 {
			return nil, fmt.Errorf("deck %s: id %d, name %q, dyn %d", key, d.ID, d.Name, dyn)
		}
		out[d.ID] = d
	}
	if _, ok := out[1]; !ok {
		return nil, fmt.Errorf("no Default deck (id 1)")
	}
	return out, nil
}

// check verifies the invariants Anki keeps between the tables.
func (p *Package) check() error {
	notes := map[int64]Note{}
	guids := map[string]bool{}
	for _, n := range p.Notes {
		nt, ok := p.NoteTypes[n.NoteTypeID]
		if !ok {
			return fmt.Errorf("note %d: note type %d not in col.models", n.ID, n.NoteTypeID)
		}
		if len(n.Fields) != len(nt.Fields) {
			return fmt.Errorf("note %d has %d fields, its note type %d", n.ID, len(n.Fields), len(nt.Fields))
		}
		if n.GUID == "" || guids[n.GUID] {
			return fmt.Errorf("note %d: GUID %q empty or repeated", n.ID, n.GUID)
		}
		guids[n.GUID] = true
		if want := Checksum(n.Fields[0]); n.Checksum != want {
			return fmt.Errorf("note %d: csum %d, Anki computes %d", n.ID, n.Checksum, want)
		}
		if want := StripHTML(n.Fields[nt.SortField]); n.SortField != want {
			return fmt.Errorf("note %d: sfld %q, Anki computes %q", n.ID, n.SortField, want)
		}
		notes[n.ID] = n
	}
	seen := map[[2]int64]bool{}
	for _, c := range p.Cards {
		n, ok := notes[c.NoteID]
		if !ok {
			return fmt.Errorf("card %d: note %d missing", c.ID, c.NoteID)
		}
		if _, ok := p.Decks[c.DeckID]; !ok {
			return fmt.Errorf("card %d: deck %d not in col.decks", c.ID, c.DeckID)
		}
		if c.Ord >= len(p.NoteTypes[n.NoteTypeID].Templates) || seen[[2]int64{c.NoteID, int64(c.Ord)}] {
			return fmt.Errorf("card %d: ordinal %d invalid or repeated", c.ID, c.Ord)
		}
		seen[[2]int64{c.NoteID, int64(c.Ord)}] = true
	}
	return nil
}

var htmlTag = regexp.MustCompile(`(?si)(<!--.*?-->)|(<style.*?>.*?</style>)|(<script.*?>.*?</script>)|(<.*?>)`)

// StripHTML is Anki's text of a field (rslib text.rs strip_html).
func StripHTML(s string) string {
	s = htmlTag.ReplaceAllString(s, "")
	if strings.Contains(s, "&") {
		s = strings.ReplaceAll(html.UnescapeString(s), "\u00a0", " ")
	}
	return s
}

// Checksum is Anki's checksum of a first field (rslib notes field_checksum).
func Checksum(field string) int64 {
	sum := sha1.Sum([]byte(StripHTML(field))) //nolint:gosec // Anki's definition
	return int64(binary.BigEndian.Uint32(sum[:4]))
}

// Collection is a learner's collection, in memory.
type Collection struct {
	NoteTypes map[int64]NoteType
	Decks     map[string]Deck // by lower-case name
	Notes     map[string]*Note
	Cards     map[[2]int64]*Card // by note id and ordinal
	nextID    int64
}

// NewCollection returns an empty collection.
func NewCollection() *Collection {
	return &Collection{NoteTypes: map[int64]NoteType{}, Decks: map[string]Deck{}, Notes: map[string]*Note{}, Cards: map[[2]int64]*Card{}, nextID: 1}
}

// Log counts what an import did with the package's notes.
type Log struct {
	Added, Updated, Duplicate, Conflicting int
	// UpdatedGUIDs lists the GUIDs of the updated notes.
	UpdatedGUIDs []string
}

func sameSchema(a, b NoteType) bool {
	if !slices.Equal(a.Fields, b.Fields) || len(a.Templates) != len(b.Templates) {
		return false
	}
	for i := range a.Templates {
		if a.Templates[i].Name != b.Templates[i].Name {
			return false
		}
	}
	return true
}

// Import imports p by the rules of Anki's importer with its default options (update
// notes and note types if newer, no scheduling).
func (c *Collection) Import(p *Package) Log {
	var log Log
	remapped := map[int64]int64{}
	for id, nt := range p.NoteTypes {
		existing, ok := c.NoteTypes[id]
		switch {
		case !ok:
			c.NoteTypes[id] = nt
		case !sameSchema(existing, nt):
			c.nextID++
			nt.ID = c.nextID
			c.NoteTypes[nt.ID] = nt
			remapped[id] = nt.ID
		case existing.Mod < nt.Mod:
			c.NoteTypes[id] = nt
		}
	}
	imported := map[int64]int64{} // package note id -> collection note id
	for _, n := range p.Notes {
		n := n
		if to, ok := remapped[n.NoteTypeID]; ok {
			n.NoteTypeID = to
		}
		existing, ok := c.Notes[n.GUID]
		switch {
		case !ok:
			c.nextID++
			imported[n.ID] = c.nextID
			n.ID = c.nextID
			c.Notes[n.GUID] = &n
			log.Added++
		case existing.NoteTypeID != n.NoteTypeID:
			log.Conflicting++
		case existing.Mod < n.Mod:
			imported[n.ID] = existing.ID
			n.ID = existing.ID
			*existing = n
			log.Updated++
			log.UpdatedGUIDs = append(log.UpdatedGUIDs, n.GUID)
		default:
			log.Duplicate++
		}
	}
	deckIDs := map[int64]int64{}
	for _, d := range p.Decks {
		key := strings.ToLower(d.Name)
		if have, ok := c.Decks[key]; ok {
			deckIDs[d.ID] = have.ID
			continue
		}
		c.nextID++
		deckIDs[d.ID] = c.nextID
		d.ID = c.nextID
		c.Decks[key] = d
	}
	for _, card := range p.Cards {
		nid, ok := imported[card.NoteID]
		if !ok {
			continue
		}
		if _, exists := c.Cards[[2]int64{nid, int64(card.Ord)}]; exists {
			continue
		}
		card := card
		c.nextID++
		card.ID, card.NoteID, card.DeckID, card.Reps = c.nextID, nid, deckIDs[card.DeckID], 0
		c.Cards[[2]int64{nid, int64(card.Ord)}] = &card
	}
	return log
}

// DeckName returns the name of the deck with id.
func (c *Collection) DeckName(id int64) string {
	for _, d := range c.Decks {
		if d.ID == id {
			return d.Name
		}
	}
	return ""
}
