package batchapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// OpenAI is the file-based Batch API of OpenAI and the providers copying it. The wire
// shapes follow OpenAI's API reference (Files: create with purpose "batch"; Batches:
// create, retrieve, cancel, list; the batch request input and output line formats):
//
//	POST {base}/files (multipart: purpose=batch, file=JSONL of {"custom_id", "method": "POST", "url", "body"})
//	                      → {"id": "file-..."}
//	POST {base}/batches   {"input_file_id", "endpoint", "completion_window": "24h", "metadata"}
//	GET  {base}/batches/{id} → {"id", "status", "request_counts", "output_file_id", "error_file_id", "metadata", ...}
//	GET  {base}/files/{id}/content → JSONL of {"custom_id", "response": {"status_code", "body"}, "error"}
//	GET  {base}/batches?limit=&after= → {"data", "has_more", "last_id"}
//	POST {base}/batches/{id}/cancel
//
// The idempotency key is in the batch's metadata (MetadataKey), which the list
// returns, so Find is exact. A crash between the upload and the batch's creation
// leaves an unused file (it costs nothing).
type OpenAI struct{ c *llm.Client }

// Name implements Provider.
func (o *OpenAI) Name() string { return ProviderOpenAI }

type oaLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

type oaBatch struct {
	orBatch
	OutputFileID string `json:"output_file_id"`
	ErrorFileID  string `json:"error_file_id"`
}

// Submit implements Provider: it uploads the requests as a JSONL file, then creates
// the batch with the key in its metadata.
func (o *OpenAI) Submit(ctx context.Context, spec Spec) (Batch, error) {
	if err := spec.validate(); err != nil {
		return Batch{}, flashpipe.AsPermanent(err)
	}
	var jsonl bytes.Buffer
	enc := json.NewEncoder(&jsonl)
	enc.SetEscapeHTML(false) // each body byte for byte as the synchronous client sends it
	for i, r := range spec.Requests {
		b, err := o.c.EncodeRequest(r.Body)
		if err != nil {
			return Batch{}, fmt.Errorf("batchapi: requests[%d]: %w", i, err)
		}
		if err := enc.Encode(oaLine{CustomID: r.CustomID, Method: http.MethodPost, URL: EndpointChat, Body: b}); err != nil {
			return Batch{}, flashpipe.AsPermanent(fmt.Errorf("batchapi: encode requests[%d]: %w", i, err))
		}
	}
	if jsonl.Len() > MaxBytes {
		return Batch{}, flashpipe.AsPermanent(fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidSpec, jsonl.Len(), MaxBytes))
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("purpose", "batch")
	fw, err := mw.CreateFormFile("file", spec.Key+".jsonl")
	if err == nil {
		_, err = fw.Write(jsonl.Bytes())
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return Batch{}, flashpipe.AsPermanent(fmt.Errorf("batchapi: build upload: %w", err))
	}
	_, resp, err := o.c.Send(ctx, http.MethodPost, "/files", mw.FormDataContentType(), form.Bytes())
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: upload requests: %w", err)
	}
	var file struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(resp, &file) != nil || file.ID == "" {
		return Batch{}, flashpipe.AsTransient(fmt.Errorf("batchapi: upload answer names no file: %v", o.c.Redact(snippet(resp))))
	}
	create, err := json.Marshal(map[string]any{"input_file_id": file.ID, "endpoint": EndpointChat,
		"completion_window": "24h", "metadata": spec.metadata()})
	if err != nil {
		return Batch{}, flashpipe.AsPermanent(fmt.Errorf("batchapi: encode batch: %w", err))
	}
	_, resp, err = o.c.Send(ctx, http.MethodPost, "/batches", "", create)
	if err != nil {
		return Batch{}, fmt.Errorf("batchapi: create batch: %w", err)
	}
	var b oaBatch
	if json.Unmarshal(resp, &b) != nil || b.ID == "" {
		return Batch{}, flashpipe.AsTransient(fmt.Errorf("batchapi: create answer is not a batch: %v", o.c.Redact(snippet(resp))))
	}
	out := b.batch()
	out.Key = spec.Key
	return out, nil
}

func (o *OpenAI) get(ctx context.Context, id string) (*oaBatch, error) {
	_, resp, err := o.c.Send(ctx, http.MethodGet, "/batches/"+url.PathEscape(id), "", nil)
	if err != nil {
		return nil, fmt.Errorf("batchapi: get batch %s: %w", id, err)
	}
	var b oaBatch
	if json.Unmarshal(resp, &b) != nil || b.ID == "" {
		return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s: answer is not a batch: %v", id, o.c.Redact(snippet(resp))))
	}
	return &b, nil
}

// Get implements Provider.
func (o *OpenAI) Get(ctx context.Context, id string) (Batch, error) {
	b, err := o.get(ctx, id)
	if err != nil {
		return Batch{}, err
	}
	return b.batch(), nil
}

// Results implements Provider: the lines of the output file and of the error file.
func (o *OpenAI) Results(ctx context.Context, id string) ([]Result, error) {
	b, err := o.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !b.Status.Terminal() {
		return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s is %s, not finished", id, b.Status))
	}
	var out []Result
	for _, f := range []string{b.OutputFileID, b.ErrorFileID} {
		if f == "" {
			continue
		}
		_, content, err := o.c.Send(ctx, http.MethodGet, "/files/"+url.PathEscape(f)+"/content", "", nil)
		if err != nil {
			return nil, fmt.Errorf("batchapi: batch %s: file %s: %w", id, f, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(content))
		sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var line orResult
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.CustomID == "" {
				return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s: file %s has a line that is not a result", id, f))
			}
			out = append(out, decodeResult(o.c, line.CustomID, line.Response, line.Error))
		}
		if err := sc.Err(); err != nil {
			return nil, flashpipe.AsTransient(fmt.Errorf("batchapi: batch %s: file %s: %w", id, f, err))
		}
	}
	return out, nil
}

// Cancel implements Provider.
func (o *OpenAI) Cancel(ctx context.Context, id string) error {
	if _, _, err := o.c.Send(ctx, http.MethodPost, "/batches/"+url.PathEscape(id)+"/cancel", "", []byte("{}")); err != nil {
		return fmt.Errorf("batchapi: cancel batch %s: %w", id, err)
	}
	return nil
}

// Find implements Provider by the metadata of the listed batches.
func (o *OpenAI) Find(ctx context.Context, key string, since time.Time, _ map[string]bool) (*Batch, error) {
	list, err := listBatches(ctx, o.c)
	if err != nil {
		return nil, err
	}
	for _, b := range list {
		if b.Metadata[MetadataKey] == key && !time.Unix(b.CreatedAt, 0).Before(since.Add(-time.Minute)) {
			out := b.batch()
			return &out, nil
		}
	}
	return nil, nil
}
