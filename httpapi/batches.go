package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/export"
)

// StateSubmitted is the state of a batch whose manifest is published but which the
// store does not hold yet (the first moments of a batch).
const StateSubmitted = "submitted"

// postBatch submits a batch: 201 for a new batch (or a replacement), 200 for a
// resubmission of the same items.
func (s *Server) postBatch(w http.ResponseWriter, r *http.Request) {
	in, err := readSubmission(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sub, skipped, err := s.submit(r.Context(), principalOf(r.Context()), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if sub.Resubmitted {
		status = http.StatusOK
	} else {
		w.Header().Set("Location", linksOf(sub.Manifest.BatchID).Self)
	}
	writeJSON(w, status, submittedOf(sub, skipped))
}

// listBatches lists the most recent batches the token sees, newest first.
func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit", DefaultListLimit)
	if err == nil && (limit < 1 || limit > MaxListLimit) {
		err = fieldError("limit", "must be between 1 and %d", MaxListLimit)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.batches(r.Context(), principalOf(r.Context()), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"batches": list})
}

// batches lists up to limit batches p sees, newest first.
func (s *Server) batches(ctx context.Context, p principal, limit int) ([]Batch, error) {
	n := limit
	if p.restricted {
		n = 0 // filtered here: read them all (the store has no tenant filter yet)
	}
	all, err := s.store.Batches(ctx, n)
	if err != nil {
		return nil, err
	}
	out := make([]Batch, 0, min(len(all), limit))
	for _, b := range all {
		if p.sees(b.Manifest.Tenant) && len(out) < limit {
			out = append(out, viewOf(b))
		}
	}
	return out, nil
}

// getBatch answers a batch's status.
func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	d, err := s.detail(r.Context(), principalOf(r.Context()), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// detail reads a batch's status, failed items and the live services. A batch whose
// manifest is published but not yet stored is StateSubmitted.
func (s *Server) detail(ctx context.Context, p principal, id string) (*BatchDetail, error) {
	if err := s.visible(ctx, p, id); err != nil {
		return nil, err
	}
	d := &BatchDetail{FailedItems: []app.FailedItem{}}
	rep, err := s.client.Report(ctx, id)
	if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
		return nil, err
	}
	// The streams may be ahead of the store: a generation published (a retry) that
	// the store does not hold yet runs, whatever the store says of the one before.
	m, merr := s.client.Manifest(ctx, id)
	if merr != nil && !errors.Is(merr, flashpipe.ErrNotFound) {
		return nil, merr
	}
	switch {
	case err == nil:
		d.Batch, d.Metrics, d.FailedItems = viewOf(rep.BatchStatus), metricsOf(rep.Metrics), rep.FailedItems
		if merr == nil && m.Generation > d.Generation {
			d.Generation, d.State, d.CompletedAt = m.Generation, flashpipe.BatchRunning, nil
		}
	case merr == nil:
		d.Batch = viewOf(flashpipe.BatchStatus{Manifest: m, State: StateSubmitted, SubmittedAt: m.CreatedAt})
	default:
		return nil, err
	}
	states, err := s.client.Services(ctx)
	if err != nil {
		s.log.Warn("live services not read", "err", err)
	}
	d.Services = servicesOf(states)
	return d, nil
}

// tenantOf returns the tenant of a batch (found false when no batch has the id).
func (s *Server) tenantOf(ctx context.Context, id string) (tenant string, found bool, err error) {
	st, err := s.store.Batch(ctx, id)
	if err == nil {
		return st.Manifest.Tenant, true, nil
	}
	if !errors.Is(err, flashpipe.ErrNotFound) {
		return "", false, err
	}
	m, err := s.client.Manifest(ctx, id)
	if errors.Is(err, flashpipe.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return m.Tenant, true, nil
}

// visible checks a batch id and that p may see the batch: a batch of another tenant
// is not found, as one that does not exist.
func (s *Server) visible(ctx context.Context, p principal, id string) error {
	if err := flashpipe.ValidateBatchID(id); err != nil {
		return fieldError("id", "%v", err)
	}
	tenant, found, err := s.tenantOf(ctx, id)
	if err != nil {
		return err
	}
	if !found || !p.sees(tenant) {
		return errorf(http.StatusNotFound, "batch %q not found", id)
	}
	return nil
}

// failed answers a batch's failed items, in order.
func (s *Server) failed(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	if err := s.visible(ctx, principalOf(ctx), id); err != nil {
		s.fail(w, r, err)
		return
	}
	items := []app.FailedItem{}
	err := s.client.Results(ctx, id, flashpipe.ResultFilter{Status: flashpipe.StatusFailed}, func(res flashpipe.Result) error {
		items = append(items, app.FailedItemOf(res))
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"batch_id": id, "failed_items": items})
}

// retry starts a generation of a complete batch's failed items: 202, the new
// generation runs.
func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	res, err := s.startRetry(r.Context(), principalOf(r.Context()), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", res.Links.Self)
	writeJSON(w, http.StatusAccepted, res)
}

func (s *Server) startRetry(ctx context.Context, p principal, id string) (*Retried, error) {
	if err := s.visible(ctx, p, id); err != nil {
		return nil, err
	}
	sub, err := s.client.Retry(ctx, id)
	if err != nil {
		return nil, err
	}
	m := sub.Manifest
	return &Retried{BatchID: id, Generation: m.Generation, Items: m.Expected(), Published: sub.Published, Links: linksOf(id)}, nil
}

// contentTypes are the media types of the export formats (application/octet-stream
// for any other).
var contentTypes = map[string]string{
	"tsv":         "text/tab-separated-values; charset=utf-8",
	"apkg":        "application/vnd.anki.apkg",
	"anki-tsv":    "text/plain; charset=utf-8",
	"csv":         "text/csv; charset=utf-8",
	"jsonl":       "application/x-ndjson",
	"items-jsonl": "application/x-ndjson",
	"failed":      "text/csv; charset=utf-8",
}

// export writes a stored batch in an export format, as an attachment.
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	if err := s.writeExport(w, r, principalOf(r.Context()), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
	}
}

// writeExport writes the export; an error before the first byte is returned (the
// caller answers it), one after it breaks the connection, so that a client never
// takes a cut file for a whole one.
func (s *Server) writeExport(w http.ResponseWriter, r *http.Request, p principal, id string) error {
	ctx := r.Context()
	q := r.URL.Query()
	for name := range q {
		switch name {
		case "format", "deck", "subdecks_per_tab", "partial":
		default:
			return fieldError(name, "unknown parameter (known: format, deck, subdecks_per_tab, partial)")
		}
	}
	format := q.Get("format")
	if format == "" {
		format = export.DefaultFormat
	}
	f, err := export.Lookup(format)
	if err != nil {
		return fieldError("format", "unknown format %q (known: %s)", format, export.Names())
	}
	subdecks, err := boolParam(q.Get("subdecks_per_tab"), "subdecks_per_tab")
	if err != nil {
		return err
	}
	partial, err := boolParam(q.Get("partial"), "partial")
	if err != nil {
		return err
	}
	out := app.Output{Format: f.Name, Deck: q.Get("deck"), SubdecksPerTab: subdecks}
	if err := out.Check(); err != nil {
		return fieldError("deck", "%v", err)
	}
	if err := s.visible(ctx, p, id); err != nil {
		return err
	}
	st, err := s.store.Batch(ctx, id)
	if errors.Is(err, flashpipe.ErrNotFound) { // published, not stored yet
		return errorf(http.StatusConflict, "batch %q is %s: nothing is stored yet; wait for it to complete", id, StateSubmitted)
	}
	if err != nil {
		return err
	}
	if st.State != flashpipe.BatchComplete && !partial {
		return errorf(http.StatusConflict, "batch %q is %s (%d of %d items stored): wait for it to complete, or add partial=true",
			id, st.State, st.Done, st.Manifest.Count)
	}
	cw := &countingWriter{w: w}
	ew, err := out.NewWriter(cw, st.Manifest)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeOf(f.Name))
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+f.Ext))
	h.Set("Cache-Control", "no-store")
	err = s.client.Results(ctx, id, flashpipe.ResultFilter{}, ew.Write)
	if err != nil {
		export.Discard(ew)
	} else {
		err = ew.Close()
	}
	if err != nil && cw.n > 0 {
		s.log.Warn("export broken off", "batch", id, "format", f.Name, "err", err)
		panic(http.ErrAbortHandler)
	}
	return err
}

func contentTypeOf(format string) string {
	if t, ok := contentTypes[format]; ok {
		return t
	}
	return "application/octet-stream"
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
