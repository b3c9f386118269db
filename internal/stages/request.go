package stages

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"strings"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// Defaults for Config.
const (
	DefaultModel       = "anthropic/claude-sonnet-4.6"
	DefaultTemperature = 0.3
	DefaultMaxTokens1  = 1500
	DefaultMaxTokens2  = 3000
)

// Config says how the two stages ask: models, sampling, structured outputs, prompts.
// Start from DefaultConfig: the zero value of a field means its default, except
// StructuredOutputs, whose zero value (false) turns structured outputs off.
type Config struct {
	// Model1 and Model2 are the models of stage 1 and 2 (DefaultModel).
	Model1, Model2 string
	// Temperature (DefaultTemperature when zero; negative: not sent, the model's
	// default applies).
	Temperature float64
	// MaxTokens1 and MaxTokens2 cap each stage's answer (DefaultMaxTokens1/2).
	MaxTokens1, MaxTokens2 int
	// StructuredOutputs sends the stage's JSON schema as response_format (strict).
	// DefaultConfig sets it; false sends no response_format and relies on the prompt.
	StructuredOutputs bool
	// Provider is OpenRouter's routing object, sent as is (nil: none). With
	// StructuredOutputs, {"require_parameters":true} keeps requests off providers
	// that would ignore the schema.
	Provider json.RawMessage
	// Prompts are the prompt templates (zero value: DefaultPrompts).
	Prompts Prompts
}

// DefaultConfig returns the defaults, with structured outputs on.
func DefaultConfig() Config {
	return Config{
		Model1:            DefaultModel,
		Model2:            DefaultModel,
		Temperature:       DefaultTemperature,
		MaxTokens1:        DefaultMaxTokens1,
		MaxTokens2:        DefaultMaxTokens2,
		StructuredOutputs: true,
		Prompts:           DefaultPrompts(),
	}
}

func (c Config) withDefaults() Config {
	if c.Model1 == "" {
		c.Model1 = DefaultModel
	}
	if c.Model2 == "" {
		c.Model2 = DefaultModel
	}
	if c.Temperature == 0 {
		c.Temperature = DefaultTemperature
	}
	if c.MaxTokens1 <= 0 {
		c.MaxTokens1 = DefaultMaxTokens1
	}
	if c.MaxTokens2 <= 0 {
		c.MaxTokens2 = DefaultMaxTokens2
	}
	return c
}

// Validate reports configuration errors, naming the field: models, temperature,
// token limits, the provider object and the prompt templates.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case strings.TrimSpace(c.Model1) != c.Model1:
		return fmt.Errorf("stages: Config.Model1 %q has surrounding spaces", c.Model1)
	case strings.TrimSpace(c.Model2) != c.Model2:
		return fmt.Errorf("stages: Config.Model2 %q has surrounding spaces", c.Model2)
	case math.IsNaN(c.Temperature) || c.Temperature > 2:
		return fmt.Errorf("stages: Config.Temperature %v is not in [0, 2]", c.Temperature)
	case len(c.Provider) > 0 && !json.Valid(c.Provider):
		return fmt.Errorf("stages: Config.Provider is not valid JSON")
	}
	if _, err := c.Prompts.Compile(); err != nil {
		return fmt.Errorf("stages: Config.Prompts: %w", err)
	}
	return nil
}

func (c *Config) temperature() *float64 {
	if c.Temperature < 0 {
		return nil
	}
	t := c.Temperature
	return &t
}

// Stage1Request returns the chat completion request of stage 1 for it.
func Stage1Request(cfg Config, it flashpipe.Item) llm.Request {
	cfg = cfg.withDefaults()
	p := cfg.Prompts.resolved()
	data := stage1Data(it)
	req := llm.Request{
		Model:       cfg.Model1,
		Messages:    messages(p, slotS1System, slotS1User, data, it, nil),
		Temperature: cfg.temperature(),
		MaxTokens:   cfg.MaxTokens1,
		Provider:    cfg.Provider,
	}
	if cfg.StructuredOutputs {
		req.ResponseFormat = &llm.ResponseFormat{Type: "json_schema", JSONSchema: &llm.JSONSchema{
			Name: Stage1SchemaName, Strict: true, Schema: stage1Schema}}
	}
	return req
}

