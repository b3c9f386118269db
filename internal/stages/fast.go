package stages

import (
	"bytes"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// Fast paths for the hot decodes (an answer, the input block) with wire.Decoder. Each
// returns false for anything it is not sure about (a type mismatch, odd key case,
// bad syntax) and the caller falls back to encoding/json, which then also produces
// the error message: the fast path changes the cost, never the result.

// Bits of analysisFields seen with a non-null value.
const (
	fTermNumber = 1 << iota
	fTerm
	fIPA
	fPOS
	fPrimaryMeaning
	fOtherMeanings
	fMetaphor
	fMetaphorNoun
	fMetaphorAction
	fSuggestedLocation
	fAnchorObject
	fAnchorSensory
	fExplanation
	fUsageContext
	fComparison
	fHomonyms
	fKoreanKeywords
)

var analysisKeys = []string{"term_number", "term", "ipa", "pos", "primary_meaning", "other_meanings",
	"metaphor", "metaphor_noun", "metaphor_action", "suggested_location", "anchor_object",
	"anchor_sensory", "explanation", "usage_context", "comparison", "homonyms", "korean_keywords"}

// foldsTo reports whether key matches one of names case-insensitively (encoding/json
// would fill that field).
func foldsTo(key []byte, names []string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// decodeAnalysisFast reads an analysis object into a, recording in seen which members
// had a non-null value.
func decodeAnalysisFast(d *wire.Decoder, a *flashpipe.Analysis, seen *uint32) bool {
	str := func(dst *string, bit uint32) bool {
		s, isNull, ok := d.String()
		if ok && !isNull {
			*dst = s
			*seen |= bit
		}
		return ok
	}
	optStr := func(dst **string, bit uint32) bool {
		s, isNull, ok := d.String()
		if ok && !isNull {
			*dst = &s
			*seen |= bit
		}
		return ok
	}
	return d.Object(func(k []byte) bool {
		switch string(k) {
		case "term_number":
			if d.Peek() == 'n' {
				return d.Null()
			}
			n, ok := d.Int()
			a.TermNumber = n
			*seen |= fTermNumber
			return ok
		case "term":
			return str(&a.Term, fTerm)
		case "ipa":
			return str(&a.IPA, fIPA)
		case "pos":
			return str(&a.POS, fPOS)
		case "primary_meaning":
			return str(&a.PrimaryMeaning, fPrimaryMeaning)
		case "other_meanings":
			return optStr(&a.OtherMeanings, fOtherMeanings)
		case "metaphor":
			return str(&a.Metaphor, fMetaphor)
		case "metaphor_noun":
			return str(&a.MetaphorNoun, fMetaphorNoun)
		case "metaphor_action":
			return str(&a.MetaphorAction, fMetaphorAction)
		case "suggested_location":
			return str(&a.SuggestedLocation, fSuggestedLocation)
		case "anchor_object":
			return str(&a.AnchorObject, fAnchorObject)
		case "anchor_sensory":
			return str(&a.AnchorSensory, fAnchorSensory)
		case "explanation":
			return str(&a.Explanation, fExplanation)
		case "usage_context":
			return optStr(&a.UsageContext, fUsageContext)
		case "comparison":
			if d.Null() {
				return true
			}
			c := new(flashpipe.Comparison)
			a.Comparison = c
			*seen |= fComparison
			return d.Object(func(k []byte) bool {
				var ok bool
				switch string(k) {
				case "vs":
					c.Vs, _, ok = d.String()
					return ok
				case "nuance":
					c.Nuance, _, ok = d.String()
					return ok
				}
				return !foldsTo(k, []string{"vs", "nuance"}) && d.Skip()
			})
		case "homonyms":
			if d.Null() {
				return true
			}
			*seen |= fHomonyms
			a.Homonyms = make([]flashpipe.Homonym, 0, 2)
			return d.Array(func(int) bool {
				if d.Peek() == 'n' { // encoding/json keeps a zero element
					a.Homonyms = append(a.Homonyms, flashpipe.Homonym{})
					return d.Null()
				}
				var h flashpipe.Homonym
				ok := d.Object(func(k []byte) bool {
					var ok bool
					switch string(k) {
					case "hanja":
						h.Hanja, _, ok = d.String()
						return ok
					case "reading":
						h.Reading, _, ok = d.String()
						return ok
					case "meaning":
						h.Meaning, _, ok = d.String()
						return ok
					case "differentiator":
						h.Differentiator, _, ok = d.String()
						return ok
					}
					return !foldsTo(k, []string{"hanja", "reading", "meaning", "differentiator"}) && d.Skip()
				})
				a.Homonyms = append(a.Homonyms, h)
				return ok
			})
		case "korean_keywords":
			if d.Null() {
				return true
			}
			*seen |= fKoreanKeywords
			a.KoreanKeywords = make([]string, 0, 8)
			return d.Array(func(int) bool {
				s, _, ok := d.String()
				a.KoreanKeywords = append(a.KoreanKeywords, s)
				return ok
			})
		}
		return !foldsTo(k, analysisKeys) && d.Skip()
	})
}

// rawFromFast turns a fast-decoded analysis into the rawAnalysis encoding/json would
// have produced.
func rawFromFast(a *flashpipe.Analysis, seen uint32) rawAnalysis {
	var r rawAnalysis
	set := func(bit uint32, v *string) *string {
		if seen&bit != 0 {
			return v
		}
		return nil
	}
	if seen&fTermNumber != 0 {
		r.TermNumber = []byte("0") // present; its value is never used
	}
	r.Term = set(fTerm, &a.Term)
	r.IPA = set(fIPA, &a.IPA)
	r.POS = set(fPOS, &a.POS)
	r.PrimaryMeaning = set(fPrimaryMeaning, &a.PrimaryMeaning)
	r.OtherMeanings = a.OtherMeanings
	r.Metaphor = set(fMetaphor, &a.Metaphor)
	r.MetaphorNoun = set(fMetaphorNoun, &a.MetaphorNoun)
	r.MetaphorAction = set(fMetaphorAction, &a.MetaphorAction)
	r.SuggestedLocation = set(fSuggestedLocation, &a.SuggestedLocation)
	r.AnchorObject = set(fAnchorObject, &a.AnchorObject)
	r.AnchorSensory = set(fAnchorSensory, &a.AnchorSensory)
	r.Explanation = set(fExplanation, &a.Explanation)
	r.UsageContext = a.UsageContext
	r.Comparison = a.Comparison
	r.Homonyms = a.Homonyms
	if seen&fKoreanKeywords != 0 {
		r.KoreanKeywords = &a.KoreanKeywords
	}
	return r
}

// decodeStage1Fast decodes a whole stage 1 answer object.
func decodeStage1Fast(s string, r *rawAnalysis) bool {
	var d wire.Decoder
	d.ResetString(s)
	var a flashpipe.Analysis
	var seen uint32
	if !decodeAnalysisFast(&d, &a, &seen) || !d.End() {
		return false
	}
	*r = rawFromFast(&a, seen)
	return true
}

// decodeInputFast decodes an input block's JSON.
func decodeInputFast(s string, in *Input) bool {
	var d wire.Decoder
	d.ResetString(s)
	ok := d.Object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "term_number":
			in.TermNumber, ok = d.Int()
			return ok
		case "term":
			in.Term, _, ok = d.String()
			return ok
		case "type":
			in.Type, _, ok = d.String()
			return ok
		case "analysis":
			if d.Null() {
				in.Analysis = nil
				return true
			}
			in.Analysis = new(flashpipe.Analysis)
			var seen uint32
			return decodeAnalysisFast(&d, in.Analysis, &seen)
		}
		return !foldsTo(k, []string{"term_number", "term", "type", "analysis"}) && d.Skip()
	})
	return ok && d.End()
}

