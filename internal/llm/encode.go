package llm

import (
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// The request body is written by hand: its shape is fixed and small, and encoding/json
// would reflect over it and re-compact the (kilobytes of) schema on every call.

func requestSize(r *Request) int {
	n := 160 + len(r.Model) + len(r.Provider)
	for _, m := range r.Messages {
		n += 32 + len(m.Role) + len(m.Content) + len(m.Content)/8
	}
	if rf := r.ResponseFormat; rf != nil && rf.JSONSchema != nil {
		n += 64 + len(rf.JSONSchema.Name) + len(rf.JSONSchema.Schema)
	}
	return n
}

// encodedString is a string and its JSON encoding.
type encodedString struct {
	s   string
	enc []byte
}

// sysCache remembers the JSON encoding of a few system prompts. The pipeline sends
// the same (static, kilobytes long) system prompt string with every request of a
// stage; it is recognised by its data pointer and length, which is exact because the
// cache holds the string itself, so its memory cannot be reused for another one.
type sysCache struct {
	slots [4]atomic.Pointer[encodedString]
	next  atomic.Uint32
}

// appendString appends s as a JSON string, from the cache when it is there.
func (c *sysCache) appendString(b []byte, s string) []byte {
	if c == nil || len(s) < 512 {
		return wire.AppendString(b, s)
	}
	p := unsafe.StringData(s)
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil && len(e.s) == len(s) && unsafe.StringData(e.s) == p {
			return append(b, e.enc...)
		}
	}
	e := &encodedString{s: s, enc: wire.AppendString(nil, s)}
	c.slots[c.next.Add(1)%uint32(len(c.slots))].Store(e)
	return append(b, e.enc...)
}

// appendRequest appends r as an OpenAI chat completions body (stream false). System
// messages are encoded through cache (nil: no cache).
func appendRequest(b []byte, r *Request, cache *sysCache) []byte {
	b = append(b, `{"model":`...)
	b = wire.AppendString(b, r.Model)
	b = append(b, `,"messages":[`...)
	for i, m := range r.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"role":`...)
		b = wire.AppendString(b, m.Role)
		b = append(b, `,"content":`...)
		if m.Role == "system" {
			b = cache.appendString(b, m.Content)
		} else {
			b = wire.AppendString(b, m.Content)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if r.Temperature != nil {
		b = append(b, `,"temperature":`...)
		b = strconv.AppendFloat(b, *r.Temperature, 'g', -1, 64)
	}
	if r.MaxTokens > 0 {
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, int64(r.MaxTokens), 10)
	}
	if rf := r.ResponseFormat; rf != nil {
		b = append(b, `,"response_format":{"type":`...)
		b = wire.AppendString(b, rf.Type)
		if s := rf.JSONSchema; s != nil {
			b = append(b, `,"json_schema":{"name":`...)
			b = wire.AppendString(b, s.Name)
			b = append(b, `,"strict":`...)
			b = strconv.AppendBool(b, s.Strict)
			b = append(b, `,"schema":`...)
			b = append(b, s.Schema...)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	if len(r.Provider) > 0 {
		b = append(b, `,"provider":`...)
		b = append(b, r.Provider...)
	}
	b = append(b, `,"stream":false}`...)
	return b
}
