package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flashpipe/flashpipe"
)

// KeyInfo is OpenRouter's GET /key answer: the key's credit limit and usage.
type KeyInfo struct {
	Label string `json:"label"`
	// Limit is the key's credit limit, nil if unlimited.
	Limit *float64 `json:"limit"`
	// LimitRemaining is what is left of Limit, nil if unlimited.
	LimitRemaining *float64 `json:"limit_remaining"`
	LimitReset     *string  `json:"limit_reset"`
	Usage          float64  `json:"usage"`
	UsageDaily     float64  `json:"usage_daily"`
	UsageWeekly    float64  `json:"usage_weekly"`
	UsageMonthly   float64  `json:"usage_monthly"`
	IsFreeTier     bool     `json:"is_free_tier"`
}

// Key fetches the key's limits and usage (GET {base}/key), for a check before a batch
// starts. Errors are classified like Complete's (a 401 is ErrAccount).
func (c *Client) Key(ctx context.Context) (*KeyInfo, error) {
	body, err := c.get(ctx, c.keyURL, 1<<20)
	if err != nil {
		return nil, err
	}
	var env struct {
		Data *KeyInfo `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Data == nil {
		return nil, flashpipe.AsTransient(fmt.Errorf("%w: key info: %s", ErrMalformedResponse, c.snippet(body)))
	}
	return env.Data, nil
}

// get sends one GET to the API with the client's headers and returns the body of a
// 200 answer (at most limit bytes); other answers and transport errors are classified
// like Complete's.
func (c *Client) get(ctx context.Context, url string, limit int64) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodGet, url, nil)
	if err != nil {
		return nil, flashpipe.AsPermanent(fmt.Errorf("llm: building request: %w", err))
	}
	hreq.Header = c.baseHeader.Clone()
	hreq.Header.Del("Content-Type")
	hresp, err := c.http.Do(hreq)
	if err != nil {
		return nil, c.transportError(ctx, actx, err)
	}
	defer hresp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, limit))
	if err != nil {
		return nil, c.transportError(ctx, actx, fmt.Errorf("reading answer: %w", err))
	}
	if hresp.StatusCode != http.StatusOK {
		return nil, c.statusError(hresp.StatusCode, hresp.Header, body, time.Now())
	}
	return body, nil
}
