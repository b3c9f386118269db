package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/testutil/ankitest"
)

var processed = time.Date(2027, 1, 10, 9, 0, 0, 0, time.UTC)

func str(s string) *string { return &s }

// results returns n results (every fourth failed) with awkward text: tabs, newlines,
// quotes, HTML, a leading '#', Korean, and a term listed twice.
func results(n int) []flashpipe.Result {
	var out []flashpipe.Result
	for i := 1; i <= n; i++ {
		term := fmt.Sprintf("단어%d", i)
		if i == 3 {
			term = "단어1" // the same word listed twice
		}
		r := flashpipe.Result{
			BatchID: "b", Seq: i, Item: flashpipe.Item{Position: int64(i * 10), Term: term, Type: "noun"},
			Status: flashpipe.StatusOK, Attempts: 1, ProcessedAt: processed,
			Usage: flashpipe.Usage{Stage1Calls: 1, Stage2Calls: 1, CacheMisses: 2, PromptTokens: 100, CompletionTokens: 50, Cost: 0.01},
		}
		if i%4 == 0 {
			r.Status = flashpipe.StatusFailed
			r.Attempts = 3
			r.Failure = &flashpipe.Failure{Stage: "stage2", Reason: "API said 400, \"bad\"", Class: flashpipe.Permanent, NextStep: flashpipe.NextFixInput}
			out = append(out, r)
			continue
		}
		r.Analysis = &flashpipe.Analysis{
			TermNumber: int64(i * 10), Term: term + "[tan.ʌ]", IPA: "tan.ʌ", POS: "noun", PrimaryMeaning: "word <" + term + "> & more",
			OtherMeanings: str("other\tmeaning"), Metaphor: "a \"scene\"", MetaphorNoun: "n", MetaphorAction: "a",
			SuggestedLocation: "kitchen", AnchorObject: "kettle", AnchorSensory: "hiss", Explanation: "because\nit fits",
			UsageContext: nil, Comparison: &flashpipe.Comparison{Vs: "말", Nuance: "narrower"},
			Homonyms:       []flashpipe.Homonym{{Hanja: "單語", Reading: "단어", Meaning: "word", Differentiator: "the usual one"}},
			KoreanKeywords: []string{"말", "언어"},
		}
		for _, tab := range []string{"Scene", "Usage-Comparison", "Hanja"} {
			r.Cards = append(r.Cards, flashpipe.Card{
				TabName: tab, Primer: "walk to room " + fmt.Sprint(i), Front: fmt.Sprintf("#%d front of %s\twith a tab", i, tab),
				Back: "line one\nline two <b>not bold</b> \"quoted\" & done", Tags: "term:" + term + ",pos:noun, card:" + strings.ToLower(tab) + ",metaphor:big red kettle",
				HonorificLevel: "neutral",
			})
		}
		out = append(out, r)
	}
	return out
}

func writeAll(t *testing.T, format string, o Options, rs []flashpipe.Result) []byte {
	t.Helper()
	f, err := Lookup(format)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := f.New(&buf, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// wantCards lists the cards of the ok results as the 9 columns of the TSV.
func wantCards(rs []flashpipe.Result) [][]string {
	var out [][]string
	for i := range rs {
		for j := range rs[i].Cards {
			cols := cardColumns(len(out)+1, &rs[i], &rs[i].Cards[j])
			out = append(out, cols[:])
		}
	}
	return out
}

func TestResolve(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"cards.apkg": "apkg", "cards.APKG": "apkg", "cards.tsv": "tsv", "cards.txt": "anki-tsv", "cards.csv": "csv",
		"cards.jsonl": "jsonl", "words.items.jsonl": "items-jsonl", "words.failed.csv": "failed", "-": "tsv", "cards": "tsv", "cards.out": "tsv",
	} {
		f, err := Resolve("", path)
		if err != nil || f.Name != want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", path, f.Name, err, want)
		}
	}
	if f, err := Resolve("csv", "cards.apkg"); err != nil || f.Name != "csv" {
		t.Errorf("a named format does not win over the extension: %s %v", f.Name, err)
	}
	if _, err := Resolve("xlsx", "a.tsv"); err == nil || !strings.Contains(err.Error(), "apkg") {
		t.Errorf("unknown format: %v, want the known ones listed", err)
	}
	for _, f := range Formats() {
		if f.Description == "" {
			t.Errorf("%s has no description", f.Name)
		}
	}
}

