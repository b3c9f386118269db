package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/ingest"
)

// Error is the body of every error answer: a message for a person, the request
// field or parameter it is about (when one is), the bad rows of a rejected batch, and
// for a 409 on a used batch id, the batch that holds it.
type Error struct {
	Status   int        `json:"-"`
	Message  string     `json:"error"`
	Field    string     `json:"field,omitempty"`
	Rows     []RowError `json:"rows,omitempty"`
	Original *Original  `json:"original,omitempty"`
	// err is the cause, logged (never sent) for a 500.
	err error
}

func (e *Error) Error() string { return e.Message }

// errorf returns an Error with the status and the message.
func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// fieldError returns a 400 about one request field or parameter.
func fieldError(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// internal returns the 500 of an unexpected error: the answer says only that it
// happened (the cause may name a server or hold a fragment of a secret), the log
// has the cause.
func internal(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Message: "internal error; the server log has the cause", err: err}
}

// classify maps an error of the application layer to its answer.
func classify(err error) *Error {
	var e *Error
	var pe *ingest.ParseError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "the request body is larger than the limit of %d bytes", mbe.Limit)
	case errors.As(err, &pe):
		return parseError(pe)
	case errors.Is(err, flashpipe.ErrNotFound):
		return errorf(http.StatusNotFound, "%s", err.Error())
	case errors.Is(err, ingest.ErrBatchRunning), errors.Is(err, ingest.ErrNothingToRetry), errors.Is(err, flashpipe.ErrBatchConflict):
		return errorf(http.StatusConflict, "%s", err.Error())
	}
	return internal(err)
}

// parseError is the 422 of a rejected batch: every bad row with its line and reason,
// in file order.
func parseError(pe *ingest.ParseError) *Error {
	e := &Error{Status: http.StatusUnprocessableEntity}
	for _, r := range pe.Rows {
		e.Rows = append(e.Rows, RowError{Line: r.Line, Reason: r.Reason})
	}
	switch {
	case len(pe.Rows) > 0 && pe.Err != nil:
		e.Message = fmt.Sprintf("%s, and %d bad rows; nothing was published", pe.Err, len(pe.Rows))
	case len(pe.Rows) > 0:
		e.Message = fmt.Sprintf("%d bad %s; nothing was published", len(pe.Rows), plural(len(pe.Rows), "row", "rows"))
	case pe.Err != nil:
		e.Message = pe.Err.Error() + "; nothing was published"
	default:
		e.Message = "invalid input; nothing was published"
	}
	return e
}

// writeJSON writes v as the JSON answer with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
