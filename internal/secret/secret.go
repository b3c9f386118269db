// Package secret keeps secrets (API keys, NATS tokens and passwords) out of
// everything flashpipe logs, publishes or writes, even in part.
//
// A Redactor is built from the secrets and replaces, in any text, every run of at
// least MinFragment bytes that appears in one of them: an API that echoes the first
// dozen characters of a key in an error, or its last ten, is caught as surely as one
// that echoes all of it. Secrets shorter than MinFragment (down to MinSecret) are
// replaced where they appear whole; shorter ones cannot be told from ordinary text
// and are left alone.
//
// Redact costs one table look-up per byte and allocates nothing for text that holds
// no fragment, so it can sit on the hot path (every log record, every failure
// reason). A Redactor is safe for concurrent use; Add may be called while others
// redact.
package secret

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Bounds of what is redacted.
const (
	// MinFragment is the shortest run of a secret's bytes that is redacted wherever it
	// appears.
	MinFragment = 8
	// MinSecret is the shortest secret redacted at all (whole, when shorter than
	// MinFragment).
	MinSecret = 4
	// Mask replaces what is redacted.
	Mask = "[REDACTED]"
)

// Redactor removes secrets and their fragments from text. The zero value and nil
// redact nothing.
type Redactor struct {
	mu  sync.Mutex // serialises Add
	set atomic.Pointer[set]
}

// set is an immutable snapshot of the secrets: every MinFragment-byte window of the
// long ones (as little-endian uint64), a bit filter over their hashes for the quick
// "no" on ordinary text, and the short secrets.
type set struct {
	secrets []string
	windows map[uint64]struct{}
	filter  [filterWords]uint64
	short   []string
}

const (
	filterBits  = 16
	filterWords = 1 << filterBits / 64
)

// New returns a Redactor for the given secrets (empty ones are ignored).
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	r.Add(secrets...)
	return r
}

// Add adds secrets. Text redacted from then on is redacted of them too.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.set.Load()
	var all []string
	if old != nil {
		all = append(all, old.secrets...)
	}
	added := false
	for _, s := range secrets {
		if len(s) < MinSecret || contains(all, s) {
			continue
		}
		all = append(all, s)
		added = true
	}
	if !added {
		return
	}
	r.set.Store(newSet(all))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newSet(secrets []string) *set {
	st := &set{secrets: secrets, windows: map[uint64]struct{}{}}
	for _, s := range secrets {
		if len(s) < MinFragment {
			st.short = append(st.short, s)
			continue
		}
		for i := 0; i+MinFragment <= len(s); i++ {
			w := load(s, i)
			st.windows[w] = struct{}{}
			h := hash(w)
			st.filter[h/64] |= 1 << (h % 64)
		}
	}
	return st
}

// load reads the MinFragment bytes of s at i as a little-endian uint64.
func load(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

func hash(w uint64) uint64 { return (w * 0x9E3779B97F4A7C15) >> (64 - filterBits) }

// Empty reports whether r redacts nothing.
func (r *Redactor) Empty() bool { return r == nil || r.set.Load() == nil }

// Redact returns s with every fragment of a secret replaced by Mask. Text with no
// fragment is returned as it is, without allocating.
func (r *Redactor) Redact(s string) string {
	if r == nil {
		return s
	}
	st := r.set.Load()
	if st == nil {
		return s
	}
	s = st.redactWindows(s)
	for _, sh := range st.short {
		if strings.Contains(s, sh) {
			s = strings.ReplaceAll(s, sh, Mask)
		}
	}
	return s
}

// redactWindows replaces every maximal run of s covered by windows of the secrets.
// Any substring of a secret of at least MinFragment bytes is such a run (each of its
// windows is a secret's window); two windows of secrets that happen to overlap in s
// are redacted together, which errs on the safe side.
func (st *set) redactWindows(s string) string {
	if len(s) < MinFragment || len(st.windows) == 0 {
		return s
	}
	var (
		b                strings.Builder
		runStart, runEnd = -1, -1 // the covered run being built
		copied           = 0      // s[:copied] is in b
	)
	w := load(s, 0) << 8
	for i := 0; i+MinFragment <= len(s); i++ {
		w = w>>8 | uint64(s[i+MinFragment-1])<<56
		h := hash(w)
		if st.filter[h/64]&(1<<(h%64)) == 0 {
			continue
		}
		if _, ok := st.windows[w]; !ok {
			continue
		}
		if i <= runEnd {
			runEnd = i + MinFragment
			continue
		}
		if runStart >= 0 {
			copied = flush(&b, s, copied, runStart, runEnd)
		} else {
			b.Grow(len(s))
		}
		runStart, runEnd = i, i+MinFragment
	}
	if runStart < 0 {
		return s
	}
	copied = flush(&b, s, copied, runStart, runEnd)
	b.WriteString(s[copied:])
	return b.String()
}

// flush writes s[copied:start] and the mask for s[start:end], and returns end.
func flush(b *strings.Builder, s string, copied, start, end int) int {
	b.WriteString(s[copied:start])
	b.WriteString(Mask)
	return end
}

// Error returns err, or, if its message holds a fragment of a secret, an error with
// the redacted message that unwraps to err (errors.Is and errors.As still see the
// chain; only the text changes).
func (r *Redactor) Error(err error) error {
	if err == nil || r.Empty() {
		return err
	}
	msg := err.Error()
	if clean := r.Redact(msg); clean != msg {
		return &redactedError{msg: clean, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