func TestBadOptionsAndOrder(t *testing.T) {
	t.Parallel()
	for _, deck := range []string{"a::::b", "tab\there", " :: x"} {
		_, err := openFormat(t, "apkg", Options{Deck: deck})
		if err == nil || !strings.Contains(err.Error(), "Options.Deck") {
			t.Errorf("deck %q: %v, want an error naming Options.Deck", deck, err)
		}
	}
	rs := results(2)
	for _, f := range Formats() {
		w, err := f.New(&bytes.Buffer{}, Options{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(rs[1]); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(rs[0]); err == nil || !strings.Contains(err.Error(), "ascend") {
			t.Errorf("%s: out-of-order result: %v", f.Name, err)
		}
		_ = w.Close()
	}
}

func openFormat(t *testing.T, name string, o Options) (Writer, error) {
	f, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return f.New(&bytes.Buffer{}, o)
}

// unTSV undoes the TSV's escapes.
var unTSV = strings.NewReplacer(`\t`, "\t", `\n`, "\n", `\r`, "\r")

func TestTSVRoundTrip(t *testing.T) {
	t.Parallel()
	rs := results(9)
	lines := strings.Split(strings.TrimSuffix(string(writeAll(t, "tsv", Options{}, rs)), "\n"), "\n")
	if lines[0] != strings.Join(Header, "\t") {
		t.Fatalf("header %q", lines[0])
	}
	var got [][]string
	for _, l := range lines[1:] {
		cols := strings.Split(l, "\t")
		for i := range cols {
			cols[i] = unTSV.Replace(cols[i])
		}
		got = append(got, cols)
	}
	if want := wantCards(rs); !reflect.DeepEqual(got, want) {
		t.Fatalf("TSV read back:\n%q\nwant\n%q", got, want)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	t.Parallel()
	rs := results(9)
	recs, err := csv.NewReader(bytes.NewReader(writeAll(t, "csv", Options{}, rs))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], Header) {
		t.Fatalf("header %q", recs[0])
	}
	if want := wantCards(rs); !reflect.DeepEqual(recs[1:], want) {
		t.Fatalf("CSV read back:\n%q\nwant\n%q", recs[1:], want)
	}
}

func TestCardsJSONLRoundTrip(t *testing.T) {
	t.Parallel()
	rs := results(9)
	var got [][]string
	sc := bufio.NewScanner(bytes.NewReader(writeAll(t, "jsonl", Options{}, rs)))
	for sc.Scan() {
		var c CardRecord
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%v: %s", err, sc.Text())
		}
		got = append(got, []string{fmt.Sprint(c.Position), c.Term, fmt.Sprint(c.TermNumber), c.TabName, c.Primer, c.Front, c.Back, c.Tags, c.HonorificLevel})
	}
	if want := wantCards(rs); !reflect.DeepEqual(got, want) {
		t.Fatalf("JSON Lines read back:\n%q\nwant\n%q", got, want)
	}
}

func TestItemsJSONLRoundTrip(t *testing.T) {
	t.Parallel()
	rs := results(9)
	var got []flashpipe.Result
	dec := json.NewDecoder(bytes.NewReader(writeAll(t, "items-jsonl", Options{}, rs)))
	for dec.More() {
		var r flashpipe.Result
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if !reflect.DeepEqual(got, rs) {
		t.Fatalf("items read back differ:\n%+v\nwant\n%+v", got, rs)
	}
}

func TestFailedReportRoundTrip(t *testing.T) {
	t.Parallel()
	rs := results(9)
	recs, err := csv.NewReader(bytes.NewReader(writeAll(t, "failed", Options{}, rs))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{FailedHeader}
	for _, r := range rs {
		if r.Status == flashpipe.StatusFailed {
			want = append(want, []string{fmt.Sprint(r.Position), r.Term, "stage2", `API said 400, "bad"`, "3", flashpipe.NextFixInput})
		}
	}
	if len(want) != 3 || !reflect.DeepEqual(recs, want) {
		t.Fatalf("report read back:\n%q\nwant\n%q", recs, want)
	}
}

// plain undoes fieldHTML: what the learner reads.
func plain(field string) string {
	return html.UnescapeString(strings.ReplaceAll(field, "<br>", "\n"))
}

// wantFields is what the learner should read in each field of each note.
func wantFields(rs []flashpipe.Result) [][]string {
	var out [][]string
	for _, r := range rs {
		for _, c := range r.Cards {
			a := r.Analysis
			out = append(out, []string{c.Front, c.Back, a.Term, fmt.Sprint(r.Position), c.TabName, c.Primer, c.HonorificLevel, a.IPA, a.POS,
				a.PrimaryMeaning, *a.OtherMeanings, a.Metaphor, a.SuggestedLocation, a.AnchorObject + " — " + a.AnchorSensory, a.Explanation, "",
				a.Comparison.Vs + ": " + a.Comparison.Nuance, "單語 (단어): word — the usual one", "말, 언어"})
		}
	}
	return out
}

func writeFile(t *testing.T, format string, o Options, rs []flashpipe.Result) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out."+format)
	if err := os.WriteFile(path, writeAll(t, format, o, rs), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The package opens as Anki's importer opens it, with one note and one card per
// flashcard, in one deck, with the fields, tags and sort order a learner expects.
func TestAPKGOpensAsAnkiCollection(t *testing.T) {
	t.Parallel()
	rs := results(9)
	now := time.Date(2027, 2, 1, 12, 0, 0, 0, time.UTC)
	p := ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "Korean :: Vocab", Now: func() time.Time { return now }, TempDir: t.TempDir()}, rs))
	want := wantFields(rs)
	if len(p.Notes) != len(want) || len(p.Cards) != len(want) {
		t.Fatalf("%d notes, %d cards; want %d of each", len(p.Notes), len(p.Cards), len(want))
	}
	nt, ok := p.NoteTypes[NoteTypeID]
	if !ok || len(p.NoteTypes) != 1 || nt.Name != NoteTypeName || nt.Mod != NoteTypeRevision || len(nt.Templates) != 1 {
		t.Fatalf("note types %+v", p.NoteTypes)
	}
	for _, name := range []string{"{{Front}}", "{{Back}}", "{{Term}}", "{{IPA}}", "{{Meaning}}", "{{Metaphor}}", "{{Explanation}}", "{{Comparison}}"} {
		if !strings.Contains(nt.Templates[0].Front+nt.Templates[0].Back, name) {
			t.Errorf("templates do not show %s", name)
		}
	}
	if !strings.Contains(nt.CSS, ".nightMode") || !strings.Contains(nt.CSS, "@media (max-width") {
		t.Error("styling has no night mode or small-screen rule")
	}
	deck, ok := p.Decks[deckID("Korean::Vocab")]
	if !ok || deck.Name != "Korean::Vocab" || len(p.Decks) != 2 {
		t.Fatalf("decks %+v, want Default and Korean::Vocab", p.Decks)
	}
	for i, n := range p.Notes {
		var got []string
		for _, f := range n.Fields {
			got = append(got, plain(f))
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("note %d fields:\n%q\nwant\n%q", i, got, want[i])
		}
		if strings.ContainsAny(strings.Join(n.Fields, ""), "\t\n") {
			t.Fatalf("note %d holds a raw tab or newline", i)
		}
		if n.Mod != processed.Unix() || n.NoteTypeID != NoteTypeID {
			t.Fatalf("note %d: mod %d (want when it was processed, %d), note type %d", i, n.Mod, processed.Unix(), n.NoteTypeID)
		}
		term := strings.TrimSuffix(want[i][2], "[tan.ʌ]")
		tags := []string{"term:" + term, "pos:noun", "card:" + strings.ToLower(want[i][4]), "metaphor:big_red_kettle"}
		if !reflect.DeepEqual(n.Tags, tags) {
			t.Fatalf("note %d tags %q, want %q", i, n.Tags, tags)
		}
		if n.ID < now.UnixMilli() {
			t.Fatalf("note id %d is not a creation time from the clock", n.ID)
		}
	}
	for i, c := range p.Cards {
		if c.DeckID != deck.ID || c.Queue != 0 || c.Type != 0 || c.Due != int64(i+1) {
			t.Fatalf("card %d: %+v, want new, in %d, due %d", i, c, deck.ID, i+1)
		}
	}
	if p.Conf["curModel"] != float64(NoteTypeID) || len(p.Media) != 0 {
		t.Fatalf("conf %v, media %v", p.Conf, p.Media)
	}
}

// The text format's headers tell Anki everything; its fields, tags and GUIDs are
// those of the package.
func TestAnkiTSVRoundTripAndSameNotesAsAPKG(t *testing.T) {
	t.Parallel()
	rs := results(9)
	o := Options{Deck: "Vocab", TempDir: t.TempDir()}
	lines := strings.Split(strings.TrimSuffix(string(writeAll(t, "anki-tsv", o, rs)), "\n"), "\n")
	var cols []string
	for _, name := range fieldNames() {
		cols = append(cols, name)
	}
	head := []string{"#separator:tab", "#html:true", "#notetype:flashpipe card", "#deck:Vocab", "#tags column:20", "#guid column:21",
		"#columns:" + strings.Join(append(cols, "Tags", "GUID"), "\t")}
	if !reflect.DeepEqual(lines[:len(head)], head) {
		t.Fatalf("headers:\n%q\nwant\n%q", lines[:len(head)], head)
	}
	p := ankitest.Open(t, writeFile(t, "apkg", o, rs))
	body := lines[len(head):]
	want := wantFields(rs)
	if len(body) != len(want) {
		t.Fatalf("%d lines, want %d", len(body), len(want))
	}
	for i, l := range body {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "\"") {
			t.Fatalf("line %d would be read as a comment or a quoted field: %q", i, l)
		}
		cells := strings.Split(l, "\t")
		if len(cells) != len(fields)+2 {
			t.Fatalf("line %d has %d cells", i, len(cells))
		}
		var got []string
		for _, c := range cells[:len(fields)] {
			got = append(got, plain(c))
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("line %d fields:\n%q\nwant\n%q", i, got, want[i])
		}
		if n := p.Notes[i]; cells[len(fields)] != strings.Join(n.Tags, " ") || cells[len(fields)+1] != n.GUID {
			t.Fatalf("line %d tags %q guid %q, package has %q %q", i, cells[len(fields)], cells[len(fields)+1], n.Tags, n.GUID)
		}
	}

	// With sub-decks, a deck column names each card's sub-deck.
	lines = strings.Split(strings.TrimSuffix(string(writeAll(t, "anki-tsv", Options{Deck: "Vocab", SubdecksPerTab: true}, rs)), "\n"), "\n")
	if lines[3] != "#deck column:22" {
		t.Fatalf("sub-deck header %q", lines[3])
	}
	if cells := strings.Split(lines[len(head)], "\t"); cells[21] != "Vocab::Scene" {
		t.Fatalf("first card's deck %q", cells[21])
	}
}

