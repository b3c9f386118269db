package ingest

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
)

// Format is the syntax of a batch file.
type Format string

// The input formats. FormatAuto picks one by the file extension of
// ParseOptions.Source (or of the path given to ParseFile): .csv is CSV; .jsonl,
// .ndjson and .json are JSON Lines. Any other name is sniffed: input whose first
// non-blank byte (within the first 4 KiB) is '{' is JSON Lines, anything else CSV.
const (
	FormatAuto  Format = ""
	FormatCSV   Format = "csv"
	FormatJSONL Format = "jsonl"
)

// The layouts Parsed.Layout reports.
const (
	LayoutSimple = "simple" // CSV with a term column: position,term,type
	LayoutRich   = "rich"   // CSV with a Hangul column: Position,Hangul,Word_Type,...
	LayoutJSONL  = "jsonl"  // JSON Lines
)

// MaxLineBytes is the longest line accepted, in bytes without its line terminator.
// A longer line is a bad row. In CSV the limit applies to every physical line of
// a row, including the lines of a quoted multi-line field.
const MaxLineBytes = 1 << 20

// ErrNoItems is the ParseError.Err of a batch without a single valid item.
var ErrNoItems = errors.New("no items")

// sniffBytes is how much input FormatAuto looks at to tell CSV from JSON Lines.
const sniffBytes = 4 << 10

// maxQuoted is the longest value quoted in full in a bad row's reason.
const maxQuoted = 40

// ParseOptions says how to read a batch.
type ParseOptions struct {
	// Format of the input; FormatAuto picks it by the extension of Source (or
	// ParseFile's path), else by sniffing the input. See FormatAuto.
	Format Format
	// SkipBadRows leaves bad rows out (reported in Parsed.Skipped) instead of
	// rejecting the whole batch.
	SkipBadRows bool
	// Source names the input in error messages, e.g. the file name. ParseFile
	// defaults it to the path's base name.
	Source string
}

// RowError is one bad row: the physical line of the file where the row starts
// (the header is line 1 unless blank lines precede it) and why it was refused.
type RowError struct {
	Line   int
	Reason string
}

// Error returns e.g. "line 7: term is empty".
func (e RowError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// ParseError is a rejected batch. Either Rows lists every bad row, in file order,
// or Err says what is wrong with the input as a whole (no header row, no term
// column, no items), or both when SkipBadRows left no valid item (Err is then
// ErrNoItems). Nothing of a rejected batch may be published.
type ParseError struct {
	Source string
	Rows   []RowError
	Err    error
}

// Error names the source and lists every bad row, one per line:
//
//	vocab.csv: 2 bad rows, nothing was published:
//	  line 3: term is empty
//	  line 9: position 3 is already used on line 4
func (e *ParseError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	switch {
	case len(e.Rows) == 0 && e.Err != nil:
		b.WriteString(e.Err.Error())
	case len(e.Rows) == 0:
		b.WriteString("invalid input")
	default:
		if e.Err != nil {
			b.WriteString(e.Err.Error())
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d bad %s, nothing was published:", len(e.Rows), plural(len(e.Rows), "row", "rows"))
		for _, r := range e.Rows {
			b.WriteString("\n  ")
			b.WriteString(r.Error())
		}
	}
	return b.String()
}

// Unwrap returns Err.
func (e *ParseError) Unwrap() error { return e.Err }

// Parsed is a valid batch.
type Parsed struct {
	// Items are the valid items, sorted by ascending Position (positions are unique).
	Items []flashpipe.Item
	// Skipped lists the bad rows left out, in file order (only with SkipBadRows).
	Skipped []RowError
	// Layout is LayoutSimple, LayoutRich or LayoutJSONL.
	Layout string
}

// Parse reads and validates a batch from r. See the package documentation for the
// input rules.
//
// Bad input yields a *ParseError (use errors.As), classified permanent
// (flashpipe.IsPermanent); it lists every bad row, not just the first. An error
// reading r is returned wrapped and unclassified. Parse reads r to its end (or to
// the first read error) and keeps the whole batch in memory, so callers should
// bound the size of untrusted input (e.g. with http.MaxBytesReader).
func Parse(r io.Reader, opts ParseOptions) (*Parsed, error) {
	return parse(r, opts, opts.format(opts.Source))
}

// parse reads a batch whole into memory.
func parse(r io.Reader, opts ParseOptions, format Format) (*Parsed, error) {
	c, err := scan(r, opts, format, 0, true, nil)
	if err != nil {
		return nil, err
	}
	items := make([]flashpipe.Item, len(c.index))
	for i, row := range c.index {
		items[i] = c.items[row.ref]
	}
	return &Parsed{Items: items, Skipped: c.bad, Layout: c.layout}, nil
}

// ParseFile parses the batch in the file at path; see Parse. Source defaults to the
// path's base name and FormatAuto looks at the path's extension.
func ParseFile(path string, opts ParseOptions) (*Parsed, error) {
	f, opts, err := openPath(path, opts)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f, opts, opts.format(path))
}

// openPath opens the batch file at path, Source defaulting to its base name.
func openPath(path string, opts ParseOptions) (*os.File, ParseOptions, error) {
	if opts.Source == "" {
		opts.Source = filepath.Base(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, opts, fmt.Errorf("ingest: %w", err)
	}
	return f, opts, nil
}

// format returns the input's format: Format, else the one name's extension
// implies (FormatAuto if none: sniffed).
func (o ParseOptions) format(name string) Format {
	if o.Format != FormatAuto {
		return o.Format
	}
	return formatOf(name)
}

// formatOf returns the format a file name's extension implies, or FormatAuto.
func formatOf(name string) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return FormatCSV
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL
	}
	return FormatAuto
}

