// Package wire is a small, strict JSON reader for the fixed shapes of the chat
// completions wire format (a request's model and messages, an answer's choices and
// usage), used on the hot paths of the llm client and the simulator instead of
// encoding/json, which scans every body twice and reflects over the target.
//
// It validates what it reads and what it skips (RFC 8259 grammar, no trailing data),
// decodes strings exactly as encoding/json does (escapes, surrogate pairs, invalid
// UTF-8 bytes as U+FFFD), and refuses whatever it is unsure about (a key with escapes,
// a number that is not an integer where one is wanted): callers then fall back to
// encoding/json, so the fast path never changes a result, only its cost.
//
// A Decoder is not safe for concurrent use.
package wire

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// ErrSyntax is returned for anything the Decoder does not accept.
var ErrSyntax = errors.New("wire: not accepted by the fast JSON reader")

// Decoder reads one JSON document.
type Decoder struct {
	data []byte
	i    int
	err  error
	// scratch holds unescaped string bytes between calls.
	scratch []byte
}

// Reset makes d read data from the start.
func (d *Decoder) Reset(data []byte) {
	d.data, d.i, d.err = data, 0, nil
}

// ResetString makes d read s from the start, without copying it (a Decoder never
// writes to its data).
func (d *Decoder) ResetString(s string) {
	d.Reset(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

func (d *Decoder) fail() bool {
	if d.err == nil {
		d.err = ErrSyntax
	}
	return false
}

func (d *Decoder) ws() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// Peek returns the first byte of the next value ('{', '[', '"', 'n', 't', 'f', '-'
// or a digit), or 0 at the end of the data.
func (d *Decoder) Peek() byte {
	d.ws()
	if d.i >= len(d.data) {
		return 0
	}
	return d.data[d.i]
}

// End reports whether only whitespace is left, and records an error if not.
func (d *Decoder) End() bool {
	d.ws()
	if d.err == nil && d.i == len(d.data) {
		return true
	}
	return d.fail()
}

// Object reads an object, calling member for each key (raw, without quotes; keys with
// escapes are refused). member must read the value (with any Decoder method) and
// return false to stop. Object returns false on any error.
func (d *Decoder) Object(member func(key []byte) bool) bool {
	if d.err != nil {
		return false
	}
	if d.Peek() != '{' {
		return d.fail()
	}
	d.i++
	if d.Peek() == '}' {
		d.i++
		return true
	}
	for {
		if d.Peek() != '"' {
			return d.fail()
		}
		d.i++
		start := d.i
		for d.i < len(d.data) && d.data[d.i] != '"' {
			c := d.data[d.i]
			if c == '\\' || c < 0x20 {
				return d.fail()
			}
			d.i++
		}
		if d.i >= len(d.data) {
			return d.fail()
		}
		key := d.data[start:d.i]
		d.i++
		if d.Peek() != ':' {
			return d.fail()
		}
		d.i++
		if !member(key) || d.err != nil {
			return d.fail()
		}
		switch d.Peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return d.fail()
		}
	}
}

// Array reads an array, calling elem for each element; elem must read the element and
// return false to stop. Array returns false on any error.
func (d *Decoder) Array(elem func(i int) bool) bool {
	if d.err != nil {
		return false
	}
	if d.Peek() != '[' {
		return d.fail()
	}
	d.i++
	if d.Peek() == ']' {
		d.i++
		return true
	}
	for n := 0; ; n++ {
		if !elem(n) || d.err != nil {
			return d.fail()
		}
		switch d.Peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return true
		default:
			return d.fail()
		}
	}
}

// Null reads a null if one is next and reports whether it did.
func (d *Decoder) Null() bool {
	if d.Peek() == 'n' {
		if bytes.HasPrefix(d.data[d.i:], []byte("null")) {
			d.i += 4
			return true
		}
		d.fail()
	}
	return false
}

