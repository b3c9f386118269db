package llmsim

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/flashpipe/flashpipe/internal/stages"
)

// models answers GET /models in OpenRouter's shape: every model the simulator is
// asked about (Config.Models, else the default model) with the prices it charges, in
// USD per token as decimal strings, so that a client pricing its calls from the list
// agrees with the usage.cost the simulator reports.
func (s *Simulator) models(w http.ResponseWriter, r *http.Request) {
	ids := s.cfg.Models
	if len(ids) == 0 {
		ids = []string{stages.DefaultModel}
	}
	perToken := func(perM float64) string { return strconv.FormatFloat(perM/1e6, 'g', -1, 64) }
	data := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		data = append(data, map[string]any{
			"id":             id,
			"name":           "Simulated " + id,
			"context_length": 200000,
			"pricing": map[string]string{
				"prompt":     perToken(s.cfg.PricePromptPerM),
				"completion": perToken(s.cfg.PriceCompletionPerM),
				"request":    "0",
				"image":      "0",
			},
		})
	}
	b, _ := json.Marshal(map[string]any{"data": data})
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