// scan reads and validates a batch in one pass, the rules written once for Parse
// (keep: the valid items are kept) and OpenFile (only each valid row's position and
// byte offset are kept). rows, when known, is at least the number of rows (it sizes
// the index once). lines, needed without keep, returns the line of each row at the
// given offsets (only asked for rows whose position an earlier row has).
func scan(r io.Reader, opts ParseOptions, format Format, rows int, keep bool, lines func(offs []int64) (map[int64]int, error)) (*collector, error) {
	switch format {
	case FormatAuto, FormatCSV, FormatJSONL:
	default:
		return nil, fmt.Errorf("ingest: ParseOptions.Format %q is not %q, %q or empty", format, FormatCSV, FormatJSONL)
	}
	br := bufio.NewReaderSize(&stickyErr{r: r}, sniffBytes)
	off, err := skipBOM(br)
	if err != nil {
		return nil, readError(opts.Source, err)
	}
	if format == FormatAuto {
		if format, err = sniff(br); err != nil {
			return nil, readError(opts.Source, err)
		}
	}
	c := &collector{opts: opts, keep: keep, format: format, index: make([]rowRef, 0, rows)}
	if format == FormatCSV {
		err = c.readCSV(br, off)
	} else {
		c.layout, err = LayoutJSONL, c.readJSONL(br, off)
	}
	if err != nil {
		return nil, err
	}
	if err := c.finish(lines); err != nil {
		return nil, err
	}
	return c, nil
}

// stickyErr reads r until its first error (io.EOF included), then returns that error
// without reading r again: a terminal's standard input would wait for more.
type stickyErr struct {
	r   io.Reader
	err error
}

func (s *stickyErr) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	s.err = err
	return n, err
}

// skipBOM drops a UTF-8 byte order mark at the start of the input and returns the
// offset of the first byte after it.
func skipBOM(br *bufio.Reader) (int64, error) {
	b, err := br.Peek(3)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if bytes.Equal(b, []byte("\xEF\xBB\xBF")) {
		_, _ = br.Discard(3) // cannot fail: the bytes are buffered
		return 3, nil
	}
	return 0, nil
}