func fieldNames() []string {
	var out []string
	for _, f := range fields {
		out = append(out, f.name)
	}
	return out
}

// The GUID names the card (deck, term, tab), never its text: a regenerated package
// updates the notes a learner already reviews, keeps their cards, and adds nothing.
func TestAPKGReimportUpdatesInPlace(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	v1 := results(12)
	col := ankitest.NewCollection()
	log := col.Import(ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "Vocab", TempDir: tmp}, v1)))
	if log.Added != 27 || log.Updated != 0 {
		t.Fatalf("first import %+v, want 27 added", log)
	}
	for _, c := range col.Cards {
		c.Reps = 7 // the learner reviews
	}

	// A retry fixes the failed items; a reprocess changes the text of item 2 (and its
	// term's pronunciation); the other items are as they were.
	v2 := results(12)
	later := processed.Add(time.Hour)
	for i := range v2 {
		if v2[i].Status == flashpipe.StatusFailed {
			v2[i] = results(12)[0]
			v2[i].Seq, v2[i].Position, v2[i].Term, v2[i].ProcessedAt, v2[i].Generation = i+1, int64((i+1)*10), fmt.Sprintf("단어%d", i+1), later, 1
		}
	}
	v2[1].Cards[0].Front, v2[1].Cards[0].Back, v2[1].Analysis.Term = "a new front", "a new back", "단어2[new]"
	v2[1].ProcessedAt, v2[1].Generation = later, 1
	v2[4].Generation = 1                                                                   // reprocessed within the same second: still newer
	p2 := ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "vocab", TempDir: tmp}, v2)) // deck names match case-insensitively
	log = col.Import(p2)
	if log.Added != 9 || log.Updated != 6 || log.Conflicting != 0 || log.Duplicate != 21 {
		t.Fatalf("second import %+v, want 9 added (the retried items), 6 updated (items 2 and 5), 21 unchanged", log)
	}
	n := col.Notes[p2.Notes[3].GUID]
	if plain(n.Fields[0]) != "a new front" || plain(n.Fields[2]) != "단어2[new]" {
		t.Fatalf("item 2's first note reads %q", n.Fields[:3])
	}
	reviewed := 0
	for _, c := range col.Cards {
		if c.Reps == 7 {
			reviewed++
		}
	}
	if len(col.Cards) != 36 || reviewed != 27 || len(col.Notes) != 36 || len(col.Decks) != 2 {
		t.Fatalf("%d cards (%d with their reviews), %d notes, %d decks; want 36 (27), 36, 2", len(col.Cards), reviewed, len(col.Notes), len(col.Decks))
	}

	// Importing the same package again changes nothing; so does a package of the same
	// batch with sub-decks (cards stay where they are).
	if log = col.Import(p2); log.Added != 0 || log.Updated != 0 {
		t.Fatalf("third import %+v, want nothing", log)
	}
	if log = col.Import(ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "Vocab", SubdecksPerTab: true, TempDir: tmp}, v2))); log.Added != 0 || log.Updated != 0 {
		t.Fatalf("sub-deck package import %+v, want nothing", log)
	}
	// Another deck is other notes.
	if log = col.Import(ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "Other", TempDir: tmp}, v2))); log.Added != 36 {
		t.Fatalf("another deck: %+v, want 36 added", log)
	}
}

