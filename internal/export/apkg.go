package export

import (
	"archive/zip"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/flashpipe/flashpipe"
)

// The package writer builds an Anki package in the format every Anki since 2.1
// (desktop, AnkiMobile, AnkiDroid) imports: a zip holding collection.anki2, an Anki
// collection of schema 11 (SQLite), and "media", the JSON list of media files (none).
// One note per card, of one note type (NoteTypeName); one card per note, in the deck
// Options.Deck (or its tab's sub-deck). The collection is built in a temporary SQLite
// file (in Options.TempDir), then zipped to the output by Close: memory stays bounded
// by one item plus the GUID keys (12 bytes per note), disk by the package's size.
//
// How Anki's importer treats a package, and so why the writer does what it does:
// notes are matched to the collection's by GUID (see guids); a matched note is
// updated when the package's note is newer (its mod, see noteMod) and its note type
// is the same (same id, same
// field and template names); its cards, and so their review history, stay. Decks are
// matched by name.

//go:embed anki/front.html
var frontTemplate string

//go:embed anki/back.html
var backTemplate string

//go:embed anki/style.css
var noteCSS string

// The schema 11 collection: Anki's tables, and the indexes it expects.
const collectionSchema = `
CREATE TABLE col (
  id integer PRIMARY KEY, crt integer NOT NULL, mod integer NOT NULL, scm integer NOT NULL,
  ver integer NOT NULL, dty integer NOT NULL, usn integer NOT NULL, ls integer NOT NULL,
  conf text NOT NULL, models text NOT NULL, decks text NOT NULL, dconf text NOT NULL, tags text NOT NULL
);
CREATE TABLE notes (
  id integer PRIMARY KEY, guid text NOT NULL, mid integer NOT NULL, mod integer NOT NULL,
  usn integer NOT NULL, tags text NOT NULL, flds text NOT NULL, sfld integer NOT NULL,
  csum integer NOT NULL, flags integer NOT NULL, data text NOT NULL
);
CREATE TABLE cards (
  id integer PRIMARY KEY, nid integer NOT NULL, did integer NOT NULL, ord integer NOT NULL,
  mod integer NOT NULL, usn integer NOT NULL, type integer NOT NULL, queue integer NOT NULL,
  due integer NOT NULL, ivl integer NOT NULL, factor integer NOT NULL, reps integer NOT NULL,
  lapses integer NOT NULL, left integer NOT NULL, odue integer NOT NULL, odid integer NOT NULL,
  flags integer NOT NULL, data text NOT NULL
);
CREATE TABLE revlog (
  id integer PRIMARY KEY, cid integer NOT NULL, usn integer NOT NULL, ease integer NOT NULL,
  ivl integer NOT NULL, lastIvl integer NOT NULL, factor integer NOT NULL, time integer NOT NULL,
  type integer NOT NULL
);
CREATE TABLE graves (usn integer NOT NULL, oid integer NOT NULL, type integer NOT NULL);
CREATE INDEX ix_notes_usn ON notes (usn);
CREATE INDEX ix_cards_usn ON cards (usn);
CREATE INDEX ix_revlog_usn ON revlog (usn);
CREATE INDEX ix_cards_nid ON cards (nid);
CREATE INDEX ix_cards_sched ON cards (did, queue, due);
CREATE INDEX ix_revlog_cid ON revlog (cid);
CREATE INDEX ix_notes_csum ON notes (csum);
`

// Names of the files in the package.
const (
	collectionFile = "collection.anki2"
	mediaFile      = "media"
	// collectionVersion is the schema version of collectionSchema.
	collectionVersion = 11
)

type apkg struct {
	out   io.Writer
	opts  Options
	deck  string
	dir   string
	db    *sql.DB
	tx    *sql.Tx
	note  *sql.Stmt
	card  *sql.Stmt
	guids *guids
	decks map[string]int64 // deck name -> id, of the decks used (one per tab at most)
	now   time.Time
	base  int64 // note and card ids are base+1, base+2, ...
	cards int64
	order
	err error
}

func openAPKG(w io.Writer, o Options) (Writer, error) {
	deck, _ := normalizeDeck(o.Deck) // validated by Format.New
	a := &apkg{out: w, opts: o, deck: deck, guids: newGUIDs(deck), decks: map[string]int64{}, now: o.Now()}
	a.base = a.now.UnixMilli()
	if err := a.open(); err != nil {
		a.cleanup()
		return nil, fmt.Errorf("export apkg: %w", err)
	}
	return a, nil
}

