package llm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/secret"
)

const testKey = "sk-or-v1-0123456789abcdefSECRETKEY"

func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv
}

// newClient returns a client of srv (base URL srv/api/v1) logging at debug level to
// the returned buffer.
func newClient(t *testing.T, srv *httptest.Server, cfg llm.Config) (*llm.Client, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.BaseURL == "" {
		cfg.BaseURL = srv.URL + "/api/v1"
	}
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := llm.New(cfg)
	if err != nil {
		t.Fatalf("llm.New: %v", err)
	}
	return c, logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func simpleRequest() llm.Request {
	return llm.Request{
		Model:    "anthropic/claude-sonnet-4.5",
		Messages: []llm.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Say hi."}},
	}
}

// okBody is a 200 answer in OpenRouter's shape.
func okBody(content, finish string) string {
	c, _ := json.Marshal(content)
	return `{"id":"gen-1764926649-tF4W3t4FuuPsXb0VBWLB","provider":"Anthropic","model":"anthropic/claude-sonnet-4.5",` +
		`"object":"chat.completion","created":1764926649,"choices":[{"logprobs":null,"finish_reason":"` + finish +
		`","native_finish_reason":"end_turn","index":0,"message":{"role":"assistant","content":` + string(c) +
		`,"refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,` +
		`"cost":0.00014,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`
}

func TestCompleteSendsWireFormat(t *testing.T) {
	t.Parallel()
	var got struct {
		method, path string
		header       http.Header
		body         map[string]any
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.header = r.Method, r.URL.Path, r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got.body); err != nil {
			t.Errorf("request body is not JSON: %v\n%s", err, b)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, okBody(`{"ok":true}`, "stop"))
	})
	c, _ := newClient(t, srv, llm.Config{Referer: "https://flashpipe.example", Title: "flashpipe"})
	temp := 0.3
	req := llm.Request{
		Model: "anthropic/claude-sonnet-4.5",
		Messages: []llm.Message{
			{Role: "system", Content: "System \"quoted\" \\ back\nslash\t<tag> & 한국어 \u2028"},
			{Role: "user", Content: "Input:\n```json\n{\"term\":\"남성\"}\n```"},
		},
		Temperature: &temp,
		MaxTokens:   1500,
		ResponseFormat: &llm.ResponseFormat{Type: "json_schema", JSONSchema: &llm.JSONSchema{
			Name: "flashpipe_stage1", Strict: true, Schema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`)}},
		Provider: json.RawMessage(`{"require_parameters":true}`),
	}
	resp, err := c.Complete(context.Background(), req)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if got.method != http.MethodPost || got.path != "/api/v1/chat/completions" {
		t.Errorf("request %s %s, want POST /api/v1/chat/completions", got.method, got.path)
	}
	for name, want := range map[string]string{
		"Authorization":      "Bearer " + testKey,
		"Content-Type":       "application/json",
		"Http-Referer":       "https://flashpipe.example",
		"X-Openrouter-Title": "flashpipe",
		"X-Title":            "flashpipe",
	} {
		if v := got.header.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
	msgs := got.body["messages"].([]any)
	for i, m := range msgs {
		mm := m.(map[string]any)
		if mm["role"] != req.Messages[i].Role || mm["content"] != req.Messages[i].Content {
			t.Errorf("message %d = %v, want %+v", i, mm, req.Messages[i])
		}
	}
	if got.body["model"] != req.Model || got.body["temperature"] != 0.3 || got.body["max_tokens"] != 1500.0 || got.body["stream"] != false {
		t.Errorf("body = %v", got.body)
	}
	rf := got.body["response_format"].(map[string]any)
	js := rf["json_schema"].(map[string]any)
	if rf["type"] != "json_schema" || js["name"] != "flashpipe_stage1" || js["strict"] != true || js["schema"].(map[string]any)["type"] != "object" {
		t.Errorf("response_format = %v", rf)
	}
	if p := got.body["provider"].(map[string]any); p["require_parameters"] != true {
		t.Errorf("provider = %v", p)
	}
	want := llm.Usage{PromptTokens: 10, CompletionTokens: 4, TotalTokens: 14, Cost: 0.00014}
	if resp.Content != `{"ok":true}` || resp.ID != "gen-1764926649-tF4W3t4FuuPsXb0VBWLB" || resp.Provider != "Anthropic" ||
		resp.Model != "anthropic/claude-sonnet-4.5" || resp.FinishReason != "stop" || resp.Usage != want {
		t.Errorf("response = %+v", resp)
	}
}

func TestCompleteOmitsOptionalFields(t *testing.T) {
	t.Parallel()
	var body map[string]any
	var auth string
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		json.NewDecoder(r.Body).Decode(&body)
		w.Header().Set("X-Generation-Id", "gen-from-header")
		io.WriteString(w, `{"choices":[{"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
	})
	c, err := llm.New(llm.Config{BaseURL: srv.URL + "/v1/"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Complete(context.Background(), simpleRequest())
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	for _, k := range []string{"temperature", "max_tokens", "response_format", "provider"} {
		if _, ok := body[k]; ok {
			t.Errorf("body has %q though the request does not set it: %v", k, body)
		}
	}
	if auth != "" {
		t.Errorf("Authorization %q sent without an API key", auth)
	}
	// vLLM-style usage: no cost, total computed.
	if resp.ID != "gen-from-header" || resp.Usage != (llm.Usage{PromptTokens: 3, CompletionTokens: 1, TotalTokens: 4}) {
		t.Errorf("response = %+v", resp)
	}
}

func TestCompleteContentParts(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"x","choices":[{"finish_reason":"stop","message":{"role":"assistant","content":[{"type":"text","text":"{\"a\":"},{"type":"text","text":"1}"}]}}]}`)
	})
	c, _ := newClient(t, srv, llm.Config{})
	resp, err := c.Complete(context.Background(), simpleRequest())
	if err != nil || resp.Content != `{"a":1}` {
		t.Fatalf("Complete = %+v, %v; want content {\"a\":1}", resp, err)
	}
}

// answer describes one canned server answer.
type answer struct {
	status int
	header map[string]string
	body   string
}

func (a answer) serve(w http.ResponseWriter) {
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

type classCase struct {
	name       string
	answer     answer
	class      flashpipe.ErrorClass
	retryAfter time.Duration // expected (tolerance 1.5s for computed waits)
	account    bool
	maxTokens  bool
	empty      bool
	malformed  bool
	apiStatus  int    // expected *APIError status (0: no APIError)
	apiCode    string // expected APIError.Code when set
	withResp   bool   // a Response comes back with the error
	check      func(t *testing.T, e *llm.APIError)
}

func classCases() []classCase {
	in5s := strconv.FormatInt(time.Now().Add(5*time.Second).UnixMilli(), 10)
	in8s := strconv.FormatInt(time.Now().Add(8*time.Second).UnixMilli(), 10)
	date := time.Now().Add(4 * time.Second).UTC().Format(http.TimeFormat)
	orErr := func(code int, msg, meta string) string {
		if meta == "" {
			return fmt.Sprintf(`{"error":{"code":%d,"message":%q},"user_id":"user_123"}`, code, msg)
		}
		return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"metadata":%s},"user_id":"user_123"}`, code, msg, meta)
	}
	return []classCase{
		{name: "400 bad request", answer: answer{400, nil, orErr(400, "invalid model", "")}, class: flashpipe.Permanent, apiStatus: 400},
		{name: "401 bad key", answer: answer{401, nil, orErr(401, "No auth credentials found", "")}, class: flashpipe.Permanent, account: true, apiStatus: 401},
		{name: "402 credits", answer: answer{402, nil, orErr(402, "Insufficient credits. Add more using https://openrouter.ai/settings/credits", `{"limit_source":"openrouter_credits"}`)},
			class: flashpipe.Permanent, account: true, apiStatus: 402},
		{name: "402 key limit", answer: answer{402, nil, orErr(402, "Key limit exceeded", `{"limit_source":"openrouter_key_limit"}`)},
			class: flashpipe.Permanent, account: true, apiStatus: 402},
		{name: "402 in-flight budget with Retry-After", answer: answer{402, map[string]string{"Retry-After": "3"},
			orErr(402, "This request would exceed your available credits given your current in-flight requests.", `{"reason":"in_flight_budget_exhausted","limit_source":"openrouter_in_flight_budget"}`)},
			class: flashpipe.Transient, retryAfter: 3 * time.Second, apiStatus: 402, apiCode: "in_flight_budget_exhausted"},
		{name: "402 in-flight budget without header", answer: answer{402, nil,
			orErr(402, "in flight", `{"reason":"in_flight_budget_exhausted"}`)},
			class: flashpipe.Transient, apiStatus: 402},
		{name: "402 with Retry-After only", answer: answer{402, map[string]string{"Retry-After": "2"}, orErr(402, "wait", "")},
			class: flashpipe.Transient, retryAfter: 2 * time.Second, apiStatus: 402},
		{name: "403 moderation", answer: answer{403, nil, orErr(403, "flagged", `{"reasons":["violence"],"flagged_input":"x","provider_name":"OpenAI","model_slug":"m"}`)},
			class: flashpipe.Permanent, apiStatus: 403, check: func(t *testing.T, e *llm.APIError) {
				if r, _ := e.Metadata["reasons"].([]any); len(r) != 1 || r[0] != "violence" {
					t.Errorf("metadata = %v", e.Metadata)
				}
			}},
		{name: "404 no endpoints", answer: answer{404, nil, `{"error":{"message":"No endpoints","error_type":"not_found","http_status":404,"availability":{"code":"no_endpoints","retryable":false}}}`},
			class: flashpipe.Permanent, apiStatus: 404, apiCode: "no_endpoints"},
		{name: "408 timeout", answer: answer{408, nil, orErr(408, "Request timed out", "")}, class: flashpipe.Transient, apiStatus: 408},
		{name: "413 too large", answer: answer{413, nil, orErr(413, "Payload too large", "")}, class: flashpipe.Permanent, apiStatus: 413},
		{name: "422 unprocessable", answer: answer{422, nil, orErr(422, "Unprocessable", "")}, class: flashpipe.Permanent, apiStatus: 422},
		{name: "429 with headers", answer: answer{429, map[string]string{"Retry-After": "7", "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": in5s},
			orErr(429, "Rate limit exceeded", `{"error_type":"rate_limit_exceeded"}`)},
			class: flashpipe.Transient, retryAfter: 7 * time.Second, apiStatus: 429, apiCode: "rate_limit_exceeded",
			check: func(t *testing.T, e *llm.APIError) {
				if e.RateLimit.Limit != 50 || e.RateLimit.Remaining != 0 || e.RateLimit.Reset.UnixMilli() != mustInt(in5s) {
					t.Errorf("RateLimit = %+v", e.RateLimit)
				}
			}},
		{name: "429 reset header only", answer: answer{429, map[string]string{"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": in5s}, orErr(429, "Rate limit exceeded", "")},
			class: flashpipe.Transient, retryAfter: 5 * time.Second, apiStatus: 429},
		{name: "429 limits in metadata.headers", answer: answer{429, nil,
			orErr(429, "Rate limit exceeded: limit_rpm/anthropic", `{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"`+in8s+`"},"provider_name":null}`)},
			class: flashpipe.Transient, retryAfter: 8 * time.Second, apiStatus: 429,
			check: func(t *testing.T, e *llm.APIError) {
				if e.RateLimit.Limit != 20 || e.RateLimit.Reset.UnixMilli() != mustInt(in8s) {
					t.Errorf("RateLimit = %+v", e.RateLimit)
				}
			}},
		{name: "429 Retry-After HTTP date", answer: answer{429, map[string]string{"Retry-After": date}, orErr(429, "slow down", "")},
			class: flashpipe.Transient, retryAfter: 4 * time.Second, apiStatus: 429},
		{name: "429 capacity exhausted", answer: answer{429, nil, `{"error":{"message":"All providers are at capacity.","error_type":"rate_limit_exceeded","http_status":429,"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":40}}}`},
			class: flashpipe.Transient, retryAfter: 40 * time.Second, apiStatus: 429, apiCode: "capacity_exhausted"},
		{name: "500", answer: answer{500, nil, orErr(500, "Internal Server Error", `{"error_type":"server"}`)}, class: flashpipe.Transient, apiStatus: 500},
		{name: "502", answer: answer{502, nil, orErr(502, "Provider returned error", `{"error_type":"provider_unavailable"}`)}, class: flashpipe.Transient, apiStatus: 502},
		{name: "503 with Retry-After", answer: answer{503, map[string]string{"Retry-After": "2"}, orErr(503, "No available provider", "")},
			class: flashpipe.Transient, retryAfter: 2 * time.Second, apiStatus: 503},
		{name: "524", answer: answer{524, nil, "<html>A timeout occurred</html>"}, class: flashpipe.Transient, apiStatus: 524},
		{name: "529", answer: answer{529, nil, orErr(529, "Overloaded", "")}, class: flashpipe.Transient, apiStatus: 529},
		{name: "502 html from a proxy", answer: answer{502, nil, "<html><body>502 Bad Gateway</body></html>"}, class: flashpipe.Transient, apiStatus: 502,
			check: func(t *testing.T, e *llm.APIError) {
				if e.Message != "Bad Gateway" || !strings.Contains(e.Body, "502 Bad Gateway") {
					t.Errorf("Message %q Body %q", e.Message, e.Body)
				}
			}},
		{name: "301 redirect", answer: answer{301, map[string]string{"Location": "https://elsewhere.example/api/v1/chat/completions"}, ""},
			class: flashpipe.Permanent, apiStatus: 301},
		{name: "vLLM nested error", answer: answer{400, nil, `{"error":{"message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}}`},
			class: flashpipe.Permanent, apiStatus: 400, apiCode: "BadRequestError"},
		{name: "vLLM flat error", answer: answer{400, nil, `{"object":"error","message":"The model does not exist.","type":"NotFoundError","param":null,"code":404}`},
			class: flashpipe.Permanent, apiStatus: 400, apiCode: "NotFoundError",
			check: func(t *testing.T, e *llm.APIError) {
				if e.Message != "The model does not exist." {
					t.Errorf("Message %q", e.Message)
				}
			}},
		{name: "Ollama string error", answer: answer{404, nil, `{"error":"model \"llama9\" not found, try pulling it first"}`},
			class: flashpipe.Permanent, apiStatus: 404,
			check: func(t *testing.T, e *llm.APIError) {
				if !strings.Contains(e.Message, "not found") {
					t.Errorf("Message %q", e.Message)
				}
			}},
		{name: "200 top-level error", answer: answer{200, nil, `{"id":"gen-1","error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable"}}}`},
			class: flashpipe.Transient, apiStatus: 200, apiCode: "provider_unavailable", withResp: true},
		{name: "200 choice error", answer: answer{200, nil, `{"id":"gen-2","choices":[{"message":{"role":"assistant","content":"partial"},"finish_reason":"error","error":{"code":502,"message":"Provider disconnected","metadata":{"error_type":"provider_unavailable"}}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"cost":0.001}}`},
			class: flashpipe.Transient, apiStatus: 200, withResp: true},
		{name: "200 finish_reason error", answer: answer{200, nil, `{"id":"gen-3","choices":[{"message":{"role":"assistant","content":"part"},"finish_reason":"error"}]}`},
			class: flashpipe.Transient, apiStatus: 200, withResp: true},
		{name: "200 vLLM flat error", answer: answer{200, nil, `{"object":"error","message":"engine died","type":"InternalServerError","code":500}`},
			class: flashpipe.Transient, apiStatus: 200, withResp: true},
		{name: "200 empty content", answer: answer{200, nil, okBody("", "stop")}, class: flashpipe.Transient, empty: true, withResp: true},
		{name: "200 blank content", answer: answer{200, nil, okBody(" \n ", "stop")}, class: flashpipe.Transient, empty: true, withResp: true},
		{name: "200 null content", answer: answer{200, nil, `{"id":"g","choices":[{"finish_reason":"stop","message":{"role":"assistant","content":null}}]}`},
			class: flashpipe.Transient, empty: true, withResp: true},
		{name: "200 refusal", answer: answer{200, nil, `{"id":"g","choices":[{"finish_reason":"stop","message":{"role":"assistant","content":null,"refusal":"I can't help"}}]}`},
			class: flashpipe.Transient, empty: true, withResp: true},
		{name: "200 malformed", answer: answer{200, nil, `{"id":"gen-4","choices":[{"message":{"content":"{\"a\":`}, class: flashpipe.Transient, malformed: true},
		{name: "200 not JSON", answer: answer{200, nil, `<html>hello</html>`}, class: flashpipe.Transient, malformed: true},
		{name: "200 no choices", answer: answer{200, nil, `{"id":"gen-5","choices":[]}`}, class: flashpipe.Transient, malformed: true, withResp: true},
		{name: "200 length", answer: answer{200, nil, okBody(`{"term":"남`, "length")}, class: flashpipe.Permanent, maxTokens: true, withResp: true},
	}
}

func mustInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func TestCompleteClassifiesAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range classCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { tc.answer.serve(w) })
			c, _ := newClient(t, srv, llm.Config{})
			resp, err := c.Complete(context.Background(), simpleRequest())
			if err == nil {
				t.Fatalf("Complete succeeded with %+v; want a %s error", resp, tc.class)
			}
			if got := flashpipe.ClassOf(err); got != tc.class {
				t.Errorf("class %s, want %s (err: %v)", got, tc.class, err)
			}
			var ce *flashpipe.ClassifiedError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *flashpipe.ClassifiedError", err)
			}
			ra := flashpipe.RetryAfterOf(err)
			if tc.retryAfter == 0 && ra != 0 {
				t.Errorf("RetryAfter %v, want none", ra)
			}
			if tc.retryAfter != 0 && (ra < tc.retryAfter-1500*time.Millisecond || ra > tc.retryAfter+50*time.Millisecond) {
				t.Errorf("RetryAfter %v, want about %v", ra, tc.retryAfter)
			}
			if got := errors.Is(err, llm.ErrAccount); got != tc.account {
				t.Errorf("errors.Is(ErrAccount) = %v, want %v (err: %v)", got, tc.account, err)
			}
			if got := errors.Is(err, llm.ErrMaxTokens); got != tc.maxTokens {
				t.Errorf("errors.Is(ErrMaxTokens) = %v, want %v", got, tc.maxTokens)
			}
			if got := errors.Is(err, llm.ErrEmptyContent); got != tc.empty {
				t.Errorf("errors.Is(ErrEmptyContent) = %v, want %v", got, tc.empty)
			}
			if got := errors.Is(err, llm.ErrMalformedResponse); got != tc.malformed {
				t.Errorf("errors.Is(ErrMalformedResponse) = %v, want %v", got, tc.malformed)
			}
			if (resp != nil) != tc.withResp {
				t.Errorf("response %+v with the error; want one: %v", resp, tc.withResp)
			}
			var ae *llm.APIError
			if got := errors.As(err, &ae); got != (tc.apiStatus != 0) {
				t.Fatalf("errors.As(*APIError) = %v, want %v (err: %v)", got, tc.apiStatus != 0, err)
			}
			if ae == nil {
				return
			}
			if ae.Status != tc.apiStatus {
				t.Errorf("APIError.Status %d, want %d", ae.Status, tc.apiStatus)
			}
			if tc.apiCode != "" && ae.Code != tc.apiCode {
				t.Errorf("APIError.Code %q, want %q", ae.Code, tc.apiCode)
			}
			if ae.Message == "" {
				t.Errorf("APIError.Message is empty")
			}
			if ae.RetryAfter != ra {
				t.Errorf("APIError.RetryAfter %v != RetryAfterOf %v", ae.RetryAfter, ra)
			}
			if tc.check != nil {
				tc.check(t, ae)
			}
		})
	}
}

func TestCompleteUsageOnAnswerErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, okBody(`{"cut`, "length"))
	})
	c, _ := newClient(t, srv, llm.Config{})
	resp, err := c.Complete(context.Background(), simpleRequest())
	if !errors.Is(err, llm.ErrMaxTokens) || !flashpipe.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent ErrMaxTokens", err)
	}
	if !strings.Contains(err.Error(), "max_tokens") {
		t.Errorf("error %q does not say to raise max_tokens", err)
	}
	if resp == nil || resp.Usage.Cost != 0.00014 || resp.ID == "" {
		t.Errorf("response %+v: want the billed usage", resp)
	}
}

func TestCompleteNetworkErrors(t *testing.T) {
	t.Parallel()

	t.Run("attempt timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		c, _ := newClient(t, srv, llm.Config{Timeout: 100 * time.Millisecond})
		start := time.Now()
		_, err := c.Complete(context.Background(), simpleRequest())
		if flashpipe.ClassOf(err) != flashpipe.Transient || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("err = %v (%s), want a transient timeout", err, flashpipe.ClassOf(err))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timeout took %v", d)
		}
	})

	t.Run("caller cancels", func(t *testing.T) {
		t.Parallel()
		arrived, release := make(chan struct{}), make(chan struct{})
		defer close(release)
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			close(arrived)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		c, _ := newClient(t, srv, llm.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		_, err := c.Complete(ctx, simpleRequest())
		if flashpipe.ClassOf(err) != flashpipe.Transient || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want transient context.Canceled", err)
		}
	})

	t.Run("connection dropped", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		c, _ := newClient(t, srv, llm.Config{})
		_, err := c.Complete(context.Background(), simpleRequest())
		if err == nil || flashpipe.ClassOf(err) != flashpipe.Transient {
			t.Errorf("err = %v, want transient", err)
		}
	})

	t.Run("body cut short", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5000")
			w.WriteHeader(200)
			io.WriteString(w, `{"id":"gen-x","choices":[`)
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		c, _ := newClient(t, srv, llm.Config{})
		_, err := c.Complete(context.Background(), simpleRequest())
		if err == nil || flashpipe.ClassOf(err) != flashpipe.Transient {
			t.Errorf("err = %v, want transient", err)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, err := llm.New(llm.Config{BaseURL: "http://" + addr + "/api/v1", APIKey: testKey})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Complete(context.Background(), simpleRequest())
		if err == nil || flashpipe.ClassOf(err) != flashpipe.Transient || !strings.Contains(err.Error(), "network") {
			t.Errorf("err = %v, want a transient network error", err)
		}
	})
}