// sniff tells JSON Lines (first non-blank byte '{') from CSV.
func sniff(br *bufio.Reader) (Format, error) {
	b, err := br.Peek(sniffBytes)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return "", err
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return !isJSONSpace(r) }); i >= 0 && b[i] == '{' {
		return FormatJSONL, nil
	}
	return FormatCSV, nil
}

func isJSONSpace(r rune) bool { return strings.ContainsRune(jsonSpace, r) }

func readError(source string, err error) error {
	if source == "" {
		return fmt.Errorf("ingest: reading input: %w", err)
	}
	return fmt.Errorf("ingest: reading %s: %w", source, err)
}

// collector gathers a batch's valid rows and bad rows, whatever the format.
type collector struct {
	opts   ParseOptions
	format Format
	layout string
	header *csvHeader // CSV: how to read a row again
	bad    []RowError
	rows   int      // data rows seen so far, bad ones included: the implicit position
	index  []rowRef // the valid rows; after finish sorted by position, duplicates out
	// With keep, the valid items themselves, in file order (rowRef.ref indexes
	// them), and the line of each.
	keep  bool
	items []flashpipe.Item
	lines []int
}

// rowRef is a valid row: its position and where it is, the byte offset where it
// starts in the input or (with keep) its index in collector.items. Both grow in file
// order. 16 bytes per item is what a batch read from a file costs in memory.
type rowRef struct {
	pos int64
	ref int64
}

func (c *collector) reject(line int, reason string) {
	c.bad = append(c.bad, RowError{Line: line, Reason: reason})
}

// accept adds a valid row. Whether its position is taken is decided in finish.
func (c *collector) accept(line int, off int64, it flashpipe.Item) {
	ref := off
	if c.keep {
		ref = int64(len(c.items))
		c.items = append(c.items, it)
		c.lines = append(c.lines, line)
	}
	c.index = append(c.index, rowRef{pos: it.Position, ref: ref})
}

// finish sorts the valid rows by position and refuses every row whose position an
// earlier valid row has. Only valid rows claim a position, so a bad row never makes
// a later good row with its position bad too. Bad rows are reported in file order.
func (c *collector) finish(lines func(offs []int64) (map[int64]int, error)) error {
	slices.SortFunc(c.index, func(a, b rowRef) int {
		return cmp.Or(cmp.Compare(a.pos, b.pos), cmp.Compare(a.ref, b.ref))
	})
	var dups []int // indexes into c.index of rows whose position is taken
	for i := 1; i < len(c.index); i++ {
		if c.index[i].pos == c.index[i-1].pos {
			dups = append(dups, i)
		}
	}
	if len(dups) > 0 {
		refs := make([]int64, 0, 2*len(dups))
		for _, i := range dups {
			refs = append(refs, c.index[i-1].ref, c.index[i].ref)
		}
		lineOf, err := c.lineOf(refs, lines)
		if err != nil {
			return readError(c.opts.Source, err)
		}
		first := 0 // index of the row that has the position
		for _, i := range dups {
			if c.index[first].pos != c.index[i].pos {
				first = i - 1
			}
			c.reject(lineOf[c.index[i].ref], fmt.Sprintf("position %d is already used on line %d",
				c.index[i].pos, lineOf[c.index[first].ref]))
		}
		c.index = slices.CompactFunc(c.index, func(a, b rowRef) bool { return a.pos == b.pos })
		slices.SortFunc(c.bad, func(a, b RowError) int { return cmp.Compare(a.Line, b.Line) })
	}
	if len(c.bad) > 0 && !c.opts.SkipBadRows {
		return c.fail(nil)
	}
	if len(c.index) == 0 {
		return c.fail(ErrNoItems)
	}
	return nil
}

// lineOf returns the lines of the rows at refs.
func (c *collector) lineOf(refs []int64, lines func(offs []int64) (map[int64]int, error)) (map[int64]int, error) {
	if !c.keep {
		return lines(refs)
	}
	m := make(map[int64]int, len(refs))
	for _, ref := range refs {
		m[ref] = c.lines[ref]
	}
	return m, nil
}