// String reads a string; null reads as "", with isNull true.
func (d *Decoder) String() (s string, isNull, ok bool) {
	b, isNull, ok := d.StringBytes()
	if !ok {
		return "", false, false
	}
	return string(b), isNull, true
}

// StringUnsafe is String without the copy: the string shares memory with the data
// or the Decoder's scratch, so it is valid only until the next call on d and while
// the data is unchanged.
func (d *Decoder) StringUnsafe() (s string, isNull, ok bool) {
	b, isNull, ok := d.StringBytes()
	return unsafe.String(unsafe.SliceData(b), len(b)), isNull, ok
}

// StringBytes is String without the copy: the bytes are valid until the next call.
func (d *Decoder) StringBytes() (b []byte, isNull, ok bool) {
	if d.err != nil {
		return nil, false, false
	}
	if d.Null() {
		return nil, true, true
	}
	if d.err != nil || d.Peek() != '"' {
		return nil, false, d.fail()
	}
	d.i++
	first := true
	for {
		// The run up to the next quote, backslash or control character.
		j, high := runEnd(d.data, d.i)
		if j >= len(d.data) {
			return nil, false, d.fail()
		}
		run := d.data[d.i:j]
		valid := !high || utf8.Valid(run)
		if first && valid && d.data[j] == '"' {
			d.i = j + 1
			return run, false, true // no escapes: no copy
		}
		if first {
			d.scratch = d.scratch[:0]
			first = false
		}
		if valid {
			d.scratch = append(d.scratch, run...)
		} else {
			d.scratch = appendValid(d.scratch, run)
		}
		d.i = j
		switch c := d.data[j]; {
		case c == '"':
			d.i++
			return d.scratch, false, true
		case c < 0x20:
			return nil, false, d.fail()
		}
		if !d.escape() {
			return nil, false, false
		}
	}
}

// appendValid appends run with each invalid UTF-8 byte replaced by U+FFFD, as
// encoding/json decodes it.
func appendValid(b, run []byte) []byte {
	for i := 0; i < len(run); {
		r, size := utf8.DecodeRune(run[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, run[i:i+size]...)
		}
		i += size
	}
	return b
}

// escape decodes the escape at d.i (a backslash) into d.scratch.
func (d *Decoder) escape() bool {
	if d.i+1 >= len(d.data) {
		return d.fail()
	}
	c := d.data[d.i+1]
	d.i += 2
	switch c {
	case '"', '\\', '/':
		d.scratch = append(d.scratch, c)
	case 'b':
		d.scratch = append(d.scratch, '\b')
	case 'f':
		d.scratch = append(d.scratch, '\f')
	case 'n':
		d.scratch = append(d.scratch, '\n')
	case 'r':
		d.scratch = append(d.scratch, '\r')
	case 't':
		d.scratch = append(d.scratch, '\t')
	case 'u':
		r, ok := d.hex4()
		if !ok {
			return false
		}
		if utf16.IsSurrogate(r) {
			// As encoding/json: a valid pair combines, anything else is U+FFFD.
			if d.i+1 < len(d.data) && d.data[d.i] == '\\' && d.data[d.i+1] == 'u' {
				save := d.i
				d.i += 2
				r2, ok := d.hex4()
				if !ok {
					return false
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					d.scratch = utf8.AppendRune(d.scratch, dec)
					return true
				}
				d.i = save
			}
			r = utf8.RuneError
		}
		d.scratch = utf8.AppendRune(d.scratch, r)
	default:
		return d.fail()
	}
	return true
}

func (d *Decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.data) {
		return 0, d.fail()
	}
	var r rune
	for _, c := range d.data[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, d.fail()
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}

// number returns the raw bytes of the number at d.i, checked against the JSON grammar.
func (d *Decoder) number() ([]byte, bool) {
	d.ws()
	start := d.i
	if d.i < len(d.data) && d.data[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.data) && d.data[d.i] == '0':
		d.i++
	case d.i < len(d.data) && d.data[d.i] >= '1' && d.data[d.i] <= '9':
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
		}
	default:
		return nil, d.fail()
	}
	if d.i < len(d.data) && d.data[d.i] == '.' {
		d.i++
		if !d.digits() {
			return nil, false
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		if !d.digits() {
			return nil, false
		}
	}
	return d.data[start:d.i], true
}