func (a *apkg) open() (err error) {
	if a.dir, err = os.MkdirTemp(a.opts.TempDir, "flashpipe-apkg-*"); err != nil {
		return err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(a.dir, collectionFile)),
		RawQuery: "_pragma=journal_mode(MEMORY)&_pragma=synchronous(OFF)"}
	if a.db, err = sql.Open("sqlite", u.String()); err != nil {
		return err
	}
	a.db.SetMaxOpenConns(1)
	ctx := context.Background()
	if _, err = a.db.ExecContext(ctx, collectionSchema); err != nil {
		return err
	}
	if a.tx, err = a.db.BeginTx(ctx, nil); err != nil {
		return err
	}
	if a.note, err = a.tx.PrepareContext(ctx, `INSERT INTO notes (id, guid, mid, mod, usn, tags, flds, sfld, csum, flags, data)
		VALUES (?, ?, ?, ?, -1, ?, ?, ?, ?, 0, '')`); err != nil {
		return err
	}
	a.card, err = a.tx.PrepareContext(ctx, `INSERT INTO cards (id, nid, did, ord, mod, usn, type, queue, due, ivl, factor, reps, lapses, left, odue, odid, flags, data)
		VALUES (?, ?, ?, 0, ?, -1, 0, 0, ?, 0, 0, 0, 0, 0, 0, 0, 0, '')`)
	return err
}

// Write adds one note (and its card) per card of an ok result; a failed item has
// none.
func (a *apkg) Write(r flashpipe.Result) error {
	if a.err != nil {
		return a.err
	}
	if err := a.order.next(r); err != nil {
		return a.fail(err)
	}
	if r.Status != flashpipe.StatusOK {
		return nil
	}
	for _, n := range notesOf(&r, a.guids) {
		a.cards++
		id := a.base + a.cards
		tags := ""
		if len(n.tags) > 0 {
			tags = " " + strings.Join(n.tags, " ") + " "
		}
		if _, err := a.note.Exec(id, n.guid, NoteTypeID, n.mod, tags, strings.Join(n.fields, "\x1f"),
			stripHTML(n.fields[fieldTerm]), fieldChecksum(n.fields[fieldFront])); err != nil {
			return a.fail(err)
		}
		// A new card's due is its position in the new-card queue: the file's order.
		if _, err := a.card.Exec(id, id, a.deckOf(n.tab), n.mod, a.cards); err != nil {
			return a.fail(err)
		}
	}
	return nil
}

func (a *apkg) fail(err error) error {
	a.err = fmt.Errorf("export apkg: %w", err)
	return a.err
}

// deckOf returns the id of a card's deck, recording the deck.
func (a *apkg) deckOf(tab string) int64 {
	name := a.deck
	if a.opts.SubdecksPerTab {
		name += "::" + subdeckName(tab)
	}
	id, ok := a.decks[name]
	if !ok {
		id = deckID(name)
		a.decks[name] = id
	}
	return id
}

// Close writes the collection's metadata, then the package to the output.
func (a *apkg) Close() error {
	defer a.cleanup()
	if a.err != nil {
		return a.err
	}
	if err := a.finish(); err != nil {
		return a.fail(err)
	}
	return nil
}

func (a *apkg) finish() error {
	conf, models, decks, err := a.collectionJSON()
	if err != nil {
		return err
	}
	y, m, d := a.now.Date()
	crt := time.Date(y, m, d, 0, 0, 0, 0, a.now.Location()).Unix()
	if _, err := a.tx.Exec(`INSERT INTO col VALUES (1, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?, '{}', '{}')`,
		crt, a.now.UnixMilli(), a.now.UnixMilli(), collectionVersion, conf, models, decks); err != nil {
		return err
	}
	if err := a.tx.Commit(); err != nil {
		return err
	}
	a.tx = nil
	if err := a.db.Close(); err != nil {
		return err
	}
	a.db = nil
	return a.zip()
}

// zip writes the package: the collection, then the (empty) media list.
func (a *apkg) zip() error {
	f, err := os.Open(filepath.Join(a.dir, collectionFile))
	if err != nil {
		return err
	}
	defer f.Close()
	z := zip.NewWriter(a.out)
	w, err := z.CreateHeader(&zip.FileHeader{Name: collectionFile, Method: zip.Deflate, Modified: a.now})
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, f); err != nil {
		return err
	}
	if w, err = z.CreateHeader(&zip.FileHeader{Name: mediaFile, Method: zip.Deflate, Modified: a.now}); err != nil {
		return err
	}
	if _, err := io.WriteString(w, "{}"); err != nil {
		return err
	}
	return z.Close()
}

// discard releases the collection without building the package (see Discard).
func (a *apkg) discard() { a.cleanup() }

func (a *apkg) cleanup() {
	if a.tx != nil {
		_ = a.tx.Rollback()
	}
	if a.db != nil {
		_ = a.db.Close()
	}
	if a.dir != "" {
		_ = os.RemoveAll(a.dir)
	}
}