// fail returns the ParseError rejecting the batch, classified permanent.
func (c *collector) fail(err error) error {
	return flashpipe.AsPermanent(&ParseError{Source: c.opts.Source, Rows: c.bad, Err: err})
}

// ---- field rules shared by CSV and JSON Lines ----

// parsePosition parses a position given as text.
func parsePosition(s string) (int64, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, "position is empty"
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && s[0] == '-':
		return 0, fmt.Sprintf("position %s is less than 1", quote(s))
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Sprintf("position %s is too large, the limit is %d", quote(s), int64(math.MaxInt64))
	case err != nil:
		return 0, fmt.Sprintf("position %s is not an integer", quote(s))
	case n < 1:
		return 0, fmt.Sprintf("position %s is less than 1", quote(s))
	}
	return n, ""
}

// checkTerm returns the term trimmed, or why it is refused.
func checkTerm(s string) (string, string) {
	t, err := flashpipe.CheckTerm(s)
	if err != nil {
		return "", err.Error()
	}
	return t, ""
}

// checkType returns the normalised type, or why it is refused.
func checkType(s string) (string, string) {
	t, err := flashpipe.CheckType(s)
	if err != nil {
		return "", err.Error()
	}
	return t, ""
}

// quote quotes a value for a reason, shortened when long.
func quote(s string) string {
	if utf8.RuneCountInString(s) > maxQuoted {
		r := []rune(s)
		return strconv.Quote(string(r[:maxQuoted])) + "..."
	}
	return strconv.Quote(s)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// ---- CSV ----

// Column roles in a CSV header.
const (
	roleMeta = iota
	roleIgnore
	rolePosition
	roleTerm
	roleType
)

type csvHeader struct {
	layout string
	names  []string // trimmed header names
	roles  []int
	pos    int // column index, -1 when absent
	term   int
	typ    int // -1 when absent
}

func (c *collector) readCSV(br *bufio.Reader, off int64) error {
	cr := newCSVReader(br, off, MaxLineBytes)
	var rec csvRecord
	for {
		err := cr.read(&rec)
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if err != nil && !errors.As(err, &pe) {
			return readError(c.opts.Source, err)
		}
		if c.header == nil { // the first non-blank record is the header
			if pe != nil {
				return c.fail(fmt.Errorf("the header row (line %d) is not valid CSV: %s", pe.StartLine, csvReason(pe)))
			}
			if rec.Blank {
				continue
			}
			if l := rec.Long; l.line > 0 {
				return c.fail(fmt.Errorf("the header row (line %d) is longer than 1 MiB (%d bytes)", l.line, l.n))
			}
			h, err := parseHeader(rec.Fields)
			if err != nil {
				return c.fail(err)
			}
			c.header, c.layout = h, h.layout
			continue
		}
		if pe != nil {
			c.rows++
			c.reject(pe.StartLine, csvReason(pe))
			continue
		}
		if rec.Blank {
			continue
		}
		c.rows++
		if l := rec.Long; l.line > 0 {
			c.reject(rec.Line, longReason(rec.Line, l))
			continue
		}
		c.csvRow(rec.Line, rec.Off, rec.Fields)
	}
	switch {
	case c.header == nil:
		return c.fail(fmt.Errorf("%w: the input is empty", ErrNoItems))
	case c.rows == 0:
		return c.fail(fmt.Errorf("%w: the header row is the only row", ErrNoItems))
	}
	return nil
}

func parseHeader(rec []string) (*csvHeader, error) {
	h := &csvHeader{layout: LayoutSimple, pos: -1, term: -1, typ: -1}
	for _, f := range rec {
		if !utf8.ValidString(f) {
			return nil, errors.New("the header row is not valid UTF-8")
		}
		name := strings.TrimSpace(f)
		h.names = append(h.names, name)
		if strings.EqualFold(name, "hangul") {
			h.layout = LayoutRich
		}
	}
	termName, typeName := "term", "type"
	if h.layout == LayoutRich {
		termName, typeName = "hangul", "word_type"
	}
	seen := make(map[string]int) // name (lower-cased for used columns) → column
	for i, name := range h.names {
		role, key := roleMeta, name
		switch lower := strings.ToLower(name); {
		case name == "":
			role = roleIgnore
		case lower == "position":
			role, key, h.pos = rolePosition, lower, i
		case lower == termName:
			role, key, h.term = roleTerm, lower, i
		case lower == typeName:
			role, key, h.typ = roleType, lower, i
		}
		h.roles = append(h.roles, role)
		if role == roleIgnore {
			continue
		}
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("the header row names column %q twice (columns %d and %d)", name, j+1, i+1)
		}
		seen[key] = i
	}
	if h.term < 0 {
		found := make([]string, 0, len(h.names))
		for _, n := range h.names {
			found = append(found, quote(n))
		}
		hint := ""
		if slices.ContainsFunc(h.names, func(n string) bool { return strings.Contains(n, "\t") }) {
			hint = " (the header contains tabs, but columns must be separated by commas)"
		}
		return nil, fmt.Errorf("the header row has no %q column (or %q for the word-frequency layout); it has %s%s",
			"term", "Hangul", strings.Join(found, ", "), hint)
	}
	return h, nil
}

