package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// The machine-readable input block that ends every user message.
const (
	inputOpen  = "Input:\n```json\n"
	inputClose = "\n```"
)

// Input is the machine-readable input of a stage's user message.
type Input struct {
	TermNumber int64  `json:"term_number"`
	Term       string `json:"term"`
	Type       string `json:"type"`
	// Analysis is the stage 1 result given to stage 2; nil in stage 1.
	Analysis *flashpipe.Analysis `json:"analysis,omitempty"`
}

// Stage returns 2 for a stage 2 input (one with an analysis), else 1.
func (in Input) Stage() int {
	if in.Analysis != nil {
		return 2
	}
	return 1
}

// ErrNoInput is returned by DecodeInput for a message without an input block.
var ErrNoInput = errors.New("stages: message has no input block")

// DecodeInput reads the input block that ends a user message built by Stage1Request
// or Stage2Request.
func DecodeInput(userContent string) (Input, error) {
	rest, j, ok := inputJSON(userContent)
	if !ok {
		i := strings.LastIndex(userContent, inputOpen)
		if i < 0 {
			return Input{}, ErrNoInput
		}
		rest = userContent[i+len(inputOpen):]
		if j = strings.LastIndex(rest, inputClose); j < 0 {
			return Input{}, fmt.Errorf("%w: unterminated input block", ErrNoInput)
		}
	}
	var in Input
	if !decodeInputFast(rest[:j], &in) {
		in = Input{}
		if err := json.Unmarshal([]byte(rest[:j]), &in); err != nil {
			return Input{}, fmt.Errorf("stages: decoding input block: %w", err)
		}
	}
	if strings.TrimSpace(in.Term) == "" {
		return Input{}, errors.New("stages: input block has no term")
	}
	return in, nil
}

// inputJSON finds the input block the way the request builders write it: the message
// ends with "\n```", the line before is the JSON (JSON has no raw newlines) and the
// text before that ends with "Input:\n```json\n". It returns rest, with the JSON at
// rest[:j]. Anything else: ok is false and DecodeInput searches the slow way.
func inputJSON(s string) (rest string, j int, ok bool) {
	if !strings.HasSuffix(s, inputClose) {
		return "", 0, false
	}
	body := s[:len(s)-len(inputClose)]
	nl := strings.LastIndexByte(body, '\n')
	if nl < 0 || !strings.HasSuffix(body[:nl+1], inputOpen) {
		return "", 0, false
	}
	return s[nl+1:], len(body) - nl - 1, true
}

// appendInputBlock appends the input block for it (and a, in stage 2) to b.
func appendInputBlock(b []byte, it flashpipe.Item, a *flashpipe.Analysis) []byte {
	b = append(b, inputOpen...)
	b = append(b, `{"term_number":`...)
	b = strconv.AppendInt(b, it.Position, 10)
	b = append(b, `,"term":`...)
	b = wire.AppendString(b, it.Term)
	b = append(b, `,"type":`...)
	b = wire.AppendString(b, flashpipe.NormalizeType(it.Type))
	if a != nil {
		b = append(b, `,"analysis":`...)
		b = appendAnalysis(b, a)
	}
	b = append(b, '}')
	return append(b, inputClose...)
}

// appendAnalysis appends a's JSON exactly as encoding/json encodes it with HTML
// escaping off (tested), without reflection: it is on the hot path of every stage 2
// request and cache key.
func appendAnalysis(b []byte, a *flashpipe.Analysis) []byte {
	str := func(b []byte, k, v string) []byte {
		b = append(b, k...)
		return wire.AppendString(b, v)
	}
	opt := func(b []byte, k string, v *string) []byte {
		b = append(b, k...)
		if v == nil {
			return append(b, "null"...)
		}
		return wire.AppendString(b, *v)
	}
	b = append(b, `{"term_number":`...)
	b = strconv.AppendInt(b, a.TermNumber, 10)
	b = str(b, `,"term":`, a.Term)
	b = str(b, `,"ipa":`, a.IPA)
	b = str(b, `,"pos":`, a.POS)
	b = str(b, `,"primary_meaning":`, a.PrimaryMeaning)
	b = opt(b, `,"other_meanings":`, a.OtherMeanings)
	b = str(b, `,"metaphor":`, a.Metaphor)
	b = str(b, `,"metaphor_noun":`, a.MetaphorNoun)
	b = str(b, `,"metaphor_action":`, a.MetaphorAction)
	b = str(b, `,"suggested_location":`, a.SuggestedLocation)
	b = str(b, `,"anchor_object":`, a.AnchorObject)
	b = str(b, `,"anchor_sensory":`, a.AnchorSensory)
	b = str(b, `,"explanation":`, a.Explanation)
	b = opt(b, `,"usage_context":`, a.UsageContext)
	b = append(b, `,"comparison":`...)
	if c := a.Comparison; c == nil {
		b = append(b, "null"...)
	} else {
		b = str(b, `{"vs":`, c.Vs)
		b = str(b, `,"nuance":`, c.Nuance)
		b = append(b, '}')
	}
	b = append(b, `,"homonyms":`...)
	if a.Homonyms == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, h := range a.Homonyms {
			if i > 0 {
				b = append(b, ',')
			}
			b = str(b, `{"hanja":`, h.Hanja)
			b = str(b, `,"reading":`, h.Reading)
			b = str(b, `,"meaning":`, h.Meaning)
			b = str(b, `,"differentiator":`, h.Differentiator)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"korean_keywords":`...)
	if a.KoreanKeywords == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, k := range a.KoreanKeywords {
			if i > 0 {
				b = append(b, ',')
			}
			b = wire.AppendString(b, k)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}