// The JSON of a schema 11 collection's note types, decks and configuration.
type (
	ankiModel struct {
		ID        int64           `json:"id"`
		Name      string          `json:"name"`
		Type      int             `json:"type"`
		Mod       int64           `json:"mod"`
		USN       int             `json:"usn"`
		SortF     int             `json:"sortf"`
		DID       int64           `json:"did"`
		Tmpls     []ankiTemplate  `json:"tmpls"`
		Flds      []ankiField     `json:"flds"`
		CSS       string          `json:"css"`
		LatexPre  string          `json:"latexPre"`
		LatexPost string          `json:"latexPost"`
		LatexSVG  bool            `json:"latexsvg"`
		Req       [][]interface{} `json:"req"`
		Tags      []string        `json:"tags"`
		Vers      []int           `json:"vers"`
	}
	ankiTemplate struct {
		Name  string `json:"name"`
		Ord   int    `json:"ord"`
		QFmt  string `json:"qfmt"`
		AFmt  string `json:"afmt"`
		BQFmt string `json:"bqfmt"`
		BAFmt string `json:"bafmt"`
		DID   *int64 `json:"did"`
		BFont string `json:"bfont"`
		BSize int    `json:"bsize"`
	}
	ankiField struct {
		Name   string   `json:"name"`
		Ord    int      `json:"ord"`
		Sticky bool     `json:"sticky"`
		RTL    bool     `json:"rtl"`
		Font   string   `json:"font"`
		Size   int      `json:"size"`
		Media  []string `json:"media"`
	}
	ankiDeck struct {
		ID               int64  `json:"id"`
		Mod              int64  `json:"mod"`
		Name             string `json:"name"`
		USN              int    `json:"usn"`
		LrnToday         [2]int `json:"lrnToday"`
		RevToday         [2]int `json:"revToday"`
		NewToday         [2]int `json:"newToday"`
		TimeToday        [2]int `json:"timeToday"`
		Collapsed        bool   `json:"collapsed"`
		BrowserCollapsed bool   `json:"browserCollapsed"`
		Desc             string `json:"desc"`
		Dyn              int    `json:"dyn"`
		Conf             int64  `json:"conf"`
		ExtendNew        int    `json:"extendNew"`
		ExtendRev        int    `json:"extendRev"`
	}
)

const (
	latexPre  = "\\documentclass[12pt]{article}\n\\special{papersize=3in,5in}\n\\usepackage[utf8]{inputenc}\n\\usepackage{amssymb,amsmath}\n\\pagestyle{empty}\n\\setlength{\\parindent}{0in}\n\\begin{document}\n"
	latexPost = "\\end{document}"
	// defaultDeckID is the deck every collection has ("Default").
	defaultDeckID = 1
)

// noteType is the note type, with did as the deck it adds to by default.
func noteType(did int64) ankiModel {
	m := ankiModel{
		ID: NoteTypeID, Name: NoteTypeName, Mod: NoteTypeRevision, USN: -1, SortF: fieldTerm, DID: did,
		Tmpls: []ankiTemplate{{Name: templateName, QFmt: frontTemplate, AFmt: backTemplate}},
		CSS:   noteCSS, LatexPre: latexPre, LatexPost: latexPost,
		// The card exists when its front has something to show: Front or Tab.
		Req:  [][]interface{}{{0, "any", []int{fieldFront, 4}}},
		Tags: []string{}, Vers: []int{},
	}
	for i, f := range fields {
		m.Flds = append(m.Flds, ankiField{Name: f.name, Ord: i, Font: "Arial", Size: 20, Media: []string{}})
	}
	return m
}

func newDeck(id int64, name string, mod int64) ankiDeck {
	return ankiDeck{ID: id, Mod: mod, Name: name, USN: -1, Conf: 1}
}

// collectionJSON returns the col row's conf, models and decks.
func (a *apkg) collectionJSON() (conf, models, decks []byte, err error) {
	mod := a.now.Unix()
	main := deckID(a.deck)
	all := map[string]ankiDeck{
		"1": newDeck(defaultDeckID, "Default", mod),
	}
	all[strconv.FormatInt(main, 10)] = newDeck(main, a.deck, mod)
	for name, id := range a.decks {
		all[strconv.FormatInt(id, 10)] = newDeck(id, name, mod)
	}
	if decks, err = json.Marshal(all); err != nil {
		return nil, nil, nil, err
	}
	if models, err = json.Marshal(map[string]ankiModel{strconv.FormatInt(NoteTypeID, 10): noteType(main)}); err != nil {
		return nil, nil, nil, err
	}
	conf, err = json.Marshal(map[string]any{
		"nextPos": a.cards + 1, "estTimes": true, "activeDecks": []int64{main}, "sortType": "noteFld",
		"timeLim": 0, "sortBackwards": false, "addToCur": true, "curDeck": main, "newSpread": 0,
		"dueCounts": true, "curModel": NoteTypeID, "collapseTime": 1200, "schedVer": 2,
	})
	return conf, models, decks, err
}