// csvRow validates one data row, which starts on line at byte offset off.
func (c *collector) csvRow(line int, off int64, rec []string) {
	if it, reason := csvItem(c.header, int64(c.rows), rec); reason != "" {
		c.reject(line, reason)
	} else {
		c.accept(line, off, it)
	}
}

// csvItem returns the item of a CSV data row, or why the row is refused; implicit
// is its position when the header has no position column.
func csvItem(h *csvHeader, implicit int64, rec []string) (flashpipe.Item, string) {
	if len(rec) != len(h.names) {
		return flashpipe.Item{}, fmt.Sprintf("expected %d fields, got %d", len(h.names), len(rec))
	}
	it := flashpipe.Item{Position: implicit}
	var reason string
	if h.pos >= 0 {
		if it.Position, reason = parsePosition(rec[h.pos]); reason != "" {
			return it, reason
		}
	}
	if it.Term, reason = checkTerm(rec[h.term]); reason != "" {
		return it, reason
	}
	typ := ""
	if h.typ >= 0 {
		typ = rec[h.typ]
	}
	if it.Type, reason = checkType(typ); reason != "" {
		return it, reason
	}
	for i, role := range h.roles {
		if role != roleMeta {
			continue
		}
		v := strings.TrimSpace(rec[i])
		if v == "" {
			continue
		}
		if !utf8.ValidString(v) {
			return it, fmt.Sprintf("column %s is not valid UTF-8", quote(h.names[i]))
		}
		if it.Metadata == nil {
			it.Metadata = make(map[string]string, len(h.roles))
		}
		it.Metadata[h.names[i]] = v
	}
	return it, ""
}

func csvReason(pe *csv.ParseError) string {
	var reason string
	switch {
	case errors.Is(pe.Err, csv.ErrBareQuote):
		reason = `a " in an unquoted field; quote the whole field and double the " inside it`
	case errors.Is(pe.Err, csv.ErrQuote):
		reason = `extraneous or missing " in a quoted field`
	default:
		reason = pe.Err.Error()
	}
	if pe.Line != pe.StartLine {
		reason += fmt.Sprintf(" (on line %d)", pe.Line)
	}
	return reason
}

func longReason(start int, l longLine) string {
	if l.line == start {
		return fmt.Sprintf("line is longer than 1 MiB (%d bytes)", l.n)
	}
	return fmt.Sprintf("line %d of this row is longer than 1 MiB (%d bytes)", l.line, l.n)
}

// ---- JSON Lines ----

