package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
)

// capBody is the body of PUT /v1/batches/{id}/cap.
type capBody struct {
	MaxCost *float64 `json:"max_cost"`
}

// getCap answers a batch's spend cap: what it spent against it, what calls in flight
// hold, and whether it is paused (capped false: the batch has no cap).
func (s *Server) getCap(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	if err := s.visible(ctx, principalOf(ctx), id); err != nil {
		s.fail(w, r, err)
		return
	}
	a, ok, err := s.client.BatchSpend(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		a = app.SpendAccount{BatchID: id}
	}
	writeJSON(w, http.StatusOK, a)
}

// putCap sets a batch's spend cap (raising it resumes a batch paused at its cap).
func (s *Server) putCap(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	if err := s.visible(ctx, principalOf(ctx), id); err != nil {
		s.fail(w, r, err)
		return
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	var b capBody
	if err := dec.Decode(&b); err != nil {
		s.fail(w, r, jsonError(err))
		return
	}
	if b.MaxCost == nil {
		s.fail(w, r, fieldError("max_cost", "required: the cap in USD"))
		return
	}
	if *b.MaxCost <= 0 || *b.MaxCost > flashpipe.MaxCostLimit {
		s.fail(w, r, fieldError("max_cost", "%v: want more than 0 and at most %g USD", *b.MaxCost, flashpipe.MaxCostLimit))
		return
	}
	a, err := s.client.SetBatchCap(ctx, id, *b.MaxCost)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}
