package llmsim

import (
	"testing"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// The fast request decoder must agree with the encoding/json one whenever it
// accepts a body.
func FuzzDecodeChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"system","content":"s\n\"x\""},{"role":"user","content":"Input:\n` + "```json\\n{\\\"term\\\":\\\"가\\\"}\\n```" + `"}],"temperature":0.3,"max_tokens":1500,"response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,"schema":{"type":"object"}}},"provider":{"order":["a"]},"stream":false}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":null},{"content":"x"}]}`,
		`{"Model":"m"}`,
		`{"model":"m","max_tokens":1.5}`,
		`{"model":"m","stream":"yes"}`,
		"{\"model\":\"\xff\"}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fast chatRequest
		var d wire.Decoder
		if !decodeChatRequestFast(&d, []byte(s), &fast) {
			return
		}
		var std chatRequest
		if err := decodeChatRequestStd([]byte(s), &std); err != nil {
			t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
		}
		if fast.Model != std.Model || fast.Stream != std.Stream || fast.MaxTokens != std.MaxTokens || fast.User != std.User || len(fast.Messages) != len(std.Messages) {
			t.Fatalf("fast %+v\n std %+v\nfor %q", fast, std, s)
		}
	})
}