func (c *collector) readJSONL(br *bufio.Reader, off int64) error {
	var buf []byte
	first := true // no non-blank line seen yet
	for lineNo := 1; ; lineNo++ {
		start := off
		line, n, raw, err := readLine(br, buf[:0], MaxLineBytes)
		off += int64(raw)
		if err != nil && !errors.Is(err, io.EOF) {
			return readError(c.opts.Source, err)
		}
		if n == 0 && err != nil {
			break
		}
		buf = line
		if trimmed := bytes.Trim(line, jsonSpace); len(trimmed) > 0 || n > MaxLineBytes {
			if first && len(trimmed) > 0 && trimmed[0] == '[' {
				return c.fail(errors.New("the input is a JSON array; JSON Lines wants one JSON object per line"))
			}
			first = false
			c.rows++
			if n > MaxLineBytes {
				c.reject(lineNo, fmt.Sprintf("line is longer than 1 MiB (%d bytes)", n))
			} else {
				c.jsonRow(lineNo, start, trimmed)
			}
		}
		if err != nil {
			break
		}
	}
	if c.rows == 0 {
		return c.fail(fmt.Errorf("%w: the input is empty", ErrNoItems))
	}
	return nil
}

// jsonSpace is the white space JSON allows around values.
const jsonSpace = " \t\r\n"

// readLine reads one physical line into buf, without its terminator. It keeps at
// most max+1 bytes of the line, so an overlong line costs no more memory; n is the
// full length, raw the bytes read (the terminator included). err is io.EOF for a
// last line without '\n' (n may be 0: no line).
func readLine(br *bufio.Reader, buf []byte, max int) (line []byte, n, raw int, err error) {
	var prev byte // last byte of the previous chunk
	for {
		chunk, e := br.ReadSlice('\n')
		n += len(chunk)
		raw += len(chunk)
		if room := max + 1 - len(buf); room > 0 {
			buf = append(buf, chunk[:min(room, len(chunk))]...)
		}
		if errors.Is(e, bufio.ErrBufferFull) {
			prev = chunk[len(chunk)-1]
			continue
		}
		if e == nil { // the line ends in '\n'
			n--
			if len(chunk) >= 2 && chunk[len(chunk)-2] == '\r' || len(chunk) == 1 && prev == '\r' {
				n--
			}
		}
		if n <= max {
			buf = buf[:n]
		}
		return buf, n, raw, e
	}
}

// member is one name/value pair of a JSON object, its value undecoded.
type member struct {
	name string
	raw  json.RawMessage
}

// isItemField reports whether a lower-cased JSON Lines field name is one of the
// item's own fields, which are matched case-insensitively.
func isItemField(lower string) bool {
	switch lower {
	case "position", "term", "type", "metadata":
		return true
	}
	return false
}

// jsonRow validates one JSON Lines row, which starts on line at byte offset off.
func (c *collector) jsonRow(line int, off int64, data []byte) {
	if it, reason := jsonItem(int64(c.rows), data); reason != "" {
		c.reject(line, reason)
	} else {
		c.accept(line, off, it)
	}
}

// jsonItem returns the item of a JSON Lines row, or why the row is refused; implicit
// is its position when it has none.
func jsonItem(implicit int64, data []byte) (flashpipe.Item, string) {
	valid := utf8.Valid(data) // before decoding: encoding/json would replace invalid bytes
	members, reason := decodeObject(data, "field")
	if reason != "" {
		return flashpipe.Item{}, reason
	}
	if !valid {
		return flashpipe.Item{}, invalidUTF8Reason(members)
	}
	var pos, term, typ, meta json.RawMessage
	var extra []member
	for _, m := range members {
		switch strings.ToLower(m.name) {
		case "position":
			pos = m.raw
		case "term":
			term = m.raw
		case "type":
			typ = m.raw
		case "metadata":
			meta = m.raw
		default:
			extra = append(extra, m)
		}
	}

	it := flashpipe.Item{Position: implicit}
	switch kind := jsonKind(pos); kind {
	case "null":
	case "string":
		if it.Position, reason = parsePosition(jsonString(pos)); reason != "" {
			return it, reason
		}
	case "number":
		if it.Position, reason = parsePosition(string(pos)); reason != "" {
			return it, reason
		}
	default:
		return it, "position must be an integer, got " + kind
	}

	switch kind := jsonKind(term); kind {
	case "null":
		return it, "term is missing"
	case "string":
		if it.Term, reason = checkTerm(jsonString(term)); reason != "" {
			return it, reason
		}
	default:
		return it, "term must be a string, got " + kind
	}

	t := ""
	switch kind := jsonKind(typ); kind {
	case "null":
	case "string":
		t = jsonString(typ)
	default:
		return it, "type must be a string, got " + kind
	}
	if it.Type, reason = checkType(t); reason != "" {
		return it, reason
	}

	switch kind := jsonKind(meta); kind {
	case "null":
	case "object":
		mm, reason := decodeObject(meta, "metadata key")
		if reason != "" {
			return it, reason
		}
		for _, m := range mm {
			it.Metadata = addMeta(it.Metadata, m)
		}
	default:
		return it, "metadata must be an object, got " + kind
	}
	for _, m := range extra {
		if _, dup := it.Metadata[m.name]; dup {
			return it, fmt.Sprintf("field %s is also a metadata key", quote(m.name))
		}
		it.Metadata = addMeta(it.Metadata, m)
	}
	return it, ""
}

