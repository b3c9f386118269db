package batchapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// OpenRouter is OpenRouter's inline Batch API. The wire shapes follow OpenRouter's
// Batch API quickstart and API reference (openrouter.ai/docs/batch-quickstart,
// /docs/api/api-reference/batch/*, the SDKs' BatchSubmitBody and BatchObject):
//
//	POST {base}/batches   {"endpoint", "model", "completion_window", "requests": [{"custom_id", "body"}]}
//	                      (endpoint and model before requests: the API reads the body as a stream)
//	                      → 202 {"id", "status": "validating", "request_counts", "created_at", ...}
//	GET  {base}/batches/{id} → the batch; once terminal, "results": [{"custom_id",
//	                      "response": {"status_code", "body"}} or {"custom_id", "error": {"message", "type"}}]
//	GET  {base}/batches   → {"data": [batch without results]}
//	POST {base}/batches/{id}/cancel
//
// The documented submit body has no metadata, so the idempotency key travels in the
// custom_ids only; Find therefore recognises a batch by its results' custom_ids (or by
// a metadata echo, where an API copying this shape has one), and a candidate still
// running cannot be told apart: Find then returns a transient error, and the caller
// waits rather than submit a second time.
type OpenRouter struct{ c *llm.Client }

// Name implements Provider.
func (o *OpenRouter) Name() string { return ProviderOpenRouter }

type orRequest struct {
	CustomID string          `json:"custom_id"`
	Body     json.RawMessage `json:"body"`
}

type orSubmit struct {
	Endpoint         string      `json:"endpoint"`
	Model            string      `json:"model"`
	CompletionWindow string      `json:"completion_window"`
	Requests         []orRequest `json:"requests"`
}

type wireCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

type wireError struct {
	Code    any    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

// wireResponse is a result's response: its HTTP status and chat completion body.
type wireResponse struct {
	StatusCode int             `json:"status_code"`
	Body       json.RawMessage `json:"body"`
}

type orResult struct {
	CustomID string        `json:"custom_id"`
	Response *wireResponse `json:"response"`
	Error    *wireError    `json:"error"`
}

type orBatch struct {
	ID            string            `json:"id"`
	Status        State             `json:"status"`
	Model         string            `json:"model"`
	Endpoint      string            `json:"endpoint"`
	CreatedAt     int64             `json:"created_at"`
	RequestCounts wireCounts        `json:"request_counts"`
	Metadata      map[string]string `json:"metadata"`
	Results       []orResult        `json:"results"`
}

func (b *orBatch) batch() Batch {
	out := Batch{ID: b.ID, State: b.Status, Total: b.RequestCounts.Total, Completed: b.RequestCounts.Completed,
		Failed: b.RequestCounts.Failed, CreatedAt: time.Unix(b.CreatedAt, 0).UTC(), Metadata: b.Metadata,
		Model: b.Model, Endpoint: b.Endpoint, Key: b.Metadata[MetadataKey]}
	if out.Key == "" && len(b.Results) > 0 {
		out.Key = KeyOfCustomID(b.Results[0].CustomID)
	}
	return out
}

// Submit implements Provider.
func (o *OpenRouter) Submit(ctx context.Context, spec Spec) (Batch, error) {
	if err := spec.validate(); err != nil {
		return Batch{}, flashpipe.AsPermanent(err)
	}
	body := orSubmit{Endpoint: EndpointChat, Model: spec.Model, CompletionWindow: "24h", Requests: make([]orRequest, len(spec.Requests))}
	size := 0
	for i, r := range spec.Requests {
		b, err := o.c.EncodeRequest(r.Body)
		if err != nil {
			return Batch{}, fmt.Errorf("batchapi: requests[%d]: %w", i, err)
		}
		size += len(b)
		body.Requests[i] = orRequest{CustomID: r.CustomID, Body: b}
	}
	if size > MaxBytes {
		return Batch{}, flashpipe.AsPermanent(fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidSpec, size, MaxBytes))
	}
	raw, err := marshal(body)
	if err != nil {
		return Batch{}, flashpipe.AsPermanent(fmt.Errorf("batchapi: encode batch: %w", err))
	}
	_, resp, err := o.c.Send(ctx, http.MethodPost, "/batches", "", raw)
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: submit: %w", err)
	}
	var b orBatch
	if err := json.Unmarshal(resp, &b); err != nil || b.ID == "" {
		// Accepted (2xx) but unreadable: whether it exists is unknown, so the caller
		// must look for it before submitting again.
		return Batch{}, flashpipe.AsTransient(fmt.Errorf("batchapi: submit answer is not a batch: %v", o.c.Redact(snippet(resp))))
	}
	out := b.batch()
	out.Key = spec.Key
	return out, nil
}

