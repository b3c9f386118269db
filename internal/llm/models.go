package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/flashpipe/flashpipe"
)

// ModelPrice is one model of the API's model list with its list prices, in USD per
// token (OpenRouter's pricing.prompt, pricing.completion and pricing.request, a price
// per request, all sent as decimal strings).
type ModelPrice struct {
	ID                                 string
	PromptPerToken, CompletionPerToken float64
	PerRequest                         float64
}

// maxModelsBody bounds the model list's answer (OpenRouter's is about 1 MB).
const maxModelsBody = 16 << 20

// Models fetches the API's model list with prices (GET {base}/models, OpenRouter's
// shape: {"data":[{"id":..., "pricing":{"prompt":"0.000003","completion":...}}]}).
// Models whose prices cannot be read are left out. Errors are classified like
// Complete's.
func (c *Client) Models(ctx context.Context) ([]ModelPrice, error) {
	body, err := c.get(ctx, c.modelsURL, maxModelsBody)
	if err != nil {
		return nil, err
	}
	return parseModels(body)
}

func parseModels(body []byte) ([]ModelPrice, error) {
	var env struct {
		Data []struct {
			ID      string `json:"id"`
			Pricing struct {
				Prompt     json.RawMessage `json:"prompt"`
				Completion json.RawMessage `json:"completion"`
				Request    json.RawMessage `json:"request"`
			} `json:"pricing"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Data == nil {
		return nil, flashpipe.AsTransient(fmt.Errorf("%w: model list: %.200s", ErrMalformedResponse, body))
	}
	out := make([]ModelPrice, 0, len(env.Data))
	for _, m := range env.Data {
		p, okp := price(m.Pricing.Prompt)
		c, okc := price(m.Pricing.Completion)
		r, _ := price(m.Pricing.Request)
		if m.ID == "" || !okp || !okc {
			continue
		}
		out = append(out, ModelPrice{ID: m.ID, PromptPerToken: p, CompletionPerToken: c, PerRequest: r})
	}
	return out, nil
}

// price reads a price sent as a decimal string (or a number). Negative prices (the
// "-1" OpenRouter shows for a router whose price varies) are unknown.
func price(raw json.RawMessage) (float64, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v != v {
		return 0, false
	}
	return v, true
}
