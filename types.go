package flashpipe

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// TypeUnknown is the part of speech of an item that gives none.
const TypeUnknown = "unknown"

// knownTypes are the parts of speech the prompts know by name.
var knownTypes = [...]string{
	"noun", "verb", "adjective", "adverb", "particle", "pronoun",
	"determiner", "numeral", "interjection", "phrase", TypeUnknown,
}

// KnownTypes returns the parts of speech the prompts know by name.
func KnownTypes() []string { return append([]string(nil), knownTypes[:]...) }

var typeAliases = map[string]string{
	"n":    "noun",
	"v":    "verb",
	"adj":  "adjective",
	"adv":  "adverb",
	"int":  "interjection",
	"phr":  "phrase",
	"part": "particle",
}

// NormalizeType maps a user-given part of speech to its canonical form: empty becomes
// "unknown", aliases (n, v, adj, adv, int, phr, part) become their full names, and
// anything else is trimmed and lower-cased.
func NormalizeType(t string) string {
	t = strings.ToLower(strings.TrimSpace(t))
	if t == "" {
		return TypeUnknown
	}
	if full, ok := typeAliases[t]; ok {
		return full
	}
	return t
}

// IsKnownType reports whether t (already normalised) is one of KnownTypes.
func IsKnownType(t string) bool {
	for _, k := range knownTypes {
		if t == k {
			return true
		}
	}
	return false
}

// CheckTerm returns a term as the pipeline takes it (trimmed), or why it cannot be
// one: not valid UTF-8, empty, holding a control character, or longer than
// MaxTermLength characters. Every door applies it: ingest to each row, the scheduler
// to each item published by any client.
func CheckTerm(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("term is not valid UTF-8")
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", errors.New("term is empty")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "", errors.New("term contains a control character")
	}
	if n := utf8.RuneCountInString(s); n > MaxTermLength {
		return "", fmt.Errorf("term has %d characters, the limit is %d", n, MaxTermLength)
	}
	return s, nil
}

// CheckType returns a part of speech normalised (NormalizeType), or why it cannot be
// one: not valid UTF-8, or holding a control character.
func CheckType(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("type is not valid UTF-8")
	}
	t := NormalizeType(s)
	if strings.IndexFunc(t, unicode.IsControl) >= 0 {
		return "", errors.New("type contains a control character")
	}
	return t, nil
}

// Check returns the item as the pipeline takes it (term trimmed, type normalised), or
// why it cannot be taken: a position below 1, a bad term or type.
func (it Item) Check() (Item, error) {
	if it.Position < 1 {
		return it, fmt.Errorf("position %d: want 1 or more", it.Position)
	}
	var err error
	if it.Term, err = CheckTerm(it.Term); err != nil {
		return it, err
	}
	if it.Type, err = CheckType(it.Type); err != nil {
		return it, err
	}
	return it, nil
}