// Stage2Request returns the chat completion request of stage 2 for it and its stage 1
// result a.
func Stage2Request(cfg Config, it flashpipe.Item, a *flashpipe.Analysis) llm.Request {
	cfg = cfg.withDefaults()
	p := cfg.Prompts.resolved()
	data := stage2Data(it, a)
	// The prompt carries the canonical analysis, the same Stage2Key hashes.
	var canon flashpipe.Analysis
	if a != nil {
		canon = CanonicalAnalysis(a)
	} else {
		canon = CanonicalAnalysis(&flashpipe.Analysis{Term: it.Term, POS: data.POS})
	}
	canon.TermNumber = it.Position
	a = &canon
	data.Analysis = a
	req := llm.Request{
		Model:       cfg.Model2,
		Messages:    messages(p, slotS2System, slotS2User, data, it, a),
		Temperature: cfg.temperature(),
		MaxTokens:   cfg.MaxTokens2,
		Provider:    cfg.Provider,
	}
	if cfg.StructuredOutputs {
		req.ResponseFormat = &llm.ResponseFormat{Type: "json_schema", JSONSchema: &llm.JSONSchema{
			Name: Stage2SchemaName, Strict: true, Schema: stage2Schema}}
	}
	return req
}

func messages(p *compiledPrompts, sysSlot, userSlot int, data *TemplateData, it flashpipe.Item, a *flashpipe.Analysis) []llm.Message {
	var sys string
	if p.isStatic[sysSlot] {
		sys = p.static[sysSlot] // shared, not copied
	} else {
		var sb strings.Builder
		p.render(&sb, sysSlot, data)
		sys = strings.TrimSpace(sb.String())
	}
	// The user message: the rendered template, a blank line, the input block.
	var buf bytes.Buffer
	buf.Grow(userSize(it, a))
	if p.isStatic[userSlot] {
		buf.WriteString(p.static[userSlot])
	} else {
		p.renderTo(&buf, userSlot, data)
	}
	b := bytes.TrimRight(buf.Bytes(), " \t\r\n")
	b = append(b, "\n\n"...)
	b = appendInputBlock(b, it, a)
	return []llm.Message{
		{Role: "system", Content: sys},
		{Role: "user", Content: string(b)},
	}
}

// userSize estimates the user message's length, so its buffer is allocated once.
func userSize(it flashpipe.Item, a *flashpipe.Analysis) int {
	n := 256 + 2*len(it.Term)
	if a != nil {
		n += 900 + 3*len(it.Term) + 480 + len(a.Term) + len(a.IPA) + len(a.PrimaryMeaning) + len(a.Metaphor) +
			len(a.MetaphorNoun) + len(a.MetaphorAction) + len(a.SuggestedLocation) + len(a.AnchorObject) +
			len(a.AnchorSensory) + len(a.Explanation)
		if a.OtherMeanings != nil {
			n += len(*a.OtherMeanings)
		}
		if a.UsageContext != nil {
			n += len(*a.UsageContext)
		}
		if a.Comparison != nil {
			n += 32 + len(a.Comparison.Vs) + len(a.Comparison.Nuance)
		}
		for _, h := range a.Homonyms {
			n += 64 + len(h.Hanja) + len(h.Reading) + len(h.Meaning) + len(h.Differentiator)
		}
		for _, k := range a.KoreanKeywords {
			n += 3 + len(k)
		}
		n += n / 8 // escapes
	}
	return n
}

// Stage1Key returns the cache key of it's stage 1 answer: a hex sha256 over the
// stage, the model, the prompt version, the term and the normalised type. The
// position is not part of it.
func Stage1Key(cfg Config, it flashpipe.Item) string {
	cfg = cfg.withDefaults()
	h := sha256.New()
	writeField(h, "flashpipe/cache/v1/stage1")
	writeField(h, cfg.Model1)
	v1, _ := cfg.Prompts.versions(cfg.Prompts.resolved())
	writeField(h, v1)
	writeField(h, strings.TrimSpace(it.Term))
	writeField(h, flashpipe.NormalizeType(it.Type))
	return hex.EncodeToString(h.Sum(nil))
}

// Stage2Key returns the cache key of the stage 2 answer for it and its stage 1 result
// a: a hex sha256 over the stage, the model, the prompt version, the term and the
// canonical JSON of a with its term_number left out. The position is not part of it.
func Stage2Key(cfg Config, it flashpipe.Item, a *flashpipe.Analysis) string {
	cfg = cfg.withDefaults()
	h := sha256.New()
	writeField(h, "flashpipe/cache/v1/stage2")
	writeField(h, cfg.Model2)
	_, v2 := cfg.Prompts.versions(cfg.Prompts.resolved())
	writeField(h, v2)
	writeField(h, strings.TrimSpace(it.Term))
	writeField(h, flashpipe.NormalizeType(it.Type))
	var canon []byte
	if a != nil {
		c := CanonicalAnalysis(a)
		c.TermNumber = 0
		canon = appendAnalysis(make([]byte, 0, 2048), &c)
	}
	h.Write(binary.AppendUvarint(nil, uint64(len(canon))))
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	h.Write([]byte(s))
}
