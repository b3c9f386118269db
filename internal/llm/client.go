package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/secret"
)

// Defaults for Config.
const (
	// DefaultBaseURL is OpenRouter's OpenAI-compatible API.
	DefaultBaseURL = "https://openrouter.ai/api/v1"
	// DefaultTimeout bounds one attempt: sending the request and reading the answer.
	DefaultTimeout = 120 * time.Second
	// DefaultMaxConnsPerHost is the idle-connection pool of the client's own transport:
	// large enough that 100+ concurrent requests reuse their connections instead of
	// opening new ones.
	DefaultMaxConnsPerHost = 512
	// MaxResponseBytes is the largest answer body read; a larger one is a transient
	// error (a broken proxy, not an answer).
	MaxResponseBytes = 16 << 20
)

// Sentinel errors, matched with errors.Is. Each comes wrapped in a
// *flashpipe.ClassifiedError that gives its class.
var (
	// ErrAccount marks account-level failures: an invalid API key (401) or an account
	// out of credits or over its key limit (permanent 402). No item can succeed until a
	// human acts, so the pipeline should stop taking items.
	ErrAccount = errors.New("llm: account problem: the API key is invalid, out of credits or over its limit")
	// ErrMaxTokens marks an answer cut off at max_tokens (finish_reason "length"). It is
	// permanent: the same request will be cut off again; raise the max_tokens limit.
	ErrMaxTokens = errors.New("llm: answer cut off at max_tokens (finish_reason \"length\"): raise the max_tokens limit")
	// ErrEmptyContent marks a 200 answer without content (a cold start, say). Transient.
	ErrEmptyContent = errors.New("llm: answer has no content")
	// ErrMalformedResponse marks a body that is not a chat completion. Transient.
	ErrMalformedResponse = errors.New("llm: malformed response")
)

// Config configures a Client. The zero value of each field means its default.
type Config struct {
	// BaseURL is the API's base, without the /chat/completions suffix
	// (DefaultBaseURL).
	BaseURL string
	// APIKey is sent as "Authorization: Bearer KEY". Empty sends no Authorization
	// header (local vLLM or Ollama servers need none).
	APIKey string
	// Timeout bounds each attempt (DefaultTimeout).
	Timeout time.Duration
	// Referer and Title are OpenRouter's optional app attribution, sent as the
	// HTTP-Referer and X-OpenRouter-Title (and legacy X-Title) headers.
	Referer, Title string
	// HTTPClient, if set, is used as is (its Timeout should be zero or larger than
	// Timeout). Nil means a client with its own tuned transport (NewTransport) that
	// does not follow redirects.
	HTTPClient *http.Client
	// Logger receives one debug line per attempt. Nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			Transport: NewTransport(),
			// A redirect is answered as the error it is (e.g. http:// instead of
			// https://), not followed: following would turn the POST into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c
}

// NewTransport returns the tuned *http.Transport a Client uses when Config.HTTPClient
// is nil: proxy from the environment, HTTP/2 when the server offers it, and an idle
// pool of DefaultMaxConnsPerHost connections per host so that many concurrent requests
// keep reusing their connections.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          DefaultMaxConnsPerHost,
		MaxIdleConnsPerHost:   DefaultMaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
}

