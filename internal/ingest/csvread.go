package ingest

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"unicode"
	"unicode/utf8"
)

// csvReader reads CSV records as encoding/csv reads them with its defaults (comma
// ',', no comment lines, strict quotes, no trimming) and any number of fields per
// record: the same fields, the same *csv.ParseError (Err, StartLine and Line; Column
// is not set) and the same line numbers, lines counted by '\n'. It differs in what it
// holds: encoding/csv reads a whole line into memory before it parses it, so one
// 50 MB line costs 50 MB; csvReader lexes byte by byte and keeps at most limit+1
// bytes of any physical line. The rest of an over-long line is lexed (its quotes
// still decide where the record ends) and counted, not kept: such a record's Long
// names the line and its full length, and its Fields are incomplete (the record is
// refused anyway).
//
// It also says where each record starts (its byte offset, so it can be read again
// from there) and whether all its fields are white space (Blank), which it tracks as
// it goes because an over-long record's fields are not all kept.
type csvReader struct {
	br    *bufio.Reader
	limit int64
	off   int64 // offset of the next byte
	line  int   // line of the next byte, 1-based
	n     int64 // bytes of that line read so far, its terminator not yet seen
	last  byte  // the last of those bytes
	eof   bool  // the input has ended (and its last line was counted)

	rec      *csvRecord // the record being read
	prevLine int        // line of the last byte read
	dataLine int        // line of the last byte of record data (a dropped '\r' is none)
	dropping bool       // the record has an over-long line: its data is no longer kept
}

// csvRecord is one record read by csvReader. Its fields are reused by the next read.
type csvRecord struct {
	Fields []string
	Line   int   // the line where the record starts
	End    int   // the line where it ends
	Off    int64 // the byte offset where it starts
	Blank  bool  // every field is empty or white space (strings.TrimSpace)
	Long   longLine

	buf   []byte
	ends  []int
	space spaceTracker
}

// longLine is an over-long physical line: its number and length.
type longLine struct {
	line int
	n    int64
}

func newCSVReader(br *bufio.Reader, off int64, limit int64) *csvReader {
	return &csvReader{br: br, limit: limit, off: off, line: 1}
}

// reset makes r read from br, positioned at offset off (for reading one record
// again: line numbers restart at 1).
func (r *csvReader) reset(br *bufio.Reader, off int64) {
	*r = csvReader{br: br, limit: r.limit, off: off, line: 1}
}

// readByte reads the next byte, counting lines and their lengths. At the end of the
// input it returns io.EOF (and counts the last line once).
func (r *csvReader) readByte() (byte, error) {
	if r.eof {
		return 0, io.EOF
	}
	b, err := r.br.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			r.atEOF()
		}
		return 0, err
	}
	r.off++
	r.prevLine = r.line
	if b == '\n' {
		r.endLine()
		return b, nil
	}
	r.n++
	r.last = b
	if r.n > r.limit+1 && r.rec != nil { // over the limit even if a '\r' ends it
		r.dropping = true
	}
	return b, nil
}

// peek returns the next n bytes (fewer at the end of the input, then with io.EOF).
func (r *csvReader) peek(n int) ([]byte, error) {
	if r.eof {
		return nil, io.EOF
	}
	b, err := r.br.Peek(n)
	if errors.Is(err, io.EOF) {
		if len(b) == 0 {
			r.atEOF()
		}
		return b, io.EOF
	}
	return b, err
}

func (r *csvReader) atEOF() {
	if !r.eof && r.n > 0 {
		r.endLine()
	}
	r.eof = true
}

// endLine ends the current line: its length leaves out a final '\r' ("\r\n", or
// '\r' at the end of the input), like encoding/csv.
func (r *csvReader) endLine() {
	n := r.n
	if r.last == '\r' {
		n--
	}
	if n > r.limit && r.rec != nil && r.rec.Long.line == 0 {
		r.rec.Long = longLine{line: r.line, n: n}
	}
	r.line++
	r.n, r.last = 0, 0
}