// Sub-decks per tab: each card in Deck::Tab, parents listed, GUIDs unchanged.
func TestAPKGSubdecks(t *testing.T) {
	t.Parallel()
	rs := results(3)
	flat := ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "V", TempDir: t.TempDir()}, rs))
	p := ankitest.Open(t, writeFile(t, "apkg", Options{Deck: "V", SubdecksPerTab: true, TempDir: t.TempDir()}, rs))
	var names []string
	for _, d := range p.Decks {
		names = append(names, d.Name)
	}
	for _, want := range []string{"Default", "V", "V::Scene", "V::Usage-Comparison", "V::Hanja"} {
		if !strings.Contains(strings.Join(names, "|")+"|", want+"|") {
			t.Fatalf("decks %q lack %q", names, want)
		}
	}
	for i, c := range p.Cards {
		if p.Decks[c.DeckID].Name != "V::"+plain(p.Notes[i].Fields[4]) {
			t.Fatalf("card %d in %q", i, p.Decks[c.DeckID].Name)
		}
		if p.Notes[i].GUID != flat.Notes[i].GUID {
			t.Fatalf("note %d: sub-decks changed the GUID", i)
		}
	}
}

// An empty batch (every item failed) is still a valid package, with no notes.
func TestAPKGEmpty(t *testing.T) {
	t.Parallel()
	rs := results(4)[3:]
	rs[0].Seq = 1
	p := ankitest.Open(t, writeFile(t, "apkg", Options{TempDir: t.TempDir()}, rs))
	if len(p.Notes) != 0 || len(p.Decks) != 2 {
		t.Fatalf("%d notes, decks %+v", len(p.Notes), p.Decks)
	}
}

