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
	"unicode"
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
	format := opts.Format
	if format == FormatAuto {
		format = formatOf(opts.Source)
	}
	return parse(r, opts, format)
}

// ParseFile parses the batch in the file at path; see Parse. Source defaults to the
// path's base name and FormatAuto looks at the path's extension.
func ParseFile(path string, opts ParseOptions) (*Parsed, error) {
	if opts.Source == "" {
		opts.Source = filepath.Base(path)
	}
	format := opts.Format
	if format == FormatAuto {
		format = formatOf(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	defer f.Close()
	return parse(f, opts, format)
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

func parse(r io.Reader, opts ParseOptions, format Format) (*Parsed, error) {
	switch format {
	case FormatAuto, FormatCSV, FormatJSONL:
	default:
		return nil, fmt.Errorf("ingest: ParseOptions.Format %q is not %q, %q or empty", format, FormatCSV, FormatJSONL)
	}
	br := bufio.NewReaderSize(r, sniffBytes)
	if err := skipBOM(br); err != nil {
		return nil, readError(opts.Source, err)
	}
	if format == FormatAuto {
		var err error
		if format, err = sniff(br); err != nil {
			return nil, readError(opts.Source, err)
		}
	}
	c := &collector{opts: opts, lineOf: make(map[int64]int)}
	var layout string
	var err error
	if format == FormatCSV {
		layout, err = c.readCSV(br)
	} else {
		layout, err = LayoutJSONL, c.readJSONL(br)
	}
	if err != nil {
		return nil, err
	}
	return c.finish(layout)
}

// skipBOM drops a UTF-8 byte order mark at the start of the input.
func skipBOM(br *bufio.Reader) error {
	b, err := br.Peek(3)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if bytes.Equal(b, []byte("\xEF\xBB\xBF")) {
		_, _ = br.Discard(3) // cannot fail: the bytes are buffered
	}
	return nil
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

// collector gathers a batch's valid items and bad rows, whatever the format.
type collector struct {
	opts   ParseOptions
	items  []flashpipe.Item
	bad    []RowError
	lineOf map[int64]int // position → line of the valid item that has it
	rows   int           // data rows seen so far, bad ones included: the implicit position
}

func (c *collector) reject(line int, reason string) {
	c.bad = append(c.bad, RowError{Line: line, Reason: reason})
}

// accept adds a valid item unless its position is taken. Only valid items claim a
// position, so a bad row never makes a later good row with its position bad too.
func (c *collector) accept(line int, it flashpipe.Item) {
	if prev, ok := c.lineOf[it.Position]; ok {
		c.reject(line, fmt.Sprintf("position %d is already used on line %d", it.Position, prev))
		return
	}
	c.lineOf[it.Position] = line
	c.items = append(c.items, it)
}

func (c *collector) finish(layout string) (*Parsed, error) {
	if len(c.bad) > 0 && !c.opts.SkipBadRows {
		return nil, c.fail(nil)
	}
	if len(c.items) == 0 {
		return nil, c.fail(ErrNoItems)
	}
	slices.SortFunc(c.items, func(a, b flashpipe.Item) int { return cmp.Compare(a.Position, b.Position) })
	return &Parsed{Items: c.items, Skipped: c.bad, Layout: layout}, nil
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
	if !utf8.ValidString(s) {
		return "", "term is not valid UTF-8"
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", "term is empty"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "", "term contains a control character"
	}
	if n := utf8.RuneCountInString(s); n > flashpipe.MaxTermLength {
		return "", fmt.Sprintf("term has %d characters, the limit is %d", n, flashpipe.MaxTermLength)
	}
	return s, ""
}

// checkType returns the normalised type, or why it is refused.
func checkType(s string) (string, string) {
	if !utf8.ValidString(s) {
		return "", "type is not valid UTF-8"
	}
	t := flashpipe.NormalizeType(s)
	if strings.IndexFunc(t, unicode.IsControl) >= 0 {
		return "", "type contains a control character"
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

func (c *collector) readCSV(r io.Reader) (string, error) {
	lw := &lineWatcher{r: r, limit: MaxLineBytes, line: 1}
	cr := csv.NewReader(lw)
	cr.FieldsPerRecord = -1 // field counts are checked here, to report them per row
	cr.ReuseRecord = true

	var h *csvHeader
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if err != nil && !errors.As(err, &pe) {
			return "", readError(c.opts.Source, err)
		}
		if h == nil { // the first non-blank record is the header
			if pe != nil {
				return "", c.fail(fmt.Errorf("the header row (line %d) is not valid CSV: %s", pe.StartLine, csvReason(pe)))
			}
			if blank(rec) {
				continue
			}
			line, _ := cr.FieldPos(0)
			if l, ok := lw.longIn(line, endLine(cr, rec)); ok {
				return "", c.fail(fmt.Errorf("the header row (line %d) is longer than 1 MiB (%d bytes)", l.line, l.n))
			}
			if h, err = parseHeader(rec); err != nil {
				return "", c.fail(err)
			}
			continue
		}
		if pe != nil {
			c.rows++
			c.reject(pe.StartLine, csvReason(pe))
			continue
		}
		if blank(rec) {
			continue
		}
		c.rows++
		line, _ := cr.FieldPos(0)
		if l, ok := lw.longIn(line, endLine(cr, rec)); ok {
			c.reject(line, longReason(line, l))
			continue
		}
		c.csvRow(h, line, rec)
	}
	switch {
	case h == nil:
		return "", c.fail(fmt.Errorf("%w: the input is empty", ErrNoItems))
	case c.rows == 0:
		return "", c.fail(fmt.Errorf("%w: the header row is the only row", ErrNoItems))
	}
	return h.layout, nil
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

// csvRow validates one data row.
func (c *collector) csvRow(h *csvHeader, line int, rec []string) {
	if len(rec) != len(h.names) {
		c.reject(line, fmt.Sprintf("expected %d fields, got %d", len(h.names), len(rec)))
		return
	}
	it := flashpipe.Item{Position: int64(c.rows)}
	var reason string
	if h.pos >= 0 {
		if it.Position, reason = parsePosition(rec[h.pos]); reason != "" {
			c.reject(line, reason)
			return
		}
	}
	if it.Term, reason = checkTerm(rec[h.term]); reason != "" {
		c.reject(line, reason)
		return
	}
	typ := ""
	if h.typ >= 0 {
		typ = rec[h.typ]
	}
	if it.Type, reason = checkType(typ); reason != "" {
		c.reject(line, reason)
		return
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
			c.reject(line, fmt.Sprintf("column %s is not valid UTF-8", quote(h.names[i])))
			return
		}
		if it.Metadata == nil {
			it.Metadata = make(map[string]string, len(h.roles))
		}
		it.Metadata[h.names[i]] = v
	}
	c.accept(line, it)
}

// blank reports whether a CSV record holds nothing but white space.
func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

// endLine returns the physical line on which the record just read ends.
func endLine(cr *csv.Reader, rec []string) int {
	last := len(rec) - 1
	line, _ := cr.FieldPos(last)
	return line + strings.Count(rec[last], "\n")
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

// lineWatcher passes its input through, noting the physical lines longer than
// limit bytes (without their terminator). Lines are counted like encoding/csv
// counts them: by '\n'.
type lineWatcher struct {
	r      io.Reader
	limit  int64
	line   int   // number of the line being read
	n      int64 // its length so far
	lastCR bool  // its last byte so far is '\r'
	done   bool
	long   []longLine
}

type longLine struct {
	line int
	n    int64
}

func (w *lineWatcher) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	b := p[:n]
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.n += int64(len(b))
			w.lastCR = b[len(b)-1] == '\r'
			break
		}
		w.n += int64(i)
		if i > 0 {
			w.lastCR = b[i-1] == '\r'
		}
		w.endLine()
		b = b[i+1:]
	}
	if err != nil && !w.done && w.n > 0 {
		w.done = true
		w.endLine()
	}
	return n, err
}

func (w *lineWatcher) endLine() {
	n := w.n
	if w.lastCR {
		n--
	}
	if n > w.limit {
		w.long = append(w.long, longLine{line: w.line, n: n})
	}
	w.line++
	w.n, w.lastCR = 0, false
}

// longIn returns the first overlong line in start..end. Rows are checked in file
// order, so lines before start are forgotten.
func (w *lineWatcher) longIn(start, end int) (longLine, bool) {
	for len(w.long) > 0 && w.long[0].line < start {
		w.long = w.long[1:]
	}
	if len(w.long) > 0 && w.long[0].line <= end {
		return w.long[0], true
	}
	return longLine{}, false
}

// ---- JSON Lines ----

func (c *collector) readJSONL(br *bufio.Reader) error {
	var buf []byte
	first := true // no non-blank line seen yet
	for lineNo := 1; ; lineNo++ {
		line, n, err := readLine(br, buf[:0], MaxLineBytes)
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
				c.jsonRow(lineNo, trimmed)
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
// full length. err is io.EOF for a last line without '\n' (n may be 0: no line).
func readLine(br *bufio.Reader, buf []byte, max int) (line []byte, n int, err error) {
	var prev byte // last byte of the previous chunk
	for {
		chunk, e := br.ReadSlice('\n')
		n += len(chunk)
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
		return buf, n, e
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

// jsonRow validates one JSON Lines row.
func (c *collector) jsonRow(line int, data []byte) {
	valid := utf8.Valid(data) // before decoding: encoding/json would replace invalid bytes
	members, reason := decodeObject(data, "field")
	if reason != "" {
		c.reject(line, reason)
		return
	}
	if !valid {
		c.reject(line, invalidUTF8Reason(members))
		return
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

	it := flashpipe.Item{Position: int64(c.rows)}
	switch kind := jsonKind(pos); kind {
	case "null":
	case "string":
		if it.Position, reason = parsePosition(jsonString(pos)); reason != "" {
			c.reject(line, reason)
			return
		}
	case "number":
		if it.Position, reason = parsePosition(string(pos)); reason != "" {
			c.reject(line, reason)
			return
		}
	default:
		c.reject(line, "position must be an integer, got "+kind)
		return
	}

	switch kind := jsonKind(term); kind {
	case "null":
		c.reject(line, "term is missing")
		return
	case "string":
		if it.Term, reason = checkTerm(jsonString(term)); reason != "" {
			c.reject(line, reason)
			return
		}
	default:
		c.reject(line, "term must be a string, got "+kind)
		return
	}

	t := ""
	switch kind := jsonKind(typ); kind {
	case "null":
	case "string":
		t = jsonString(typ)
	default:
		c.reject(line, "type must be a string, got "+kind)
		return
	}
	if it.Type, reason = checkType(t); reason != "" {
		c.reject(line, reason)
		return
	}

	switch kind := jsonKind(meta); kind {
	case "null":
	case "object":
		mm, reason := decodeObject(meta, "metadata key")
		if reason != "" {
			c.reject(line, reason)
			return
		}
		for _, m := range mm {
			it.Metadata = addMeta(it.Metadata, m)
		}
	default:
		c.reject(line, "metadata must be an object, got "+kind)
		return
	}
	for _, m := range extra {
		if _, dup := it.Metadata[m.name]; dup {
			c.reject(line, fmt.Sprintf("field %s is also a metadata key", quote(m.name)))
			return
		}
		it.Metadata = addMeta(it.Metadata, m)
	}
	c.accept(line, it)
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
