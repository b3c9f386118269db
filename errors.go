package flashpipe

import (
	"errors"
	"time"
)

// ErrNotFound is returned when a batch, item or key does not exist.
var ErrNotFound = errors.New("not found")

// ErrBatchConflict is returned when a batch id is already taken by different items: a
// batch id names one batch for ever, unless it is replaced on explicit request.
var ErrBatchConflict = errors.New("batch id already used for different items")

// ErrorClass says whether retrying an operation can succeed.
type ErrorClass string

// Error classes. Every error is classified where it is born: transient errors are
// retried (with backoff, within limits), permanent ones are not.
const (
	Transient ErrorClass = "transient"
	Permanent ErrorClass = "permanent"
)

// ClassifiedError carries an error's class and, for transient errors, how long the
// source asked us to wait before retrying.
type ClassifiedError struct {
	Class ErrorClass
	// RetryAfter is the wait the source asked for (zero: none given).
	RetryAfter time.Duration
	Err        error
}

func (e *ClassifiedError) Error() string { return e.Err.Error() }
func (e *ClassifiedError) Unwrap() error { return e.Err }

// AsTransient marks err as worth retrying.
func AsTransient(err error) error {
	if err == nil {
		return nil
	}
	return &ClassifiedError{Class: Transient, Err: err}
}

// AsPermanent marks err as not worth retrying.
func AsPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &ClassifiedError{Class: Permanent, Err: err}
}

// ClassOf returns err's class. An error nobody classified counts as transient: the
// pipeline bounds every retry, so a wrong guess costs a few attempts, never an item.
func ClassOf(err error) ErrorClass {
	var ce *ClassifiedError
	if errors.As(err, &ce) {
		return ce.Class
	}
	return Transient
}

// IsPermanent reports whether err is classified permanent.
func IsPermanent(err error) bool { return err != nil && ClassOf(err) == Permanent }

// RetryAfterOf returns the wait requested by the source of err, or zero.
func RetryAfterOf(err error) time.Duration {
	var ce *ClassifiedError
	if errors.As(err, &ce) {
		return ce.RetryAfter
	}
	return 0
}