// Client calls an OpenAI-compatible chat completions endpoint. It is safe for
// concurrent use.
type Client struct {
	completionsURL string
	keyURL         string
	baseURL        string
	modelsURL      string
	baseHeader     http.Header
	secrets        *secret.Redactor // the API key, and its fragments
	timeout        time.Duration
	http           *http.Client
	log            *slog.Logger
	bufs           sync.Pool // *bytes.Buffer for answers
	decoders       sync.Pool // *wire.Decoder
	sys            sysCache  // encoded system prompts
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("llm: Config.BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("llm: Config.Timeout %v is negative", cfg.Timeout)
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n\x00 \t") {
		// Never echo the key itself.
		return nil, errors.New("llm: Config.APIKey contains whitespace or control characters")
	}
	for name, v := range map[string]string{"Referer": cfg.Referer, "Title": cfg.Title} {
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("llm: Config.%s contains a line break", name)
		}
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", "flashpipe-llm/1")
	if cfg.APIKey != "" {
		h.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	if cfg.Referer != "" {
		h.Set("HTTP-Referer", cfg.Referer)
	}
	if cfg.Title != "" {
		h.Set("X-OpenRouter-Title", cfg.Title)
		h.Set("X-Title", cfg.Title)
	}
	c := &Client{
		completionsURL: base + "/chat/completions",
		keyURL:         base + "/key",
		baseURL:        base,
		modelsURL:      base + "/models",
		baseHeader:     h,
		secrets:        secret.New(cfg.APIKey),
		timeout:        cfg.Timeout,
		http:           cfg.HTTPClient,
		log:            cfg.Logger.With("component", "llm"),
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c, nil
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ResponseFormat asks for structured output. Type is "json_schema" (with JSONSchema)
// or "json_object".
type ResponseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *JSONSchema `json:"json_schema,omitempty"`
}

// JSONSchema is the schema the answer must follow. Name matches [a-zA-Z0-9_-]{1,64}.
// Schema must be valid, compact JSON; it is sent as is.
type JSONSchema struct {
	Name   string          `json:"name"`
	Strict bool            `json:"strict"`
	Schema json.RawMessage `json:"schema"`
}

// Request is one chat completion request. It is never streamed.
type Request struct {
	Model       string
	Messages    []Message
	Temperature *float64 // nil: the model's default
	MaxTokens   int      // 0: the model's default
	// ResponseFormat, if set, asks for structured output.
	ResponseFormat *ResponseFormat
	// Provider is OpenRouter's optional routing object, sent as "provider" verbatim
	// (must be valid JSON). Other servers ignore or reject it.
	Provider json.RawMessage
}

// Usage is what the API reports an answer cost.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	// Cost in credits (USD) as OpenRouter reports it; zero from servers that do not.
	Cost float64
}

// Response is a chat completion answer.
type Response struct {
	// ID is the body's id, or the X-Generation-Id header when the body has none.
	ID           string
	Model        string
	Provider     string
	Content      string
	FinishReason string
	Usage        Usage
	// Header is the HTTP response's header (not a copy: do not modify it).
	Header http.Header
	// Latency is the time from sending the request to reading the whole answer.
	Latency time.Duration
}

// Complete sends req and returns the answer. It makes exactly one HTTP attempt,
// bounded by Config.Timeout and ctx, and never retries: that is the caller's job.
// (net/http itself resends a request only when a kept-alive connection turned out to
// be closed before any byte of it was written, so the server never saw it.)
//
// Every error is a *flashpipe.ClassifiedError (see the package doc). When the API
// answered HTTP 200 but the answer is unusable (an error object in the body, empty
// content, finish_reason "length"), Complete returns both the error and the Response,
// so the caller can still account for the Usage it was billed; otherwise the Response
// is nil on error.
func (c *Client) Complete(ctx context.Context, req Request) (*Response, error) {
	if err := validateRequest(&req); err != nil {
		return nil, flashpipe.AsPermanent(err)
	}
	body := appendRequest(make([]byte, 0, requestSize(&req)), &req, &c.sys)

	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, c.completionsURL, bytes.NewReader(body))
	if err != nil {
		return nil, flashpipe.AsPermanent(fmt.Errorf("llm: building request: %w", err))
	}
	hreq.Header = c.baseHeader.Clone()

	start := time.Now()
	hresp, err := c.http.Do(hreq)
	if err != nil {
		err = c.transportError(ctx, actx, err)
		c.logAttempt(ctx, req.Model, 0, start, nil, err)
		return nil, err
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer c.putBuf(buf)
	if n := hresp.ContentLength; n > 0 && n <= MaxResponseBytes {
		buf.Grow(int(n))
	}
	_, err = buf.ReadFrom(io.LimitReader(hresp.Body, MaxResponseBytes+1))
	hresp.Body.Close()
	if err != nil {
		err = c.transportError(ctx, actx, fmt.Errorf("reading answer (HTTP %d): %w", hresp.StatusCode, err))
		c.logAttempt(ctx, req.Model, hresp.StatusCode, start, nil, err)
		return nil, err
	}
	if buf.Len() > MaxResponseBytes {
		err = flashpipe.AsTransient(fmt.Errorf("%w: HTTP %d answer is larger than %d bytes", ErrMalformedResponse, hresp.StatusCode, MaxResponseBytes))
		c.logAttempt(ctx, req.Model, hresp.StatusCode, start, nil, err)
		return nil, err
	}
	resp, err := c.decode(hresp, buf.Bytes(), time.Now())
	if resp != nil {
		resp.Latency = time.Since(start)
	}
	c.logAttempt(ctx, req.Model, hresp.StatusCode, start, resp, err)
	return resp, err
}

func (c *Client) putBuf(b *bytes.Buffer) {
	if b.Cap() > 1<<20 { // let huge buffers go
		return
	}
	c.bufs.Put(b)
}

func validateRequest(r *Request) error {
	switch {
	case r.Model == "":
		return errors.New("llm: Request.Model is empty")
	case len(r.Messages) == 0:
		return errors.New("llm: Request.Messages is empty")
	case r.MaxTokens < 0:
		return fmt.Errorf("llm: Request.MaxTokens %d is negative", r.MaxTokens)
	}
	if t := r.Temperature; t != nil && (math.IsNaN(*t) || math.IsInf(*t, 0) || *t < 0) {
		return fmt.Errorf("llm: Request.Temperature %v is not a non-negative number", *t)
	}
	if rf := r.ResponseFormat; rf != nil {
		if rf.Type == "" {
			return errors.New("llm: Request.ResponseFormat.Type is empty")
		}
		if s := rf.JSONSchema; s != nil {
			if !validSchemaName(s.Name) || len(s.Schema) == 0 {
				return fmt.Errorf("llm: Request.ResponseFormat.JSONSchema needs a Name matching [a-zA-Z0-9_-]{1,64} (got %q) and a Schema", s.Name)
			}
		}
	}
	if len(r.Provider) > 0 && !json.Valid(r.Provider) {
		return errors.New("llm: Request.Provider is not valid JSON")
	}
	return nil
}

func validSchemaName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// transportError classifies an error from sending the request or reading the answer.
// All are transient: the caller's cancellation, the per-attempt timeout and network
// failures alike.
func (c *Client) transportError(ctx, actx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return flashpipe.AsTransient(c.scrub(fmt.Errorf("llm: request abandoned: %w", context.Cause(ctx))))
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return flashpipe.AsTransient(c.scrub(fmt.Errorf("llm: attempt timed out after %v: %w", c.timeout, context.DeadlineExceeded)))
	}
	return flashpipe.AsTransient(c.scrub(fmt.Errorf("llm: network: %w", err)))
}

