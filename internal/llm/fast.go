package llm

import (
	"bytes"
	"encoding/json"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// unmarshalResponse decodes a chat completion body into wr: with the fast reader when
// it accepts the body, else with encoding/json (whose error it returns).
func (c *Client) unmarshalResponse(body []byte, wr *wireResponse) error {
	d, _ := c.decoders.Get().(*wire.Decoder)
	if d == nil {
		d = new(wire.Decoder)
	}
	ok := decodeResponseFast(d, body, wr)
	d.Reset(nil)
	c.decoders.Put(d)
	if ok {
		return nil
	}
	*wr = wireResponse{}
	return json.Unmarshal(body, wr)
}

// foldsTo reports whether key matches one of names case-insensitively: encoding/json
// would fill that field, so the fast reader must leave the body to it.
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

func decodeResponseFast(d *wire.Decoder, body []byte, wr *wireResponse) bool {
	d.Reset(body)
	str := func(dst *string) bool {
		s, _, ok := d.String()
		*dst = s
		return ok
	}
	raw := func(dst *json.RawMessage) bool {
		r, ok := d.Raw()
		*dst = bytes.Clone(r)
		return ok
	}
	ok := d.Object(func(k []byte) bool {
		switch string(k) {
		case "id":
			return str(&wr.ID)
		case "object":
			return str(&wr.Object)
		case "model":
			return str(&wr.Model)
		case "provider":
			return str(&wr.Provider)
		case "message":
			return str(&wr.Message)
		case "type":
			return str(&wr.Type)
		case "code":
			return raw(&wr.Code)
		case "error":
			return raw(&wr.Error)
		case "usage":
			if d.Null() {
				wr.Usage = nil
				return true
			}
			wr.Usage = new(wireUsage)
			return decodeUsageFast(d, wr.Usage)
		case "choices":
			if d.Null() {
				wr.Choices = nil
				return true
			}
			wr.Choices = wr.Choices[:0]
			return d.Array(func(int) bool {
				wr.Choices = append(wr.Choices, wireChoice{})
				return decodeChoiceFast(d, &wr.Choices[len(wr.Choices)-1])
			})
		}
		if foldsTo(k, "id", "object", "model", "provider", "message", "type", "code", "error", "usage", "choices") {
			return false
		}
		return d.Skip()
	})
	return ok && d.End()
}

func decodeUsageFast(d *wire.Decoder, u *wireUsage) bool {
	return d.Object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "prompt_tokens":
			u.PromptTokens, ok = d.Int()
			return ok
		case "completion_tokens":
			u.CompletionTokens, ok = d.Int()
			return ok
		case "total_tokens":
			u.TotalTokens, ok = d.Int()
			return ok
		case "cost":
			f, isNull, ok := d.Float()
			if isNull {
				u.Cost = nil
			} else {
				u.Cost = &f
			}
			return ok
		}
		if foldsTo(k, "prompt_tokens", "completion_tokens", "total_tokens", "cost") {
			return false
		}
		return d.Skip()
	})
}

func decodeChoiceFast(d *wire.Decoder, c *wireChoice) bool {
	if d.Null() {
		return true
	}
	return d.Object(func(k []byte) bool {
		switch string(k) {
		case "finish_reason":
			s, _, ok := d.String()
			c.FinishReason = s
			return ok
		case "error":
			r, ok := d.Raw()
			c.Error = bytes.Clone(r)
			return ok
		case "message":
			if d.Null() {
				return true
			}
			return d.Object(func(k []byte) bool {
				switch string(k) {
				case "content", "refusal":
					dst := &c.Message.Content
					if k[0] == 'r' {
						dst = &c.Message.Refusal
					}
					if d.Peek() != '"' && d.Peek() != 'n' {
						return false // parts or a type error: encoding/json decides
					}
					s, isNull, ok := d.String()
					if isNull {
						*dst = nil
					} else {
						*dst = &s
					}
					return ok
				}
				if foldsTo(k, "content", "refusal") {
					return false
				}
				return d.Skip()
			})
		}
		if foldsTo(k, "finish_reason", "error", "message") {
			return false
		}
		return d.Skip()
	})
}