// A failed Write leaves no temporary collection behind.
func TestAPKGCleansUp(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	w, err := openFormat(t, "apkg", Options{TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	rs := results(2)
	_ = w.Write(rs[1])
	if err := w.Write(rs[0]); err == nil {
		t.Fatal("out of order accepted")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed Write reports no error")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}

	// Discarded (the caller's feed failed): nothing written, nothing left behind.
	var out bytes.Buffer
	f, _ := Lookup("apkg")
	if w, err = f.New(&out, Options{TempDir: tmp}); err != nil {
		t.Fatal(err)
	}
	_ = w.Write(rs[0])
	Discard(&Tally{Writer: w})
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 || out.Len() != 0 {
		t.Fatalf("discarded: left behind %v, wrote %d bytes", entries, out.Len())
	}
}

func TestDeckFor(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]string{"vocabulary_1000.csv": "vocabulary_1000", "words.jsonl": "words", "http": "b-1", "": "b-1", ".csv": "b-1"} {
		if got := DeckFor(flashpipe.Manifest{BatchID: "b-1", Source: src}); got != want {
			t.Errorf("DeckFor(source %q) = %q, want %q", src, got, want)
		}
	}
}

// BenchmarkFormats writes 1,000 items (750 ok with 3 cards each, 250 failed) in each
// format: go test -run '^$' -bench Formats ./internal/export/
func BenchmarkFormats(b *testing.B) {
	rs := results(1000)
	for _, f := range Formats() {
		b.Run(f.Name, func(b *testing.B) {
			tmp := b.TempDir()
			var size int64
			for b.Loop() {
				var n countingWriter
				w, err := f.New(&n, Options{TempDir: tmp})
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range rs {
					if err := w.Write(r); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				size = int64(n)
			}
			b.ReportMetric(float64(size), "bytes/export")
		})
	}
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
