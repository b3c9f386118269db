package llm

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// The fast decoder must agree with encoding/json whenever it accepts a body.
func FuzzDecodeResponseFast(f *testing.F) {
	for _, s := range []string{
		`{"id":"gen-1","provider":"Anthropic","model":"m","object":"chat.completion","created":1,"choices":[{"logprobs":null,"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"{\"a\":\"\\u00e9\\ud83d\\ude00\"}","refusal":null}}],"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,"cost":0.00014,"prompt_tokens_details":{"cached_tokens":0}}}`,
		`{"error":{"code":429,"message":"x","metadata":{"headers":{"X-RateLimit-Reset":"1"}}},"user_id":"u"}`,
		`{"object":"error","message":"m","type":"T","param":null,"code":400}`,
		`{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}]}`,
		`{"choices":null,"usage":null,"error":null}`,
		`{"choices":[null,{"finish_reason":null,"message":null,"error":"boom"}]}`,
		`{"ID":"case"}`,
		`{"usage":{"prompt_tokens":1.5}}`,
		`{"usage":{"cost":null}}`,
		"{\"id\":\"\xff\"}",
		`{"id":"a"}x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fast wireResponse
		if !decodeResponseFast(new(wire.Decoder), []byte(s), &fast) {
			return
		}
		var std wireResponse
		if err := json.Unmarshal([]byte(s), &std); err != nil {
			t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
		}
		// encoding/json keeps RawMessage bytes as they are; compare those compacted.
		for _, p := range [][2]*json.RawMessage{{&fast.Error, &std.Error}, {&fast.Code, &std.Code}} {
			if string(*p[0]) != string(*p[1]) {
				t.Fatalf("raw %q vs %q for %q", *p[0], *p[1], s)
			}
			*p[0], *p[1] = nil, nil
		}
		for i := range fast.Choices {
			if i < len(std.Choices) {
				if string(fast.Choices[i].Error) != string(std.Choices[i].Error) {
					t.Fatalf("choice error %q vs %q", fast.Choices[i].Error, std.Choices[i].Error)
				}
				fast.Choices[i].Error, std.Choices[i].Error = nil, nil
			}
		}
		if len(fast.Choices) == 0 && len(std.Choices) == 0 {
			fast.Choices, std.Choices = nil, nil
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("fast %+v\n std %+v\nfor %q", fast, std, s)
		}
	})
}

// FuzzWireString checks string decoding against encoding/json on arbitrary bytes.
func FuzzWireString(f *testing.F) {
	for _, s := range []string{`"plain"`, `"\u00e9\ud83d\ude00\ud800\udc00\ud800x\\\/\b\f\n\r\t"`, "\"\xff\xfe\"", `"\ud800\u0041"`, `"a`, `null`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d wire.Decoder
		d.Reset([]byte(s))
		got, isNull, ok := d.String()
		if !ok || !d.End() {
			return
		}
		var want *string
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("wire accepted what encoding/json rejects (%v): %q", err, s)
		}
		if isNull != (want == nil) || (want != nil && got != *want) {
			t.Fatalf("wire %q (null %v), encoding/json %v for %q", got, isNull, want, s)
		}
	})
}
