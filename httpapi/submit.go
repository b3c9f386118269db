package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/ingest"
)

// DefaultSource is the source of a batch submitted over HTTP without one.
const DefaultSource = "http"

// The media types a batch is accepted in.
var (
	csvTypes   = []string{"text/csv", "application/csv"}
	jsonlTypes = []string{"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines"}
)

// submission is a batch to submit, however it arrived (a CSV or JSON Lines body, a
// JSON body, an upload on the page).
type submission struct {
	body   io.Reader
	format ingest.Format
	// jsonItems is set for a JSON body: body then holds its items as JSON Lines, one
	// item a line, and a bad row's line is the item's 1-based index.
	jsonItems bool

	BatchID     string
	Source      string
	Tenant      string
	Priority    int
	Replace     bool
	SkipBadRows bool
	// APIMode is the batch's api_mode setting: "", "sync" or "batch".
	APIMode string
	// MaxCost is the batch's spend cap in USD (its manifest's max_cost; "" none).
	MaxCost string
}

// jsonBody is the JSON form of a submit.
type jsonBody struct {
	BatchID     string            `json:"batch_id"`
	Source      string            `json:"source"`
	Tenant      string            `json:"tenant"`
	Priority    int               `json:"priority"`
	Replace     bool              `json:"replace"`
	SkipBadRows bool              `json:"skip_bad_rows"`
	APIMode     string            `json:"api_mode"`
	MaxCost     *float64          `json:"max_cost"`
	Items       []json.RawMessage `json:"items"`
}

// readSubmission reads a submit request: a CSV or JSON Lines body with its settings
// in the query, or a JSON body.
func readSubmission(r *http.Request) (*submission, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	var sub *submission
	switch {
	case slices.Contains(csvTypes, mt):
		sub = &submission{body: r.Body, format: ingest.FormatCSV}
	case slices.Contains(jsonlTypes, mt):
		sub = &submission{body: r.Body, format: ingest.FormatJSONL}
	case mt == "application/json":
		return readJSONSubmission(r.Body)
	default:
		return nil, errorf(http.StatusUnsupportedMediaType,
			"Content-Type %q is not a batch: send text/csv, application/x-ndjson (JSON Lines) or application/json", r.Header.Get("Content-Type"))
	}
	q := r.URL.Query()
	for name := range q {
		switch name {
		case "batch_id", "source", "tenant", "priority", "replace", "skip_bad_rows", "max_cost", "api_mode":
		default:
			return nil, fieldError(name, "unknown parameter (known: batch_id, source, tenant, priority, replace, skip_bad_rows, max_cost, api_mode)")
		}
	}
	sub.BatchID, sub.Source, sub.Tenant, sub.MaxCost = q.Get("batch_id"), q.Get("source"), q.Get("tenant"), q.Get("max_cost")
	if sub.Priority, err = intParam(q.Get("priority"), "priority", 0); err != nil {
		return nil, err
	}
	if sub.Replace, err = boolParam(q.Get("replace"), "replace"); err != nil {
		return nil, err
	}
	if sub.SkipBadRows, err = boolParam(q.Get("skip_bad_rows"), "skip_bad_rows"); err != nil {
		return nil, err
	}
	sub.APIMode = q.Get("api_mode")
	if err := flashpipe.ValidateAPIMode(sub.APIMode); err != nil {
		return nil, fieldError("api_mode", "%v", err)
	}
	return sub, nil
}

// readJSONSubmission reads a JSON body; its items become JSON Lines for ingest, so a
// JSON body is checked by the same rules, with the same reasons, as a file.
func readJSONSubmission(body io.Reader) (*submission, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var b jsonBody
	if err := dec.Decode(&b); err != nil {
		return nil, jsonError(err)
	}
	if dec.More() {
		return nil, errorf(http.StatusBadRequest, "the body holds more than one JSON value")
	}
	if err := flashpipe.ValidateAPIMode(b.APIMode); err != nil {
		return nil, fieldError("api_mode", "%v", err)
	}
	var lines bytes.Buffer
	for i, raw := range b.Items {
		if err := json.Compact(&lines, raw); err != nil {
			return nil, fieldError(fmt.Sprintf("items[%d]", i), "%v", err)
		}
		lines.WriteByte('\n')
	}
	sub := &submission{
		body: &lines, format: ingest.FormatJSONL, jsonItems: true,
		BatchID: b.BatchID, Source: b.Source, Tenant: b.Tenant, Priority: b.Priority, Replace: b.Replace, SkipBadRows: b.SkipBadRows,
		APIMode: b.APIMode,
	}
	if b.MaxCost != nil {
		sub.MaxCost = strconv.FormatFloat(*b.MaxCost, 'f', -1, 64)
	}
	return sub, nil
}

// jsonError describes a JSON body that does not decode, naming the field when it can.
func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &ute):
		return fieldError(ute.Field, "must be %s, not %s", jsonType(ute.Type.Kind().String()), ute.Value)
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "the body is not valid JSON: %v (at byte %d)", se, se.Offset)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "the body is empty: send {\"items\": [...]}")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "the body is not valid JSON: it ends too early")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ := strconv.Unquote(f)
		return fieldError(name, "unknown field (known: batch_id, source, tenant, priority, replace, skip_bad_rows, items)")
	}
	return errorf(http.StatusBadRequest, "the body is not a batch: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "slice":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64":
		return "an integer"
	}
	return kind
}