// decodeObject splits a JSON object into its members, refusing anything else and
// names given twice (the item's own fields case-insensitively). what names a
// member in a reason: "field" or "metadata key".
func decodeObject(data []byte, what string) ([]member, string) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, malformed(err)
	}
	if tok != json.Delim('{') {
		return nil, "line is not a JSON object but " + withArticle(jsonKind(data))
	}
	var members []member
	seen := make(map[string]string)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed(err)
		}
		name, _ := tok.(string) // the decoder accepts only a string here
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, malformed(err)
		}
		key := name
		if what == "field" && isItemField(strings.ToLower(name)) {
			key = strings.ToLower(name)
		}
		if first, dup := seen[key]; dup {
			if first == name {
				return nil, fmt.Sprintf("%s %s appears twice", what, quote(name))
			}
			return nil, fmt.Sprintf("%s %s appears twice, as %s and %s", what, quote(key), quote(first), quote(name))
		}
		seen[key] = name
		members = append(members, member{name: name, raw: raw})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, malformed(err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, "more than one JSON value on the line"
	} else if !errors.Is(err, io.EOF) {
		return nil, malformed(err)
	}
	return members, ""
}

func malformed(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "malformed JSON: the line ends before the JSON object does"
	}
	return "malformed JSON: " + err.Error()
}

// invalidUTF8Reason says where a row's invalid UTF-8 is.
func invalidUTF8Reason(members []member) string {
	for _, m := range members {
		if utf8.Valid(m.raw) {
			continue
		}
		switch strings.ToLower(m.name) {
		case "term":
			return "term is not valid UTF-8"
		case "type":
			return "type is not valid UTF-8"
		}
		return fmt.Sprintf("field %s is not valid UTF-8", quote(m.name))
	}
	return "line is not valid UTF-8" // in a field name
}

// jsonKind names the kind of a JSON value; an absent value is "null".
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "null"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// withArticle names a kind of JSON value with its article: "an array".
func withArticle(kind string) string {
	switch kind {
	case "null":
		return kind
	case "object", "array":
		return "an " + kind
	}
	return "a " + kind
}

// jsonString decodes a JSON string the decoder has already checked.
func jsonString(raw []byte) string {
	var s string
	_ = json.Unmarshal(raw, &s) // cannot fail: raw is a valid JSON string
	return s
}

// addMeta adds a member to metadata: a string as its trimmed text, any other value
// as its compact JSON text. Empty strings and nulls are left out.
func addMeta(meta map[string]string, m member) map[string]string {
	var v string
	switch jsonKind(m.raw) {
	case "null":
		return meta
	case "string":
		v = strings.TrimSpace(jsonString(m.raw))
	default:
		var b bytes.Buffer
		_ = json.Compact(&b, m.raw) // cannot fail: raw is valid JSON
		v = b.String()
	}
	if v == "" {
		return meta
	}
	if meta == nil {
		meta = make(map[string]string)
	}
	meta[m.name] = v
	return meta
}