// The ways a '\r' just read can end, see afterCR.
const (
	crData    = iota // it is data
	crNewline        // "\r\n": the '\n' is read, the '\r' dropped
	crEOF            // the input ends: the '\r' is dropped
)

// afterCR says what the '\r' just read is: encoding/csv turns "\r\n" into "\n" and
// drops a '\r' that ends the input.
func (r *csvReader) afterCR() (int, error) {
	b, err := r.peek(1)
	switch {
	case errors.Is(err, io.EOF):
		return crEOF, nil
	case err != nil:
		return 0, err
	case b[0] == '\n':
		_, _ = r.readByte() // cannot fail: the byte is buffered
		return crNewline, nil
	}
	return crData, nil
}

// read reads the next record into rec. It returns io.EOF at the end of the input, a
// *csv.ParseError for a malformed record (the rest of its line is skipped, as
// encoding/csv skips it), or the error of the underlying reader.
func (r *csvReader) read(rec *csvRecord) error {
	// Empty lines ("\n", "\r\n", a final "\r") are skipped.
	for {
		b, err := r.peek(2)
		if len(b) == 0 {
			return err
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		switch {
		case b[0] == '\n':
			_, _ = r.readByte()
			continue
		case b[0] == '\r' && len(b) == 1:
			_, _ = r.readByte()
			r.atEOF()
			return io.EOF
		case b[0] == '\r' && b[1] == '\n':
			_, _ = r.readByte()
			_, _ = r.readByte()
			continue
		}
		break
	}
	*rec = csvRecord{Fields: rec.Fields[:0], buf: rec.buf[:0], ends: rec.ends[:0], Line: r.line, Off: r.off}
	r.rec, r.dropping, r.dataLine = rec, false, r.line
	defer func() { r.rec = nil }()
	for {
		more, err := r.field()
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	rec.End = r.prevLine
	rec.Blank = !rec.space.nonBlank
	if r.dropping {
		return nil // its fields are incomplete: the record is refused as long
	}
	s := string(rec.buf) // one allocation for all fields, as encoding/csv does
	start := 0
	for _, end := range rec.ends {
		rec.Fields = append(rec.Fields, s[start:end])
		start = end
	}
	return nil
}

// add appends a byte of field data.
func (r *csvReader) add(b byte) {
	r.dataLine = r.prevLine
	r.rec.space.add(b)
	if !r.dropping {
		r.rec.buf = append(r.rec.buf, b)
	}
}

// Bytes with a meaning in an unquoted and in a quoted field; all others are data.
const (
	unquotedSpecial = ",\n\"\r"
	quotedSpecial   = "\n\"\r"
)

// run reads the data bytes up to the next special one (or the end of the input),
// a buffer at a time: the fast path of field and quoted.
func (r *csvReader) run(special string) {
	for !r.eof {
		b, _ := r.br.Peek(max(r.br.Buffered(), 1)) // an error is met by the next readByte
		i := len(b)
		for k := range len(special) { // IndexByte is the fastest search (assembly)
			if j := bytes.IndexByte(b[:i], special[k]); j >= 0 {
				i = j
			}
		}
		if i == 0 {
			return
		}
		data := b[:i]
		r.off += int64(i)
		r.n += int64(i)
		r.last = data[i-1]
		r.prevLine, r.dataLine = r.line, r.line
		for _, c := range data {
			if r.rec.space.nonBlank {
				break
			}
			r.rec.space.add(c)
		}
		if r.n > r.limit+1 {
			r.dropping = true
		}
		if !r.dropping {
			r.rec.buf = append(r.rec.buf, data...)
		}
		_, _ = r.br.Discard(i) // cannot fail: the bytes are buffered
		if i < len(b) {
			return
		}
	}
}

// endField ends the current field.
func (r *csvReader) endField() {
	r.rec.space.endField()
	r.rec.ends = append(r.rec.ends, len(r.rec.buf))
}

// fail returns a parse error of the record on the current line and skips the rest
// of that line.
func (r *csvReader) fail(err error, line int) error {
	for {
		b, rerr := r.readByte()
		if errors.Is(rerr, io.EOF) || rerr == nil && b == '\n' {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return &csv.ParseError{StartLine: r.rec.Line, Line: line, Err: err}
}

// field reads one field; more is false when it ends the record.
func (r *csvReader) field() (more bool, err error) {
	b, err := r.readByte()
	if errors.Is(err, io.EOF) { // "a," at the end of the input: an empty last field
		r.endField()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if b == '"' {
		r.dataLine = r.prevLine
		return r.quoted()
	}
	for {
		switch b {
		case ',':
			r.endField()
			return true, nil
		case '\n':
			r.endField()
			return false, nil
		case '"':
			return false, r.fail(csv.ErrBareQuote, r.line)
		case '\r':
			kind, err := r.afterCR()
			if err != nil {
				return false, err
			}
			if kind != crData {
				r.endField()
				return false, nil
			}
			r.add(b)
		default:
			r.add(b)
		}
		r.run(unquotedSpecial)
		b, err = r.readByte()
		if errors.Is(err, io.EOF) {
			r.endField()
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// quoted reads the rest of a quoted field, its opening quote read.
func (r *csvReader) quoted() (more bool, err error) {
	for {
		r.run(quotedSpecial)
		b, err := r.readByte()
		if errors.Is(err, io.EOF) { // the quote never closes
			return false, &csv.ParseError{StartLine: r.rec.Line, Line: r.dataLine, Err: csv.ErrQuote}
		}
		if err != nil {
			return false, err
		}
		switch b {
		case '"':
			r.dataLine = r.prevLine
			next, err := r.peek(2)
			if err != nil && !errors.Is(err, io.EOF) {
				return false, err
			}
			switch {
			case len(next) == 0: // `"` ends the input
				r.endField()
				return false, nil
			case next[0] == '"': // `""`: a quote
				_, _ = r.readByte()
				r.add('"')
			case next[0] == ',':
				_, _ = r.readByte()
				r.endField()
				return true, nil
			case next[0] == '\n':
				_, _ = r.readByte()
				r.endField()
				return false, nil
			case next[0] == '\r' && (len(next) == 1 || next[1] == '\n'): // `"\r\n` or `"\r` at the end
				_, _ = r.readByte()
				if len(next) == 2 {
					_, _ = r.readByte()
				} else {
					r.atEOF()
				}
				r.endField()
				return false, nil
			default:
				return false, r.fail(csv.ErrQuote, r.line)
			}
		case '\r':
			kind, err := r.afterCR()
			if err != nil {
				return false, err
			}
			switch kind {
			case crData:
				r.add(b)
			case crNewline:
				r.add('\n')
			}
		default:
			r.add(b)
		}
	}
}

// spaceTracker follows a record's field data byte by byte and tells whether every
// field is white space as strings.TrimSpace sees it (unicode.IsSpace; an invalid
// UTF-8 byte is not space).
type spaceTracker struct {
	nonBlank bool
	rune     [utf8.UTFMax]byte // the bytes of a rune not complete yet
	n        int
}

func (s *spaceTracker) add(b byte) {
	if s.nonBlank {
		return
	}
	if s.n == 0 && b < utf8.RuneSelf {
		s.nonBlank = !isASCIISpace(b)
		return
	}
	s.rune[s.n] = b
	s.n++
	if !utf8.FullRune(s.rune[:s.n]) {
		return
	}
	r, size := utf8.DecodeRune(s.rune[:s.n])
	s.nonBlank = r == utf8.RuneError && size <= 1 || !unicode.IsSpace(r)
	s.n = 0
}

// endField ends a field: a rune left incomplete is invalid UTF-8, not space.
func (s *spaceTracker) endField() {
	if s.n > 0 {
		s.nonBlank = true
		s.n = 0
	}
}

func isASCIISpace(b byte) bool {
	switch b {
	case '\t', '\n', '\v', '\f', '\r', ' ':
		return true
	}
	return false
}
