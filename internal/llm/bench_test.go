package llm

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// The client's own work per call, without the network: encoding a stage-sized request
// and decoding a stage-sized answer (content with escapes, like a JSON answer).

func benchRequest() Request {
	temp := 0.3
	return Request{
		Model: "anthropic/claude-sonnet-4.5",
		Messages: []Message{
			{Role: "system", Content: strings.Repeat("You are a Korean teacher. Write \"cards\" with fields:\n- \"front\" (string): 15 to 30 words.\n", 35)},
			{Role: "user", Content: strings.Repeat("Write the flashcards for term number 42: 남성 (noun).\n", 8) + "Input:\n```json\n{\"term_number\":42,\"term\":\"남성\"}\n```"},
		},
		Temperature:    &temp,
		MaxTokens:      3000,
		ResponseFormat: &ResponseFormat{Type: "json_schema", JSONSchema: &JSONSchema{Name: "flashpipe_stage2", Strict: true, Schema: []byte(`{"type":"object","properties":{"cards":{"type":"array"}},"required":["cards"],"additionalProperties":false}`)}},
	}
}

func BenchmarkEncodeRequest(b *testing.B) {
	req := benchRequest()
	var cache sysCache
	b.ReportAllocs()
	for b.Loop() {
		if err := validateRequest(&req); err != nil {
			b.Fatal(err)
		}
		appendRequest(make([]byte, 0, requestSize(&req)), &req, &cache)
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	content := `{"cards":[` + strings.Repeat(`{"tab_name":"Scene","front":"At the front door, a kite spins. Which Korean word lives here?","back":"남성 means man. Picture the front door: a kite is spinning on one leg right beside the reading lamp, and the brass is cold under your hand.","tags":"term:남성,pos:noun","honorific_level":"neutral"},`, 3) + `{}]}`
	body := []byte(`{"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-sonnet-4.5","object":"chat.completion","created":1,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"end_turn","index":0,"message":{"role":"assistant","content":` +
		string(appendRequestString(content)) + `,"refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":1245,"completion_tokens":784,"total_tokens":2029,"cost":0.015495,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`)
	c, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	hresp := &http.Response{StatusCode: 200, Header: http.Header{}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.decode(hresp, body, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func appendRequestString(s string) []byte {
	r := Request{Messages: []Message{{Content: s}}}
	b := appendRequest(nil, &r, nil)
	// {"model":"","messages":[{"role":"","content":<here>}],"stream":false}
	i := strings.Index(string(b), `"content":`) + len(`"content":`)
	j := strings.LastIndex(string(b), `}],"stream"`)
	return b[i:j]
}

func TestSysCacheIsExact(t *testing.T) {
	var cache sysCache
	long := strings.Repeat("system \"prompt\"\n", 64)
	a := string(cache.appendString(nil, long))
	b := string(cache.appendString(nil, long)) // from the cache
	other := strings.Repeat("system \"prompt\"\n", 63) + "different line!\n"
	c := string(cache.appendString(nil, other))
	sub := long[:len(long)-1] // same data pointer, other length
	d := string(cache.appendString(nil, sub))
	if a != b || a == c || d == a || d != string(appendRequestString(sub)) {
		t.Errorf("cache mixed strings up")
	}
}