func TestCompleteRejectsBadRequests(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a bad request reached the server")
	})
	c, _ := newClient(t, srv, llm.Config{})
	nan := func() *float64 { v := -1.0; return &v }()
	for name, req := range map[string]llm.Request{
		"no model":        {Messages: simpleRequest().Messages},
		"no messages":     {Model: "m"},
		"negative temp":   {Model: "m", Messages: simpleRequest().Messages, Temperature: nan},
		"schema no name":  {Model: "m", Messages: simpleRequest().Messages, ResponseFormat: &llm.ResponseFormat{Type: "json_schema", JSONSchema: &llm.JSONSchema{Schema: json.RawMessage(`{}`)}}},
		"schema bad name": {Model: "m", Messages: simpleRequest().Messages, ResponseFormat: &llm.ResponseFormat{Type: "json_schema", JSONSchema: &llm.JSONSchema{Name: "a b", Schema: json.RawMessage(`{}`)}}},
		"bad provider":    {Model: "m", Messages: simpleRequest().Messages, Provider: json.RawMessage(`{"order":`)},
	} {
		if _, err := c.Complete(context.Background(), req); !flashpipe.IsPermanent(err) {
			t.Errorf("%s: err = %v, want permanent", name, err)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]llm.Config{
		"not a URL":        {BaseURL: "openrouter.ai/api/v1"},
		"ftp":              {BaseURL: "ftp://example.com"},
		"negative timeout": {Timeout: -time.Second},
		"key with newline": {APIKey: testKey + "\nX-Evil: 1"},
		"title newline":    {Title: "a\r\nb"},
	} {
		_, err := llm.New(cfg)
		if err == nil {
			t.Errorf("%s: New succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error %q contains the API key", name, err)
		}
	}
	if _, err := llm.New(llm.Config{}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

// TestKeyNeverLeaks makes every error class with a server that echoes the API key in
// every place it can (message, metadata, headers copy, body), and checks that neither
// the error, nor the *APIError's fields, nor the debug log contain the key.
func TestKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	leaky := func(a answer) answer {
		a.body = strings.ReplaceAll(a.body, "Rate limit exceeded", "Rate limit exceeded for key "+testKey)
		a.body = strings.ReplaceAll(a.body, "No auth credentials found", "Invalid key "+testKey)
		return a
	}
	cases := classCases()
	cases = append(cases,
		classCase{name: "echo everywhere", answer: answer{401, map[string]string{"X-Echo": testKey},
			`{"error":{"code":401,"message":"Bad key: ` + testKey + `","metadata":{"key":"` + testKey + `","nested":{"list":["` + testKey + `"]},"` + testKey + `":1}},"user_id":"` + testKey + `"}`}},
		classCase{name: "echo in malformed 200", answer: answer{200, nil, `{"id":"` + testKey + `","choices":[{`}},
		classCase{name: "echo in refusal", answer: answer{200, nil, `{"id":"g","choices":[{"finish_reason":"stop","message":{"content":"","refusal":"` + testKey + `"}}]}`}},
		classCase{name: "echo in 200 error", answer: answer{200, nil, `{"error":{"code":502,"message":"` + testKey + `","metadata":{"error_type":"` + testKey + `"}}}`}},
		classCase{name: "key split by the snippet", answer: answer{500, nil, strings.Repeat("x", 500) + testKey}},
		classCase{name: "fragments echoed", answer: answer{400, nil, `{"error":{"code":400,"message":"Incorrect API key provided: ` +
			testKey[:12] + `****` + testKey[len(testKey)-9:] + `","metadata":{"hint":"` + testKey[4:13] + `"}}}`}},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := leaky(tc.answer)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { a.serve(w) })
			c, logs := newClient(t, srv, llm.Config{})
			_, err := c.Complete(context.Background(), simpleRequest())
			if err == nil {
				t.Fatal("no error")
			}
			texts := []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), logs.String()}
			var ae *llm.APIError
			if errors.As(err, &ae) {
				texts = append(texts, ae.Message, ae.Code, ae.Body, fmt.Sprint(ae.Metadata))
			}
			for _, s := range texts {
				for i := 0; i+secret.MinFragment <= len(testKey); i++ {
					if strings.Contains(s, testKey[i:i+secret.MinFragment]) {
						t.Errorf("a fragment of the API key leaked: %q", s)
						break
					}
				}
			}
			if !strings.Contains(logs.String(), "chat completion") {
				t.Errorf("no debug log line: %q", logs.String())
			}
		})
	}
	// Network errors, for completeness.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	logs := &syncBuffer{}
	c, _ := llm.New(llm.Config{BaseURL: "http://" + addr, APIKey: testKey, Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	_, err := c.Complete(context.Background(), simpleRequest())
	if err == nil || strings.Contains(err.Error(), testKey) || strings.Contains(logs.String(), testKey) {
		t.Errorf("network error %v / log %q leaks the key", err, logs.String())
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/v1/key" || r.Header.Get("Authorization") != "Bearer "+testKey {
			answer{401, nil, `{"error":{"code":401,"message":"No auth credentials found"}}`}.serve(w)
			return
		}
		io.WriteString(w, `{"data":{"label":"sk-or-v1-abc...","limit":25,"limit_reset":"monthly","limit_remaining":7.5,"include_byok_in_limit":false,"usage":17.5,"usage_daily":1,"usage_weekly":2,"usage_monthly":3,"is_free_tier":false}}`)
	})
	c, _ := newClient(t, srv, llm.Config{})
	k, err := c.Key(context.Background())
	if err != nil {
		t.Fatalf("Key: %v", err)
	}
	if k.Limit == nil || *k.Limit != 25 || k.LimitRemaining == nil || *k.LimitRemaining != 7.5 || k.Usage != 17.5 {
		t.Errorf("KeyInfo = %+v", k)
	}
	bad, _ := llm.New(llm.Config{BaseURL: srv.URL + "/api/v1", APIKey: "sk-wrong"})
	if _, err := bad.Key(context.Background()); !errors.Is(err, llm.ErrAccount) {
		t.Errorf("Key with a bad key: %v, want ErrAccount", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 8, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 0.5 ", 500 * time.Millisecond, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0, true},
	} {
		got, ok := llm.ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseRateLimitReset(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 8, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1743638400000", time.UnixMilli(1743638400000), true}, // epoch ms (OpenRouter)
		{"1743638400", time.Unix(1743638400, 0), true},         // epoch s
		{"30", now.Add(30 * time.Second), true},                // seconds from now
		{"1.5s", now.Add(1500 * time.Millisecond), true},       // duration (OpenAI)
		{"x", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, ok := llm.ParseRateLimitReset(tc.in, now)
		if !got.Equal(tc.want) || ok != tc.ok {
			t.Errorf("ParseRateLimitReset(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
