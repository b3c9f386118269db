package llm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flashpipe/flashpipe"
)

// MaxRawResponseBytes is the largest answer Send reads: a provider batch's results
// (OpenRouter returns them inline, up to its 200 MB batch size) or output file.
const MaxRawResponseBytes = 256 << 20

// EncodeRequest returns req as the JSON body of one chat completion (the "body" of a
// provider batch request), after the same checks Complete makes.
func (c *Client) EncodeRequest(req Request) ([]byte, error) {
	if err := validateRequest(&req); err != nil {
		return nil, flashpipe.AsPermanent(err)
	}
	return appendRequest(make([]byte, 0, requestSize(&req)), &req, &c.sys), nil
}

// DecodeCompletion turns a chat completion answer that arrived another way (a
// provider batch's result: its HTTP status and body) into a Response or a classified
// error, exactly as Complete would have.
func (c *Client) DecodeCompletion(status int, body []byte) (*Response, error) {
	return c.decode(&http.Response{StatusCode: status, Header: http.Header{}}, body, time.Now())
}

// Send makes one HTTP request to path under the base URL (e.g. "/batches") with the
// client's headers and key, and returns the answer's body when its status is 2xx.
// A non-2xx answer is a classified *APIError exactly as for Complete; transport
// failures are transient. The key never appears in an error. contentType "" sends
// application/json.
func (c *Client) Send(ctx context.Context, method, path, contentType string, body []byte) (int, []byte, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(actx, method, c.baseURL+path, rd)
	if err != nil {
		return 0, nil, flashpipe.AsPermanent(c.scrub(fmt.Errorf("llm: building request: %w", err)))
	}
	hreq.Header = c.baseHeader.Clone()
	if contentType != "" {
		hreq.Header.Set("Content-Type", contentType)
	}
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return 0, nil, c.transportError(ctx, actx, err)
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hresp.Body, MaxRawResponseBytes+1))
	if err != nil {
		return hresp.StatusCode, nil, c.transportError(ctx, actx, fmt.Errorf("reading answer (HTTP %d): %w", hresp.StatusCode, err))
	}
	if len(b) > MaxRawResponseBytes {
		return hresp.StatusCode, nil, flashpipe.AsTransient(fmt.Errorf("%w: HTTP %d answer is larger than %d bytes", ErrMalformedResponse, hresp.StatusCode, MaxRawResponseBytes))
	}
	if hresp.StatusCode < 200 || hresp.StatusCode > 299 {
		return hresp.StatusCode, nil, c.statusError(hresp.StatusCode, hresp.Header, b, time.Now())
	}
	return hresp.StatusCode, b, nil
}

// Redact removes the API key and its fragments from s.
func (c *Client) Redact(s string) string { return c.redact(s) }
