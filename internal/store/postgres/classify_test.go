package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
)

// classify sorts the server's errors as its documentation says: the data's own
// (classes 22 and 23) are permanent and carry no cause; every error of the
// environment is transient with its cause, so the sink blocks and says why instead of
// setting events aside. Each code is wrapped as the driver's callers see it.
func TestClassifyByServerCode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code, what string
		permanent  bool
		cause      string
	}{
		{"22001", "string data right truncation", true, ""},
		{"22P02", "invalid text representation", true, ""},
		{"23505", "unique violation", true, ""},
		{"23503", "foreign key violation", true, ""},
		{"42501", "insufficient privilege", false, store.CausePermission},
		{"28P01", "invalid password", false, store.CausePermission},
		{"28000", "invalid authorization specification", false, store.CausePermission},
		{"42P01", "undefined table", false, store.CauseSchema},
		{"42703", "undefined column", false, store.CauseSchema},
		{"3F000", "invalid schema name", false, store.CauseSchema},
		{"3D000", "invalid catalog name (no such database)", false, store.CauseSchema},
		{"0A000", "feature not supported (a cached plan after a schema change)", false, store.CauseSchema},
		{"25006", "read-only SQL transaction", false, store.CauseReadOnly},
		{"53100", "disk full", false, store.CauseDiskFull},
		{"53300", "too many connections", false, store.CauseOther},
		{"08006", "connection failure", false, store.CauseConnection},
		{"08001", "unable to establish a connection", false, store.CauseConnection},
		{"57P01", "admin shutdown", false, store.CauseConnection},
		{"57P03", "cannot connect now (starting up)", false, store.CauseConnection},
		{"40001", "serialization failure", false, store.CauseOther},
		{"40P01", "deadlock detected", false, store.CauseOther},
		{"55P03", "lock not available", false, store.CauseOther},
		{"58030", "I/O error", false, store.CauseOther},
		{"XX000", "internal error", false, store.CauseOther},
	}
	for _, c := range cases {
		pgErr := &pgconn.PgError{Severity: "ERROR", Code: c.code, Message: c.what}
		err := classify(fmt.Errorf("apply events: %w", pgErr))
		if got := flashpipe.IsPermanent(err); got != c.permanent {
			t.Errorf("%s (%s): permanent %v, want %v", c.code, c.what, got, c.permanent)
		}
		if got := flashpipe.ClassOf(err); !c.permanent && got != flashpipe.Transient {
			t.Errorf("%s (%s): class %v, want transient", c.code, c.what, got)
		}
		if got := store.CauseOf(err); got != c.cause {
			t.Errorf("%s (%s): cause %q, want %q", c.code, c.what, got, c.cause)
		}
		var back *pgconn.PgError
		if !errors.As(err, &back) || back.Code != c.code {
			t.Errorf("%s: the classified error no longer unwraps to the server's", c.code)
		}
	}
}

// Errors that are not the server's: a broken or refused connection is the
// environment's (transient, "database unreachable"); anything else is left as it is
// (unclassified errors count as transient, with no cause).
func TestClassifyClientErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")},
		fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
	} {
		got := classify(err)
		if store.CauseOf(got) != store.CauseConnection || flashpipe.IsPermanent(got) {
			t.Errorf("%v: cause %q, permanent %v; want a transient %q", err, store.CauseOf(got), flashpipe.IsPermanent(got), store.CauseConnection)
		}
	}
	for _, err := range []error{errors.New("decode cards: unexpected end of JSON input"), context.Canceled} {
		if got := classify(err); got != err {
			t.Errorf("%v: classified as %v, want it unchanged", err, got)
		}
	}
}

// An Apply is run again after the seq index race, a deadlock or a serialization
// failure (as the caller sees them: classified and wrapped), and after nothing else.
func TestRetryApply(t *testing.T) {
	t.Parallel()
	wrap := func(pe *pgconn.PgError) error { return fmt.Errorf("postgres: apply 3 events: %w", classify(pe)) }
	for _, c := range []struct {
		err   error
		retry bool
	}{
		{wrap(&pgconn.PgError{Code: "40P01", Message: "deadlock detected"}), true},
		{wrap(&pgconn.PgError{Code: "40001", Message: "could not serialize access"}), true},
		{wrap(&pgconn.PgError{Code: "23505", ConstraintName: "items_batch_order_idx"}), true},
		{wrap(&pgconn.PgError{Code: "23505", ConstraintName: "items_pkey"}), false},
		{wrap(&pgconn.PgError{Code: "55P03", Message: "lock not available"}), false},
		{wrap(&pgconn.PgError{Code: "08006", Message: "connection failure"}), false},
		{errors.New("40P01"), false},
		{nil, false},
	} {
		if got := retryApply(c.err); got != c.retry {
			t.Errorf("%v: retry %v, want %v", c.err, got, c.retry)
		}
	}
}
