package flashpipe

import "strings"

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