func (o *OpenRouter) get(ctx context.Context, id string) (*orBatch, error) {
	_, resp, err := o.c.Send(ctx, http.MethodGet, "/batches/"+url.PathEscape(id), "", nil)
	if err != nil {
		return nil, fmt.Errorf("batchapi: get batch %s: %w", id, err)
	}
	var b orBatch
	if err := json.Unmarshal(resp, &b); err != nil || b.ID == "" {
		return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s: answer is not a batch: %v", id, o.c.Redact(snippet(resp))))
	}
	return &b, nil
}

// Get implements Provider.
func (o *OpenRouter) Get(ctx context.Context, id string) (Batch, error) {
	b, err := o.get(ctx, id)
	if err != nil {
		return Batch{}, err
	}
	return b.batch(), nil
}

// Results implements Provider.
func (o *OpenRouter) Results(ctx context.Context, id string) ([]Result, error) {
	b, err := o.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !b.Status.Terminal() {
		return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s is %s, not finished", id, b.Status))
	}
	out := make([]Result, 0, len(b.Results))
	for _, r := range b.Results {
		out = append(out, decodeResult(o.c, r.CustomID, r.Response, r.Error))
	}
	return out, nil
}

// decodeResult turns one result line of either shape into a Result: a response body
// is read exactly as a synchronous answer (llm.Client.DecodeCompletion, which
// classifies its errors); a line with only an error is a request the provider failed,
// retried (transient) unless it was refused as invalid.
func decodeResult(c *llm.Client, id string, resp *wireResponse, e *wireError) Result {
	res := Result{CustomID: id}
	if resp != nil && len(resp.Body) > 0 && string(resp.Body) != "null" {
		res.Response, res.Err = c.DecodeCompletion(cmpStatus(resp.StatusCode), resp.Body)
		return res
	}
	if e == nil {
		res.Err = flashpipe.AsTransient(fmt.Errorf("batchapi: request %s: result has neither a response nor an error", id))
		return res
	}
	err := fmt.Errorf("batchapi: request %s failed in the batch: %s (%s %v)", id, c.Redact(strings.TrimSpace(e.Message)), e.Type, e.Code)
	if strings.Contains(e.Type, "invalid") || fmt.Sprint(e.Code) == "400" {
		res.Err = flashpipe.AsPermanent(err)
	} else {
		res.Err = flashpipe.AsTransient(err)
	}
	return res
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

// Cancel implements Provider.
func (o *OpenRouter) Cancel(ctx context.Context, id string) error {
	if _, _, err := o.c.Send(ctx, http.MethodPost, "/batches/"+url.PathEscape(id)+"/cancel", "", []byte("{}")); err != nil {
		return fmt.Errorf("batchapi: cancel batch %s: %w", id, err)
	}
	return nil
}

// Find implements Provider: it lists the batches and recognises the one carrying key
// by its metadata or by the custom_ids of its results. A candidate created since
// then (and not known to the caller) that is still running, whose results are not
// out yet, cannot be told apart: Find returns a transient error, so the caller waits
// instead of paying twice.
func (o *OpenRouter) Find(ctx context.Context, key string, since time.Time, known map[string]bool) (*Batch, error) {
	list, err := listBatches(ctx, o.c)
	if err != nil {
		return nil, err
	}
	undecided := 0
	for _, b := range list {
		if time.Unix(b.CreatedAt, 0).Before(since.Add(-time.Minute)) || known[b.ID] {
			continue
		}
		if b.Metadata[MetadataKey] == key {
			out := b.batch()
			return &out, nil
		}
		if b.Metadata[MetadataKey] != "" {
			continue
		}
		full, err := o.get(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		if len(full.Results) == 0 {
			if !full.Status.Terminal() {
				undecided++
			}
			continue
		}
		if KeyOfCustomID(full.Results[0].CustomID) == key {
			out := full.batch()
			return &out, nil
		}
	}
	if undecided > 0 {
		return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: %d batches submitted since %s are still running and name no key: cannot tell yet whether one is %s", undecided, since.Format(time.RFC3339), key))
	}
	return nil, nil
}

// listBatches reads GET {base}/batches (both shapes: {"data": [...], "has_more", "last_id"}).
func listBatches(ctx context.Context, c *llm.Client) ([]orBatch, error) {
	var all []orBatch
	after := ""
	for page := 0; page < 50; page++ {
		path := "/batches?limit=100"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		_, resp, err := c.Send(ctx, http.MethodGet, path, "", nil)
		if err != nil {
			return nil, fmt.Errorf("batchapi: list batches: %w", err)
		}
		var l struct {
			Data    []orBatch `json:"data"`
			HasMore bool      `json:"has_more"`
			LastID  string    `json:"last_id"`
		}
		if err := json.Unmarshal(resp, &l); err != nil {
			return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: list batches: answer is not a list: %v", c.Redact(snippet(resp))))
		}
		all = append(all, l.Data...)
		if !l.HasMore || l.LastID == "" || len(l.Data) == 0 {
			break
		}
		after = l.LastID
	}
	return all, nil
}

// marshal encodes v without HTML escaping, so every request body goes out byte for
// byte as the synchronous client sends it (json.Marshal would turn '<' into \u003c).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func snippet(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}
