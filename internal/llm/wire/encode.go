package wire

import (
	"unicode/utf8"
	"unsafe"
)

// Eight bytes at a time: the tests below flag a word that may hold a byte needing
// attention (false positives only cost the byte-by-byte path, never correctness).
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

func load8(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

func load8b(b []byte, i int) uint64 {
	_ = b[i+7]
	return uint64(b[i]) | uint64(b[i+1])<<8 | uint64(b[i+2])<<16 | uint64(b[i+3])<<24 |
		uint64(b[i+4])<<32 | uint64(b[i+5])<<40 | uint64(b[i+6])<<48 | uint64(b[i+7])<<56
}

func hasZero(x uint64) uint64 { return (x - ones) & ^x & highs }

// special flags a word with a control character, a quote or a backslash.
func special(x uint64) uint64 {
	return (x-ones*0x20)&^x&highs | hasZero(x^(ones*'"')) | hasZero(x^(ones*'\\'))
}

const hexDigits = "0123456789abcdef"

// AppendString appends s to b as a JSON string, quoted and escaped as encoding/json
// does without HTML escaping: control characters, quote and backslash escaped (\n, \r,
// \t, \b, \f in short form), U+2028 and U+2029 escaped, each invalid UTF-8 byte
// replaced by U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = AppendEscaped(b, s)
	return append(b, '"')
}

// AppendBytes is AppendString for a byte slice.
func AppendBytes(b []byte, s []byte) []byte {
	return AppendString(b, unsafe.String(unsafe.SliceData(s), len(s)))
}

// AppendEscaped appends s escaped as the inside of a JSON string, without the quotes,
// so one string can be written in parts. One pass: eight plain ASCII bytes at a time,
// runes decoded only where a byte is not ASCII.
func AppendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			if x := load8(s, i); (special(x) | x&highs) == 0 {
				i += 8
				continue
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscape(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + 1
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			start = i + size
		}
		i += size
	}
	return append(b, s[start:]...)
}

func appendEscape(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}
