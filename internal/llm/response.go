package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
)

// wireResponse is a chat completion body, success or error. The flat fields at the
// end are vLLM's old error shape {"object":"error","message":...,"code":400}.
type wireResponse struct {
	ID       string          `json:"id"`
	Object   string          `json:"object"`
	Model    string          `json:"model"`
	Provider string          `json:"provider"`
	Choices  []wireChoice    `json:"choices"`
	Usage    *wireUsage      `json:"usage"`
	Error    json.RawMessage `json:"error"`
	Message  string          `json:"message"`
	Type     string          `json:"type"`
	Code     json.RawMessage `json:"code"`
}

type wireChoice struct {
	FinishReason string `json:"finish_reason"`
	Message      struct {
		Content *string `json:"content"`
		Refusal *string `json:"refusal"`
	} `json:"message"`
	Error json.RawMessage `json:"error"`
}

// wireChoiceParts is the fallback for servers that send content as an array of parts.
type wireChoiceParts struct {
	Choices []struct {
		Message struct {
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

type wireUsage struct {
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	TotalTokens      int64    `json:"total_tokens"`
	Cost             *float64 `json:"cost"`
}

// wireError is the error object of OpenRouter ({code, message, metadata}, plus
// error_type and availability on availability errors), of vLLM ({message, type,
// param, code}) and of Ollama ({message, type, param, code: null}).
type wireError struct {
	Code         json.RawMessage `json:"code"`
	Message      string          `json:"message"`
	Type         string          `json:"type"`
	ErrorType    string          `json:"error_type"`
	Metadata     map[string]any  `json:"metadata"`
	Availability *struct {
		Code       string   `json:"code"`
		Retryable  *bool    `json:"retryable"`
		RetryAfter *float64 `json:"retry_after"`
	} `json:"availability"`
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// parseWireError decodes an "error" member: an object, or a bare string.
func parseWireError(raw json.RawMessage) (wireError, bool) {
	var we wireError
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return we, false
	}
	switch raw[0] {
	case '"':
		if json.Unmarshal(raw, &we.Message) != nil {
			return we, false
		}
		return we, true
	case '{':
		if json.Unmarshal(raw, &we) != nil {
			return we, false
		}
		return we, true
	}
	return we, false
}

// decode turns a whole answer into a Response or a classified error.
func (c *Client) decode(hresp *http.Response, body []byte, now time.Time) (*Response, error) {
	status := hresp.StatusCode
	if status < 200 || status > 299 {
		return nil, c.statusError(status, hresp.Header, body, now)
	}
	var wr wireResponse
	if err := c.unmarshalResponse(body, &wr); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) || !strings.HasSuffix(te.Field, "content") || !c.decodeParts(body, &wr) {
			return nil, flashpipe.AsTransient(fmt.Errorf("%w: HTTP %d: %v; body: %s", ErrMalformedResponse, status, err, c.snippet(body)))
		}
	}
	resp := &Response{
		ID:       wr.ID,
		Model:    wr.Model,
		Provider: wr.Provider,
		Header:   hresp.Header,
	}
	if resp.ID == "" {
		resp.ID = hresp.Header.Get("X-Generation-Id")
	}
	if u := wr.Usage; u != nil {
		resp.Usage = Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
		if u.Cost != nil {
			resp.Usage.Cost = *u.Cost
		}
		if resp.Usage.TotalTokens == 0 {
			resp.Usage.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	}
	// An error inside a 200 answer: top level (OpenRouter, or vLLM's flat shape) or in
	// the choice. The request itself was fine, so it is transient.
	if we, ok := parseWireError(wr.Error); ok {
		return resp, c.bodyError(status, hresp.Header, body, we, now)
	}
	if wr.Object == "error" {
		return resp, c.bodyError(status, hresp.Header, body, wireError{Message: wr.Message, Type: wr.Type, Code: wr.Code}, now)
	}
	if len(wr.Choices) == 0 {
		return resp, flashpipe.AsTransient(fmt.Errorf("%w: HTTP %d answer has no choices; body: %s", ErrMalformedResponse, status, c.snippet(body)))
	}
	ch := &wr.Choices[0]
	resp.FinishReason = ch.FinishReason
	if ch.Message.Content != nil {
		resp.Content = *ch.Message.Content
	}
	if we, ok := parseWireError(ch.Error); ok {
		return resp, c.bodyError(status, hresp.Header, body, we, now)
	}
	if ch.FinishReason == "error" {
		return resp, c.bodyError(status, hresp.Header, body, wireError{Message: "finish_reason is \"error\""}, now)
	}
	if ch.FinishReason == "length" {
		return resp, flashpipe.AsPermanent(fmt.Errorf("%w (model %s, %d completion tokens)", ErrMaxTokens, resp.Model, resp.Usage.CompletionTokens))
	}
	if strings.TrimSpace(resp.Content) == "" {
		why := ""
		if r := ch.Message.Refusal; r != nil && *r != "" {
			why = fmt.Sprintf(" (refusal: %s)", c.redact(truncate(*r, 300)))
		}
		return resp, flashpipe.AsTransient(fmt.Errorf("%w: finish_reason %q%s", ErrEmptyContent, ch.FinishReason, why))
	}
	return resp, nil
}

// decodeParts re-decodes a body whose content is an array of parts, joining the text
// parts into wr.Choices[0]'s content.
func (c *Client) decodeParts(body []byte, wr *wireResponse) bool {
	var parts wireChoiceParts
	if json.Unmarshal(body, &parts) != nil || len(parts.Choices) == 0 {
		return false
	}
	var sb strings.Builder
	for _, p := range parts.Choices[0].Message.Content {
		if p.Type == "" || p.Type == "text" || p.Type == "output_text" {
			sb.WriteString(p.Text)
		}
	}
	s := sb.String()
	if len(wr.Choices) == 0 {
		wr.Choices = make([]wireChoice, 1)
	}
	wr.Choices[0].Message.Content = &s
	return true
}

// APIError is an error the API answered: a non-2xx status, or an error object inside
// a 200 answer. It never contains the API key.
type APIError struct {
	// Status is the HTTP status (200 for an error inside a 200 answer).
	Status int
	// Code is the most specific machine-readable code the body gives, in this order:
	// metadata.reason (e.g. "in_flight_budget_exhausted"), availability.code,
	// error_type, metadata.error_type, type, a string code, a numeric code. Empty if none.
	Code string
	// Message is the error message of the body (or the HTTP status text).
	Message string
	// Metadata is OpenRouter's error.metadata, if any.
	Metadata map[string]any
	// RetryAfter is the wait the API asked for, zero if none.
	RetryAfter time.Duration
	// RateLimit holds the X-RateLimit-* values of the answer, if any.
	RateLimit RateLimit
	// Body is the start of the body (at most 512 bytes), for diagnosis.
	Body string

	account bool
}

// RateLimit is the X-RateLimit-* headers of an answer (OpenRouter sends them on its
// 429s, and copies them into error.metadata.headers). Limit 0 means none were given.
type RateLimit struct {
	Limit     int
	Remaining int
	Reset     time.Time
}

func (e *APIError) Error() string {
	var sb strings.Builder
	sb.WriteString("llm: HTTP ")
	sb.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		sb.WriteString(" (")
		sb.WriteString(e.Code)
		sb.WriteString(")")
	}
	if e.Message != "" {
		sb.WriteString(": ")
		sb.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		sb.WriteString("; retry after ")
		sb.WriteString(e.RetryAfter.String())
	}
	if e.account {
		sb.WriteString("; account problem: check the API key, its limit and the credits")
	}
	return sb.String()
}

// Is makes errors.Is(err, ErrAccount) true for account-level failures.
func (e *APIError) Is(target error) bool { return target == ErrAccount && e.account }

// statusError builds the classified error for a non-2xx answer.
func (c *Client) statusError(status int, h http.Header, body []byte, now time.Time) error {
	var we wireError
	var env wireResponse
	if json.Unmarshal(body, &env) == nil {
		if w, ok := parseWireError(env.Error); ok {
			we = w
		} else if env.Object == "error" || env.Message != "" {
			we = wireError{Message: env.Message, Type: env.Type, Code: env.Code}
		}
	}
	if we.Message == "" {
		// FastAPI-style {"detail": "..."} or plain text from a proxy.
		var d struct {
			Detail any `json:"detail"`
		}
		if json.Unmarshal(body, &d) == nil && d.Detail != nil {
			we.Message = fmt.Sprint(d.Detail)
		} else if t := http.StatusText(status); t != "" {
			we.Message = t
		} else {
			we.Message = "no error message in the answer"
		}
	}
	e := c.apiError(status, h, body, we, now)

	class := flashpipe.Permanent
	switch {
	case status == http.StatusUnauthorized:
		e.account = true
	case status == http.StatusPaymentRequired:
		// OpenRouter's in-flight budget 402 asks to wait; credits and key limits do not.
		if metaString(e.Metadata, "reason") == "in_flight_budget_exhausted" ||
			metaString(e.Metadata, "limit_source") == "openrouter_in_flight_budget" ||
			hasRetryAfter(h) {
			class = flashpipe.Transient
		} else {
			e.account = true
		}
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests,
		status == http.StatusTooEarly, status >= 500:
		class = flashpipe.Transient
	case we.Availability != nil && we.Availability.Retryable != nil && *we.Availability.Retryable:
		class = flashpipe.Transient
	}
	// 400, 403, 404, 413, 422, other 4xx and unexpected 1xx/3xx stay permanent.
	if class == flashpipe.Permanent {
		return &flashpipe.ClassifiedError{Class: flashpipe.Permanent, Err: e}
	}
	return &flashpipe.ClassifiedError{Class: flashpipe.Transient, RetryAfter: e.RetryAfter, Err: e}
}

// bodyError builds the (transient) error for an error object inside a 200 answer.
func (c *Client) bodyError(status int, h http.Header, body []byte, we wireError, now time.Time) error {
	e := c.apiError(status, h, body, we, now)
	return &flashpipe.ClassifiedError{Class: flashpipe.Transient, RetryAfter: e.RetryAfter, Err: e}
}

func (c *Client) apiError(status int, h http.Header, body []byte, we wireError, now time.Time) *APIError {
	e := &APIError{
		Status:   status,
		Message:  c.redact(truncate(strings.TrimSpace(we.Message), 1000)),
		Metadata: we.Metadata,
		Body:     c.snippet(body),
	}
	if b := string(body); c.redact(b) != b {
		e.Metadata, _ = c.redactAny(e.Metadata).(map[string]any)
	}
	e.Code = c.redact(errorCode(we))
	metaHeaders, _ := e.Metadata["headers"].(map[string]any)
	e.RateLimit = parseRateLimit(h, metaHeaders, now)
	e.RetryAfter = retryAfter(h, metaHeaders, now)
	if e.RetryAfter == 0 && we.Availability != nil && we.Availability.RetryAfter != nil && *we.Availability.RetryAfter > 0 {
		e.RetryAfter = secondsToDuration(*we.Availability.RetryAfter)
	}
	if e.RetryAfter == 0 && status == http.StatusTooManyRequests && e.RateLimit.Reset.After(now) &&
		(e.RateLimit.Limit == 0 || e.RateLimit.Remaining <= 0) {
		e.RetryAfter = e.RateLimit.Reset.Sub(now)
	}
	return e
}

func errorCode(we wireError) string {
	if s := metaString(we.Metadata, "reason"); s != "" {
		return s
	}
	if we.Availability != nil && we.Availability.Code != "" {
		return we.Availability.Code
	}
	if we.ErrorType != "" {
		return we.ErrorType
	}
	if s := metaString(we.Metadata, "error_type"); s != "" {
		return s
	}
	if we.Type != "" {
		return we.Type
	}
	code := bytes.TrimSpace(we.Code)
	if isNull(code) {
		return ""
	}
	if code[0] == '"' {
		var s string
		if json.Unmarshal(code, &s) == nil {
			return s
		}
		return ""
	}
	return string(code)
}

func metaString(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// redactAny returns v with the key and its fragments redacted from every string it
// contains.
func (c *Client) redactAny(v any) any {
	switch x := v.(type) {
	case string:
		return c.redact(x)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, vv := range x {
			m[c.redact(k)] = c.redactAny(vv)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, vv := range x {
			s[i] = c.redactAny(vv)
		}
		return s
	}
	return v
}

// snippet returns the start of body (at most 512 bytes) for an error message,
// scrubbed of the key. The whole body is scrubbed first, so a key cut in two by the
// truncation cannot leak half of itself.
func (c *Client) snippet(body []byte) string {
	return strings.ToValidUTF8(truncate(c.redact(string(body)), 512), "\uFFFD")
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func hasRetryAfter(h http.Header) bool {
	return h.Get("Retry-After") != "" || h.Get("Retry-After-Ms") != ""
}

// retryAfter returns the wait the answer asks for: Retry-After-Ms, Retry-After
// (seconds or an HTTP date), or the same headers copied into error.metadata.headers.
func retryAfter(h http.Header, meta map[string]any, now time.Time) time.Duration {
	if d, ok := parseRetryAfterMs(h.Get("Retry-After-Ms")); ok {
		return d
	}
	if d, ok := ParseRetryAfter(h.Get("Retry-After"), now); ok {
		return d
	}
	if d, ok := parseRetryAfterMs(metaHeader(meta, "Retry-After-Ms")); ok {
		return d
	}
	if d, ok := ParseRetryAfter(metaHeader(meta, "Retry-After"), now); ok {
		return d
	}
	return 0
}

// ParseRetryAfter parses a Retry-After value: a number of seconds (fractions allowed)
// or an HTTP date. A date in the past gives zero wait. ok is false if v is neither.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f != f {
			return 0, false
		}
		return secondsToDuration(f), true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

func parseRetryAfterMs(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f != f {
		return 0, false
	}
	return time.Duration(f * float64(time.Millisecond)), true
}

func secondsToDuration(f float64) time.Duration {
	const max = float64(1<<63-1) / float64(time.Second)
	if f > max {
		f = max
	}
	return time.Duration(f * float64(time.Second))
}

// metaHeader looks a header up in error.metadata.headers, case-insensitively.
func metaHeader(meta map[string]any, name string) string {
	for k, v := range meta {
		if strings.EqualFold(k, name) {
			switch x := v.(type) {
			case string:
				return x
			case float64:
				return strconv.FormatFloat(x, 'f', -1, 64)
			}
		}
	}
	return ""
}

func parseRateLimit(h http.Header, meta map[string]any, now time.Time) RateLimit {
	get := func(name string) string {
		if v := h.Get(name); v != "" {
			return v
		}
		return metaHeader(meta, name)
	}
	var rl RateLimit
	if v, err := strconv.Atoi(strings.TrimSpace(get("X-RateLimit-Limit"))); err == nil {
		rl.Limit = v
	}
	if v, err := strconv.Atoi(strings.TrimSpace(get("X-RateLimit-Remaining"))); err == nil {
		rl.Remaining = v
	}
	rl.Reset, _ = ParseRateLimitReset(get("X-RateLimit-Reset"), now)
	return rl
}

// ParseRateLimitReset parses an X-RateLimit-Reset value. OpenRouter sends Unix epoch
// milliseconds; Unix epoch seconds, a small number of seconds from now, and a Go-style
// duration ("1.5s", as OpenAI sends) are accepted too.
func ParseRateLimitReset(v string, now time.Time) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		d, derr := time.ParseDuration(v)
		if derr != nil || d < 0 {
			return time.Time{}, false
		}
		return now.Add(d), true
	}
	switch {
	case f != f || f < 0:
		return time.Time{}, false
	case f >= 1e11: // epoch milliseconds (1e11 ms is 1973; 1e11 s is year 5138)
		return time.UnixMilli(int64(f)), true
	case f >= 1e9: // epoch seconds (from 2001 on)
		return time.Unix(int64(f), 0), true
	default: // seconds from now
		return now.Add(secondsToDuration(f)), true
	}
}
