package stages

import (
	"bytes"
	"encoding/json"
)

// Schema names sent in response_format.json_schema.name.
const (
	Stage1SchemaName = "flashpipe_stage1"
	Stage2SchemaName = "flashpipe_stage2"
)

// The schemas are strict-mode compatible (OpenAI and Anthropic structured outputs):
// every object lists all its properties as required and sets additionalProperties
// false; optional fields are nullable instead. Length limits are not expressible in
// strict mode; the prompts state them and the parsers enforce them. Properties are in
// the order the model should write them.

const stage1SchemaSrc = `{
  "type": "object",
  "properties": {
    "term_number": {"type": "integer"},
    "term": {"type": "string"},
    "ipa": {"type": "string"},
    "pos": {"type": "string", "enum": ["noun", "verb", "adjective", "adverb", "particle", "pronoun", "determiner", "numeral", "interjection", "phrase", "unknown"]},
    "primary_meaning": {"type": "string"},
    "other_meanings": {"type": ["string", "null"]},
    "metaphor": {"type": "string"},
    "metaphor_noun": {"type": "string"},
    "metaphor_action": {"type": "string"},
    "suggested_location": {"type": "string"},
    "anchor_object": {"type": "string"},
    "anchor_sensory": {"type": "string"},
    "explanation": {"type": "string"},
    "usage_context": {"type": ["string", "null"]},
    "comparison": {
      "anyOf": [
        {
          "type": "object",
          "properties": {"vs": {"type": "string"}, "nuance": {"type": "string"}},
          "required": ["vs", "nuance"],
          "additionalProperties": false
        },
        {"type": "null"}
      ]
    },
    "homonyms": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "hanja": {"type": "string"},
          "reading": {"type": "string"},
          "meaning": {"type": "string"},
          "differentiator": {"type": "string"}
        },
        "required": ["hanja", "reading", "meaning", "differentiator"],
        "additionalProperties": false
      }
    },
    "korean_keywords": {"type": "array", "items": {"type": "string"}}
  },
  "required": ["term_number", "term", "ipa", "pos", "primary_meaning", "other_meanings", "metaphor", "metaphor_noun", "metaphor_action", "suggested_location", "anchor_object", "anchor_sensory", "explanation", "usage_context", "comparison", "homonyms", "korean_keywords"],
  "additionalProperties": false
}`

const stage2SchemaSrc = `{
  "type": "object",
  "properties": {
    "cards": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "tab_name": {"type": "string", "enum": ["Scene", "Usage-Comparison", "Hanja", "Grammar", "Formal-Casual", "Example", "Cultural"]},
          "primer": {"type": "string"},
          "front": {"type": "string"},
          "back": {"type": "string"},
          "tags": {"type": "string"},
          "honorific_level": {"type": "string", "enum": ["formal", "casual", "neutral", ""]}
        },
        "required": ["tab_name", "primer", "front", "back", "tags", "honorific_level"],
        "additionalProperties": false
      }
    }
  },
  "required": ["cards"],
  "additionalProperties": false
}`

func compactSchema(src string) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(src)); err != nil {
		panic("stages: schema: " + err.Error())
	}
	return b.Bytes()
}

// Compacted once; the request builders share these slices (never modified).
var (
	stage1Schema = compactSchema(stage1SchemaSrc)
	stage2Schema = compactSchema(stage2SchemaSrc)
)

// Stage1Schema returns the JSON schema of a stage 1 answer (a copy).
func Stage1Schema() json.RawMessage { return bytes.Clone(stage1Schema) }

// Stage2Schema returns the JSON schema of a stage 2 answer (a copy).
func Stage2Schema() json.RawMessage { return bytes.Clone(stage2Schema) }