func (c *Client) logAttempt(ctx context.Context, model string, status int, start time.Time, resp *Response, err error) {
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{
		slog.String("model", model),
		slog.Int("status", status),
		slog.Duration("latency", time.Since(start)),
	}
	if resp != nil {
		attrs = append(attrs,
			slog.String("id", resp.ID),
			slog.String("finish_reason", resp.FinishReason),
			slog.Int64("prompt_tokens", resp.Usage.PromptTokens),
			slog.Int64("completion_tokens", resp.Usage.CompletionTokens),
			slog.Float64("cost", resp.Usage.Cost))
	}
	if err != nil {
		attrs = append(attrs,
			slog.String("class", string(flashpipe.ClassOf(err))),
			slog.Duration("retry_after", flashpipe.RetryAfterOf(err)),
			slog.String("error", c.redact(err.Error())))
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "chat completion", attrs...)
}

// redact removes the API key and every fragment of it (secret.MinFragment bytes or
// more) from s. The key is never put into errors on purpose; this guards against
// servers that echo it, whole or in part.
func (c *Client) redact(s string) string { return c.secrets.Redact(s) }

// scrub returns err, or an error with the same chain whose message has the key and
// its fragments removed if the message contains any.
func (c *Client) scrub(err error) error { return c.secrets.Error(err) }