func (d *Decoder) digits() bool {
	start := d.i
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
	}
	if d.i == start {
		return d.fail()
	}
	return true
}

// Int reads an integer (null reads as 0). A fraction, exponent or overflow is refused.
func (d *Decoder) Int() (int64, bool) {
	if d.err != nil {
		return 0, false
	}
	if d.Null() {
		return 0, true
	}
	raw, ok := d.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, d.fail()
	}
	return n, true
}

// Float reads a number; isNull is true for null.
func (d *Decoder) Float() (f float64, isNull, ok bool) {
	if d.err != nil {
		return 0, false, false
	}
	if d.Null() {
		return 0, true, true
	}
	raw, ok := d.number()
	if !ok {
		return 0, false, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, false, d.fail()
	}
	return f, false, true
}

// Bool reads true or false (null reads as false).
func (d *Decoder) Bool() (bool, bool) {
	if d.err != nil {
		return false, false
	}
	switch d.Peek() {
	case 't':
		if bytes.HasPrefix(d.data[d.i:], []byte("true")) {
			d.i += 4
			return true, true
		}
	case 'f':
		if bytes.HasPrefix(d.data[d.i:], []byte("false")) {
			d.i += 5
			return false, true
		}
	case 'n':
		if d.Null() {
			return false, true
		}
	}
	return false, d.fail()
}

// Raw reads any value and returns its bytes (valid as long as the data).
func (d *Decoder) Raw() ([]byte, bool) {
	d.ws()
	start := d.i
	if !d.Skip() {
		return nil, false
	}
	return d.data[start:d.i], true
}

// Skip reads any value, checking its syntax, and drops it.
func (d *Decoder) Skip() bool {
	return d.skip(0)
}

const maxDepth = 512

func (d *Decoder) skip(depth int) bool {
	if d.err != nil {
		return false
	}
	if depth > maxDepth {
		return d.fail()
	}
	switch d.Peek() {
	case '{':
		return d.Object(func([]byte) bool { return d.skip(depth + 1) })
	case '[':
		return d.Array(func(int) bool { return d.skip(depth + 1) })
	case '"':
		return d.skipString()
	case 't', 'f':
		_, ok := d.Bool()
		return ok
	case 'n':
		if d.Null() {
			return true
		}
		return d.fail()
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		_, ok := d.number()
		return ok
	}
	return d.fail()
}

// skipString checks a string without decoding it.
func (d *Decoder) skipString() bool {
	d.i++ // the quote
	for {
		j, _ := runEnd(d.data, d.i)
		if j >= len(d.data) {
			return d.fail()
		}
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return true
		case c < 0x20:
			return d.fail()
		}
		// A backslash.
		if j+1 >= len(d.data) {
			return d.fail()
		}
		switch d.data[j+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			d.i = j + 2
		case 'u':
			d.i = j + 2
			if _, ok := d.hex4(); !ok {
				return false
			}
		default:
			return d.fail()
		}
	}
}

// runEnd returns the index of the first quote, backslash or control character in
// data at or after i, or len(data), and whether the run before it has a non-ASCII
// byte. It looks at eight bytes at a time, each byte once.
func runEnd(data []byte, i int) (int, bool) {
	var high uint64
	j := i
	for j+8 <= len(data) {
		x := load8b(data, j)
		if special(x) != 0 {
			break
		}
		high |= x
		j += 8
	}
	for ; j < len(data); j++ {
		c := data[j]
		if c == '"' || c == '\\' || c < 0x20 {
			return j, high&highs != 0
		}
		high |= uint64(c)
	}
	return len(data), high&highs != 0
}
