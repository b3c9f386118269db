package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
)

// Limits of the stage 1 fields, in characters (runes). Longer values are cut.
const (
	MaxPrimaryMeaning = 200
	MaxOtherMeanings  = 500
	MaxMetaphor       = 300
	MaxAnchorSensory  = 200
	MaxExplanation    = 500
	MaxHomonyms       = 5
	MaxKoreanKeywords = 10
	// MaxCards caps the cards of one item; extra cards are dropped.
	MaxCards = 10
)

// ErrInvalidAnswer is matched (errors.Is) by every error ParseStage1 and ParseStage2
// return. Such errors are transient: asking again, a bounded number of times, usually
// gets a valid answer.
var ErrInvalidAnswer = errors.New("invalid answer")

// InvalidAnswerError says which field of which stage's answer is wrong.
type InvalidAnswerError struct {
	Stage  string // "stage1" or "stage2"
	Field  string // e.g. "primary_meaning", "cards[1].tab_name"; "" for the whole answer
	Reason string
}

func (e *InvalidAnswerError) Error() string {
	if e.Field == "" {
		return "invalid " + e.Stage + " answer: " + e.Reason
	}
	return "invalid " + e.Stage + " answer: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidAnswer) true.
func (e *InvalidAnswerError) Is(target error) bool { return target == ErrInvalidAnswer }

func invalid(stage, field, format string, args ...any) error {
	return flashpipe.AsTransient(&InvalidAnswerError{Stage: stage, Field: field, Reason: fmt.Sprintf(format, args...)})
}

// errNotThis tells findJSON that a candidate is JSON but not the value wanted.
var errNotThis = errors.New("not the wanted JSON value")

// findJSON finds the outermost JSON value in s that decode accepts: s itself when it
// is JSON (the usual case with structured outputs), else the first balanced {...} (or
// [...] when arrays is set) that decodes, skipping fences and prose around it. what
// names the value in the error when none is found.
func findJSON(stage, what, s string, arrays bool, decode func(string) error) error {
	t := strings.TrimSpace(s)
	if t == "" {
		return invalid(stage, "", "empty answer")
	}
	soft := func(err error) bool {
		var se *json.SyntaxError
		return errors.As(err, &se) || errors.Is(err, errNotThis)
	}
	if t[0] == '{' || (arrays && t[0] == '[') {
		err := decode(t)
		if err == nil {
			return nil
		}
		if !soft(err) {
			return typeError(stage, err)
		}
	}
	var firstErr error
	for start, tries := 0, 0; start < len(t) && tries < 32; tries++ {
		i := indexOpen(t[start:], arrays)
		if i < 0 {
			break
		}
		i += start
		end := matchClose(t, i)
		if end < 0 {
			break // unbalanced from here on: nothing later can close either
		}
		err := decode(t[i : end+1])
		if err == nil {
			return nil
		}
		if !soft(err) && firstErr == nil {
			firstErr = err
		}
		start = i + 1
	}
	if firstErr != nil {
		return typeError(stage, firstErr)
	}
	return invalid(stage, "", "no %s found in %q", what, clip(t, 80))
}

func indexOpen(s string, arrays bool) int {
	if !arrays {
		return strings.IndexByte(s, '{')
	}
	return strings.IndexAny(s, "{[")
}

// matchClose returns the index of the bracket closing the one at s[i], or -1.
func matchClose(s string, i int) int {
	depth := 0
	inString := false
	for j := i; j < len(s); j++ {
		c := s[j]
		if inString {
			switch c {
			case '\\':
				j++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

func typeError(stage string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return invalid(stage, field, "is a JSON %s, want %s", te.Value, te.Type)
	}
	return invalid(stage, "", "%v", err)
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}

// Truncate cuts s to at most n runes.
func Truncate(s string, n int) string {
	if len(s) <= n { // bytes >= runes
		return s
	}
	count := 0
	for i := range s {
		if count == n {
			return strings.TrimRightFunc(s[:i], unicode.IsSpace)
		}
		count++
	}
	return s
}

// rawAnalysis decodes a stage 1 answer; pointers tell missing (nil) from empty.
type rawAnalysis struct {
	TermNumber        json.RawMessage       `json:"term_number"`
	Term              *string               `json:"term"`
	IPA               *string               `json:"ipa"`
	POS               *string               `json:"pos"`
	PrimaryMeaning    *string               `json:"primary_meaning"`
	OtherMeanings     *string               `json:"other_meanings"`
	Metaphor          *string               `json:"metaphor"`
	MetaphorNoun      *string               `json:"metaphor_noun"`
	MetaphorAction    *string               `json:"metaphor_action"`
	SuggestedLocation *string               `json:"suggested_location"`
	AnchorObject      *string               `json:"anchor_object"`
	AnchorSensory     *string               `json:"anchor_sensory"`
	Explanation       *string               `json:"explanation"`
	UsageContext      *string               `json:"usage_context"`
	Comparison        *flashpipe.Comparison `json:"comparison"`
	Homonyms          []flashpipe.Homonym   `json:"homonyms"`
	KoreanKeywords    *[]string             `json:"korean_keywords"`
}

// ParseStage1 reads a stage 1 answer for it: the JSON object in content (raw, in a
// ``` fence, or among prose), checked and normalised: required fields present and
// non-empty, term_number set to it's position, term carrying its pronunciation, an
// unknown pos made "unknown", null homonyms made [], long texts and lists cut to the
// limits. An unusable answer returns an error wrapping ErrInvalidAnswer (transient).
func ParseStage1(content string, it flashpipe.Item) (*flashpipe.Analysis, error) {
	const stage = "stage1"
	var r rawAnalysis
	err := findJSON(stage, "JSON object", content, false, func(s string) error {
		if decodeStage1Fast(s, &r) {
			return nil
		}
		r = rawAnalysis{}
		return json.Unmarshal([]byte(s), &r)
	})
	if err != nil {
		return nil, err
	}
	required := []struct {
		name string
		v    *string
	}{
		{"term", r.Term}, {"ipa", r.IPA}, {"pos", r.POS}, {"primary_meaning", r.PrimaryMeaning},
		{"metaphor", r.Metaphor}, {"metaphor_noun", r.MetaphorNoun}, {"metaphor_action", r.MetaphorAction},
		{"suggested_location", r.SuggestedLocation}, {"anchor_object", r.AnchorObject},
		{"anchor_sensory", r.AnchorSensory}, {"explanation", r.Explanation},
	}
	for _, f := range required {
		if f.v == nil {
			return nil, invalid(stage, f.name, "missing")
		}
		if strings.TrimSpace(*f.v) == "" {
			return nil, invalid(stage, f.name, "empty")
		}
	}
	if r.KoreanKeywords == nil {
		return nil, invalid(stage, "korean_keywords", "missing")
	}

	a := &flashpipe.Analysis{
		TermNumber:        it.Position,
		IPA:               cleanIPA(*r.IPA),
		POS:               normalizePOS(*r.POS),
		PrimaryMeaning:    Truncate(clean(*r.PrimaryMeaning), MaxPrimaryMeaning),
		OtherMeanings:     optional(r.OtherMeanings, MaxOtherMeanings),
		Metaphor:          Truncate(clean(*r.Metaphor), MaxMetaphor),
		MetaphorNoun:      clean(*r.MetaphorNoun),
		MetaphorAction:    clean(*r.MetaphorAction),
		SuggestedLocation: clean(*r.SuggestedLocation),
		AnchorObject:      clean(*r.AnchorObject),
		AnchorSensory:     Truncate(clean(*r.AnchorSensory), MaxAnchorSensory),
		Explanation:       Truncate(clean(*r.Explanation), MaxExplanation),
		UsageContext:      optional(r.UsageContext, 0),
		Homonyms:          []flashpipe.Homonym{},
		KoreanKeywords:    []string{},
	}
	if a.IPA == "" {
		return nil, invalid(stage, "ipa", "empty")
	}
	a.Term = termWithPronunciation(clean(*r.Term), it.Term, a.IPA)
	if c := r.Comparison; c != nil {
		vs, nuance := clean(c.Vs), clean(c.Nuance)
		if vs != "" || nuance != "" {
			a.Comparison = &flashpipe.Comparison{Vs: vs, Nuance: nuance}
		}
	}
	for _, h := range r.Homonyms {
		h = flashpipe.Homonym{Hanja: clean(h.Hanja), Reading: clean(h.Reading), Meaning: clean(h.Meaning), Differentiator: clean(h.Differentiator)}
		if h == (flashpipe.Homonym{}) {
			continue
		}
		if len(a.Homonyms) == MaxHomonyms {
			break
		}
		a.Homonyms = append(a.Homonyms, h)
	}
	for _, k := range *r.KoreanKeywords {
		if k = clean(k); k == "" {
			continue
		}
		if len(a.KoreanKeywords) == MaxKoreanKeywords {
			break
		}
		a.KoreanKeywords = append(a.KoreanKeywords, k)
	}
	return a, nil
}

func clean(s string) string { return strings.TrimSpace(s) }

func optional(p *string, max int) *string {
	if p == nil {
		return nil
	}
	s := clean(*p)
	if s == "" || s == "null" {
		return nil
	}
	if max > 0 {
		s = Truncate(s, max)
	}
	return &s
}

func cleanIPA(s string) string {
	s = strings.TrimSpace(s)
	for len(s) >= 2 && ((s[0] == '/' && s[len(s)-1] == '/') || (s[0] == '[' && s[len(s)-1] == ']')) {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

func normalizePOS(s string) string {
	p := flashpipe.NormalizeType(s)
	if !flashpipe.IsKnownType(p) {
		return flashpipe.TypeUnknown
	}
	return p
}

// termWithPronunciation returns the answer's term when it is the item's term followed
// by a bracketed pronunciation, else the item's term with the IPA in brackets.
func termWithPronunciation(answer, term, ipa string) string {
	term = strings.TrimSpace(term)
	if i := strings.IndexByte(answer, '['); i > 0 && strings.HasSuffix(answer, "]") && len(answer) > i+2 &&
		strings.TrimSpace(answer[:i]) == term {
		return answer
	}
	return term + "[" + ipa + "]"
}

// CanonicalAnalysis returns a copy of a in the form ParseStage1 produces: trimmed,
// cut to the limits, nil lists as empty ones, empty optionals as nil, pos normalised.
// Stage2Key hashes it, so equal analyses give equal keys however they were built.
func CanonicalAnalysis(a *flashpipe.Analysis) flashpipe.Analysis {
	c := *a
	c.Term = clean(c.Term)
	c.IPA = cleanIPA(c.IPA)
	c.POS = normalizePOS(c.POS)
	c.PrimaryMeaning = Truncate(clean(c.PrimaryMeaning), MaxPrimaryMeaning)
	c.OtherMeanings = optional(c.OtherMeanings, MaxOtherMeanings)
	c.Metaphor = Truncate(clean(c.Metaphor), MaxMetaphor)
	c.MetaphorNoun = clean(c.MetaphorNoun)
	c.MetaphorAction = clean(c.MetaphorAction)
	c.SuggestedLocation = clean(c.SuggestedLocation)
	c.AnchorObject = clean(c.AnchorObject)
	c.AnchorSensory = Truncate(clean(c.AnchorSensory), MaxAnchorSensory)
	c.Explanation = Truncate(clean(c.Explanation), MaxExplanation)
	c.UsageContext = optional(c.UsageContext, 0)
	if a.Comparison != nil {
		cmp := flashpipe.Comparison{Vs: clean(a.Comparison.Vs), Nuance: clean(a.Comparison.Nuance)}
		c.Comparison = nil
		if cmp != (flashpipe.Comparison{}) {
			c.Comparison = &cmp
		}
	}
	c.Homonyms = make([]flashpipe.Homonym, 0, len(a.Homonyms))
	for _, h := range a.Homonyms {
		h = flashpipe.Homonym{Hanja: clean(h.Hanja), Reading: clean(h.Reading), Meaning: clean(h.Meaning), Differentiator: clean(h.Differentiator)}
		if h != (flashpipe.Homonym{}) && len(c.Homonyms) < MaxHomonyms {
			c.Homonyms = append(c.Homonyms, h)
		}
	}
	c.KoreanKeywords = make([]string, 0, len(a.KoreanKeywords))
	for _, k := range a.KoreanKeywords {
		if k = clean(k); k != "" && len(c.KoreanKeywords) < MaxKoreanKeywords {
			c.KoreanKeywords = append(c.KoreanKeywords, k)
		}
	}
	return c
}

// Card tabs.
const (
	TabScene           = "Scene"
	TabUsageComparison = "Usage-Comparison"
	TabHanja           = "Hanja"
	TabGrammar         = "Grammar"
	TabFormalCasual    = "Formal-Casual"
	TabExample         = "Example"
	TabCultural        = "Cultural"
)

// Tabs returns the card tabs stage 2 may write, in their usual order.
func Tabs() []string {
	return []string{TabScene, TabUsageComparison, TabHanja, TabGrammar, TabFormalCasual, TabExample, TabCultural}
}

// DefaultTabs returns the three tabs stage 2 usually writes, in order.
func DefaultTabs() []string { return []string{TabScene, TabUsageComparison, TabHanja} }

// normalizeTab maps a tab name, ignoring case, spaces, '-' and '_', to its canonical
// spelling; ok is false for unknown tabs.
func normalizeTab(s string) (string, bool) {
	var b [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '-' || c == '_' || c == '\t':
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		if n == len(b) {
			return "", false
		}
		b[n] = c
		n++
	}
	switch string(b[:n]) {
	case "scene":
		return TabScene, true
	case "usagecomparison":
		return TabUsageComparison, true
	case "hanja":
		return TabHanja, true
	case "grammar":
		return TabGrammar, true
	case "formalcasual":
		return TabFormalCasual, true
	case "example":
		return TabExample, true
	case "cultural":
		return TabCultural, true
	}
	return "", false
}

// Primer returns the fixed memory-palace walk to a card's tab: it names the part of
// speech in capitals, the term number and the term.
func Primer(pos string, termNumber int64, term, tab string) string {
	pos = strings.ToUpper(normalizePOS(pos))
	var sb strings.Builder
	sb.Grow(96 + len(term) + len(tab))
	sb.WriteString("Enter the memory palace, walk down the ")
	sb.WriteString(pos)
	sb.WriteString(" hall to room ")
	sb.WriteString(strconv.FormatInt(termNumber, 10))
	sb.WriteString(", where ")
	sb.WriteString(strings.TrimSpace(term))
	sb.WriteString(" waits, and open the ")
	sb.WriteString(tab)
	sb.WriteString(" tab.")
	return sb.String()
}

// cardPOS is the part of speech written on it's cards: the analysis's, else the
// item's type.
func cardPOS(it flashpipe.Item, a *flashpipe.Analysis) string {
	if a != nil && a.POS != "" {
		return normalizePOS(a.POS)
	}
	return normalizePOS(it.Type)
}

type rawCard struct {
	TabName        *string `json:"tab_name"`
	Primer         *string `json:"primer"`
	Front          *string `json:"front"`
	Back           *string `json:"back"`
	Tags           *string `json:"tags"`
	HonorificLevel *string `json:"honorific_level"`
}

type rawCards struct {
	Cards *[]rawCard `json:"cards"`
	// A lone card instead of a list.
	TabName *string `json:"tab_name"`
}

// ParseStage2 reads a stage 2 answer for it and its analysis a (which may be nil):
// the {"cards":[...]} object in content (raw, fenced, among prose; a bare array of
// cards is accepted too), checked and normalised: at least one card; each with a known
// tab_name (canonical spelling), a front and a back; honorific_level one of formal,
// casual, neutral or "" (anything else becomes ""); tags always starting with term:
// and pos:; primers stamped from the item (see StampCards). An unusable answer returns
// an error wrapping ErrInvalidAnswer (transient).
func ParseStage2(content string, it flashpipe.Item, a *flashpipe.Analysis) ([]flashpipe.Card, error) {
	const stage = "stage2"
	var list []rawCard
	err := findJSON(stage, `{"cards": [...]} object`, content, true, func(s string) error {
		if s[0] == '[' {
			list = nil
			return json.Unmarshal([]byte(s), &list)
		}
		if decodeStage2Fast(s, &list) {
			return nil
		}
		var rc rawCards
		if err := json.Unmarshal([]byte(s), &rc); err != nil {
			return err
		}
		switch {
		case rc.Cards != nil:
			list = *rc.Cards
		case rc.TabName != nil:
			var one rawCard
			if err := json.Unmarshal([]byte(s), &one); err != nil {
				return err
			}
			list = []rawCard{one}
		default:
			return errNotThis // keep looking
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, invalid(stage, "cards", "no cards")
	}
	if len(list) > MaxCards {
		list = list[:MaxCards]
	}
	cards := make([]flashpipe.Card, 0, len(list))
	for i, rc := range list {
		field := func(name string) string { return "cards[" + strconv.Itoa(i) + "]." + name }
		if rc.TabName == nil {
			return nil, invalid(stage, field("tab_name"), "missing")
		}
		tab, ok := normalizeTab(*rc.TabName)
		if !ok {
			return nil, invalid(stage, field("tab_name"), "%q is not one of %s", clip(*rc.TabName, 40), strings.Join(Tabs(), ", "))
		}
		if rc.Front == nil || clean(*rc.Front) == "" {
			return nil, invalid(stage, field("front"), "missing or empty")
		}
		if rc.Back == nil || clean(*rc.Back) == "" {
			return nil, invalid(stage, field("back"), "missing or empty")
		}
		c := flashpipe.Card{
			TabName: tab,
			Front:   clean(*rc.Front),
			Back:    clean(*rc.Back),
		}
		if rc.Primer != nil {
			c.Primer = clean(*rc.Primer)
		}
		if rc.Tags != nil {
			c.Tags = *rc.Tags
		}
		if rc.HonorificLevel != nil {
			c.HonorificLevel = normalizeHonorific(*rc.HonorificLevel)
		}
		cards = append(cards, c)
	}
	StampCards(cards, it, a)
	return cards, nil
}

func normalizeHonorific(s string) string {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "formal", "casual", "neutral":
		return s
	}
	return ""
}

// StampCards sets the parts of cards that depend on the item rather than on the
// model: each primer (Primer of the card's tab, with it's position) and the term: and
// pos: tags. ParseStage2 calls it; call it again when reusing cards (or a cached
// answer) for another item with the same cache key.
func StampCards(cards []flashpipe.Card, it flashpipe.Item, a *flashpipe.Analysis) {
	pos := cardPOS(it, a)
	for i := range cards {
		cards[i].Primer = Primer(pos, it.Position, it.Term, cards[i].TabName)
		cards[i].Tags = NormalizeTags(cards[i].Tags, it.Term, pos)
	}
}

// NormalizeTags returns tags (comma-separated key:value pairs) starting with
// term:<term> and pos:<pos>, replacing any term: or pos: pairs in tags; empty tags are
// dropped, duplicates kept once, and spaces inside a tag become '_'.
func NormalizeTags(tags, term, pos string) string {
	var sb strings.Builder
	sb.Grow(len(tags) + len(term) + len(pos) + 12)
	sb.WriteString("term:")
	writeTag(&sb, term)
	sb.WriteString(",pos:")
	writeTag(&sb, pos)
	var seen [16]string
	n := 0
	for tags != "" {
		var t string
		t, tags, _ = strings.Cut(tags, ",")
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		key, _, _ := strings.Cut(t, ":")
		if k := strings.TrimSpace(key); strings.EqualFold(k, "term") || strings.EqualFold(k, "pos") {
			continue
		}
		dup := false
		for _, s := range seen[:n] {
			if s == t {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if n < len(seen) {
			seen[n] = t
			n++
		}
		sb.WriteByte(',')
		writeTag(&sb, t)
	}
	return sb.String()
}

func isSpaceOrComma(r rune) bool { return r == ',' || unicode.IsSpace(r) }

// writeTag writes s with whitespace runs as '_' and commas removed.
func writeTag(sb *strings.Builder, s string) {
	s = strings.TrimSpace(s)
	if strings.IndexFunc(s, isSpaceOrComma) < 0 {
		sb.WriteString(s)
		return
	}
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = true
			continue
		case r == ',':
			continue
		}
		if space {
			sb.WriteByte('_')
			space = false
		}
		sb.WriteRune(r)
	}
}