var cardKeys = []string{"tab_name", "primer", "front", "back", "tags", "honorific_level"}

// decodeStage2Fast decodes a {"cards":[...]} answer (other shapes: encoding/json).
func decodeStage2Fast(s string, list *[]rawCard) bool {
	var d wire.Decoder
	d.ResetString(s)
	found := false
	ok := d.Object(func(k []byte) bool {
		if string(k) != "cards" {
			return !foldsTo(k, []string{"cards", "tab_name"}) && d.Skip()
		}
		if d.Peek() != '[' {
			return false
		}
		found = true
		cards := make([]rawCard, 0, 3)
		ok := d.Array(func(int) bool {
			var c rawCard
			ok := d.Object(func(k []byte) bool {
				var dst **string
				switch string(k) {
				case "tab_name":
					dst = &c.TabName
				case "primer":
					dst = &c.Primer
				case "front":
					dst = &c.Front
				case "back":
					dst = &c.Back
				case "tags":
					dst = &c.Tags
				case "honorific_level":
					dst = &c.HonorificLevel
				default:
					return !foldsTo(k, cardKeys) && d.Skip()
				}
				v, isNull, ok := d.String()
				if ok && !isNull {
					*dst = &v
				}
				return ok
			})
			cards = append(cards, c)
			return ok
		})
		*list = cards
		return ok
	})
	return ok && found && d.End()
}