// submit parses, checks and publishes a batch for p: the same rules and messages as
// `flashpipe submit`, the same idempotency by batch id. It returns the submission and
// the rows skipped (with SkipBadRows).
func (s *Server) submit(ctx context.Context, p principal, in *submission) (*ingest.Submission, []RowError, error) {
	tenant := in.Tenant
	if p.restricted {
		if tenant != "" && tenant != p.tenant {
			return nil, nil, &Error{Status: http.StatusForbidden, Field: "tenant",
				Message: fmt.Sprintf("tenant: this token submits for tenant %q only", p.tenant)}
		}
		tenant = p.tenant
	}
	if err := flashpipe.ValidateTenant(tenant); err != nil {
		return nil, nil, fieldError("tenant", "%v", err)
	}
	if in.Priority < -flashpipe.MaxPriority || in.Priority > flashpipe.MaxPriority {
		return nil, nil, fieldError("priority", "%d is out of range: want %d to %d", in.Priority, -flashpipe.MaxPriority, flashpipe.MaxPriority)
	}
	if in.MaxCost != "" {
		if _, err := flashpipe.ParseMaxCost(in.MaxCost); err != nil {
			return nil, nil, &Error{Status: http.StatusBadRequest, Field: "max_cost", Message: err.Error()}
		}
	}
	source := cmp.Or(strings.TrimSpace(in.Source), DefaultSource)
	batch, skipped, closeBatch, err := batchOf(ctx, in, source, tenant)
	if err != nil {
		return nil, nil, err
	}
	defer closeBatch()
	if err := flashpipe.ValidateBatchID(batch.ID); err != nil {
		return nil, nil, fieldError("batch_id", "%v", err)
	}
	if p.restricted {
		// A used id of another tenant's is refused without saying whose it is.
		if t, found, err := s.tenantOf(ctx, batch.ID); err != nil {
			return nil, nil, err
		} else if found && t != p.tenant {
			return nil, nil, &Error{Status: http.StatusConflict, Field: "batch_id",
				Message: fmt.Sprintf("batch_id: %q is already used; choose another batch id", batch.ID)}
		}
	}
	sub, err := s.client.Submit(ctx, batch)
	if errors.Is(err, flashpipe.ErrBatchConflict) {
		return nil, nil, s.conflict(ctx, batch)
	}
	if err != nil {
		return nil, nil, err
	}
	return sub, skipped, nil
}

// batchOf reads and checks a batch (ingest's rules and reasons, every bad row) and
// returns it ready to publish, with the rows skipped: the one place that builds an
// ingest.Batch from a request. The body is spooled to a temporary file as it is
// checked (ingest.Spool), so memory does not grow with the batch; close releases it.
func batchOf(ctx context.Context, in *submission, source, tenant string) (b ingest.Batch, skipped []RowError, close func(), err error) {
	f, err := ingest.Spool(in.body, ingest.ParseOptions{Format: in.format, SkipBadRows: in.SkipBadRows, Source: source})
	if err != nil {
		var pe *ingest.ParseError
		if errors.As(err, &pe) {
			e := parseError(pe)
			if in.jsonItems {
				name(e.Rows)
			}
			return b, nil, nil, e
		}
		return b, nil, nil, err
	}
	skipped = rowsOf(f.Skipped)
	if in.jsonItems {
		name(skipped)
	}
	id := in.BatchID
	if id == "" {
		hash, err := f.Hash(ctx)
		if err != nil {
			_ = f.Close()
			return b, nil, nil, err
		}
		id = app.DefaultBatchID(source, hash)
	}
	b = ingest.Batch{ID: id, Source: source, Items: f, Tenant: tenant, Priority: in.Priority, Replace: in.Replace}
	settings := map[string]string{}
	if in.APIMode != "" {
		settings[flashpipe.SettingAPIMode] = in.APIMode
	}
	if in.MaxCost != "" {
		settings[flashpipe.SettingMaxCost] = in.MaxCost
	}
	if len(settings) > 0 {
		b.Settings = settings
	}
	return b, skipped, func() { _ = f.Close() }, nil
}

// conflict is the 409 of a used batch id, with the batch that holds it.
func (s *Server) conflict(ctx context.Context, b ingest.Batch) *Error {
	e := &Error{Status: http.StatusConflict, Field: "batch_id"}
	if m, err := s.client.Manifest(ctx, b.ID); err == nil {
		e.Original = &Original{BatchID: m.BatchID, Source: m.Source, Items: m.Count, Generation: m.Generation, SubmittedAt: m.CreatedAt}
	}
	if st, err := s.client.Store().Batch(ctx, b.ID); err == nil {
		m := st.Manifest
		e.Original = &Original{BatchID: m.BatchID, Source: m.Source, Items: m.Count, Generation: m.Generation, SubmittedAt: st.SubmittedAt}
	}
	e.Message = fmt.Sprintf("batch_id: %q is already used by other items", b.ID)
	if o := e.Original; o != nil {
		e.Message = fmt.Sprintf("batch_id: %q is already used by a batch of %d items from %q submitted %s; these %d items differ",
			b.ID, o.Items, o.Source, o.SubmittedAt.UTC().Format("2006-01-02 15:04:05Z"), b.Items.Len())
	}
	e.Message += ": choose another batch id, or replace that batch (replace=true)"
	return e
}

func rowsOf(rows []ingest.RowError) []RowError {
	out := make([]RowError, 0, len(rows))
	for _, r := range rows {
		out = append(out, RowError{Line: r.Line, Reason: r.Reason})
	}
	return out
}

// name names each row of a JSON body after its item.
func name(rows []RowError) {
	for i := range rows {
		rows[i].Field = fmt.Sprintf("items[%d]", rows[i].Line-1)
	}
}

// intParam parses an integer query parameter (def when empty).
func intParam(v, name string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fieldError(name, "%q is not an integer", v)
	}
	return n, nil
}

// boolParam parses a boolean query parameter (false when empty).
func boolParam(v, name string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fieldError(name, "%q is not true or false", v)
	}
	return b, nil
}
