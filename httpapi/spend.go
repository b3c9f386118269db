package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/flashpipe/flashpipe"
)

// The spend cap of a batch: read it, and set it (which resumes a batch paused at its
// cap). The API and the batch page call the same two functions.

// getCap answers a batch's spend account.
func (s *Server) getCap(w http.ResponseWriter, r *http.Request) {
	sp, err := s.spend(r.Context(), principalOf(r.Context()), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sp)
}

// putCap sets a batch's spend cap from a JSON body {"cap_usd": N}.
func (s *Server) putCap(w http.ResponseWriter, r *http.Request) {
	var body CapBody
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, r, err)
			return
		}
		if errors.Is(err, io.EOF) {
			s.fail(w, r, fieldError("body", "want a JSON object {\"cap_usd\": N}"))
			return
		}
		s.fail(w, r, fieldError("body", "want a JSON object {\"cap_usd\": N}: %v", err))
		return
	}
	if err := validCap(body.CapUSD); err != nil {
		s.fail(w, r, err)
		return
	}
	sp, err := s.setCap(r.Context(), principalOf(r.Context()), r.PathValue("id"), body.CapUSD)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sp)
}

// spend returns the spend account of a batch p may see.
func (s *Server) spend(ctx context.Context, p principal, id string) (*Spend, error) {
	if err := s.visible(ctx, p, id); err != nil {
		return nil, err
	}
	a, capped, err := s.client.BatchSpend(ctx, id)
	if err != nil {
		return nil, err
	}
	sp := spendOf(id, a, capped)
	return &sp, nil
}

// setCap sets the spend cap of a batch p may see to usd (checked by validCap).
func (s *Server) setCap(ctx context.Context, p principal, id string, usd float64) (*Spend, error) {
	if err := s.visible(ctx, p, id); err != nil {
		return nil, err
	}
	if _, err := s.client.SetBatchCap(ctx, id, usd); err != nil {
		return nil, err
	}
	return s.spend(ctx, p, id)
}

// validCap refuses a cap the ledger would: 0 or less, or over the limit.
func validCap(usd float64) error {
	if !(usd > 0) || usd > flashpipe.MaxCostLimit {
		return fieldError("cap_usd", "want an amount of USD above 0 and at most %g", flashpipe.MaxCostLimit)
	}
	return nil
}

// parseCap reads the cap of the page's form: a plain decimal number of USD, a
// leading "$" allowed ("12.50", "$5").
func parseCap(raw string) (float64, error) {
	v := strings.TrimPrefix(strings.TrimSpace(raw), "$")
	if v == "" {
		return 0, fieldError("cap_usd", "enter an amount of USD, e.g. 5 or 12.50")
	}
	usd, err := flashpipe.ParseMaxCost(strings.TrimSpace(v))
	if err != nil {
		return 0, fieldError("cap_usd", "%q is not an amount of USD above 0 and at most %g (e.g. 5 or 12.50)", raw, flashpipe.MaxCostLimit)
	}
	return usd, nil
}
