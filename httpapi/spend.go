package httpapi

import (
	"context"
	"strings"

	"github.com/flashpipe/flashpipe"
)

// The spend card of the batch page: it reads the batch's spend account and sets its
// cap through the same app calls as GET and PUT /v1/batches/{id}/cap (cap.go).

// setCap sets the spend cap of a batch p may see to usd (checked by parseCap).
func (s *Server) setCap(ctx context.Context, p principal, id string, usd float64) error {
	if err := s.visible(ctx, p, id); err != nil {
		return err
	}
	_, err := s.client.SetBatchCap(ctx, id, usd)
	return err
}

// parseCap reads the cap of the page's form: a plain decimal number of USD above 0
// and at most flashpipe.MaxCostLimit, a leading "$" allowed ("12.50", "$5").
func parseCap(raw string) (float64, error) {
	v := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(raw), "$"))
	if v == "" {
		return 0, fieldError("max_cost", "enter an amount of USD, e.g. 5 or 12.50")
	}
	usd, err := flashpipe.ParseMaxCost(v)
	if err != nil {
		return 0, fieldError("max_cost", "%q is not an amount of USD above 0 and at most %g (e.g. 5 or 12.50)", raw, flashpipe.MaxCostLimit)
	}
	return usd, nil
}
