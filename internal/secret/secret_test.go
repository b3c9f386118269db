package secret_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/flashpipe/flashpipe/internal/secret"
)

const key = "sk-or-v1-0123456789abcdefABCDEF"

// Every substring of the key of MinFragment bytes or more is redacted wherever it
// appears; shorter pieces are not.
func TestRedactEveryFragment(t *testing.T) {
	t.Parallel()
	r := secret.New(key)
	for i := 0; i < len(key); i++ {
		for j := i + secret.MinFragment; j <= len(key); j++ {
			frag := key[i:j]
			for _, text := range []string{frag, "x" + frag, frag + "y", "key " + frag + " was refused: " + frag} {
				got := r.Redact(text)
				if strings.Contains(got, frag) {
					t.Fatalf("Redact(%q) = %q keeps the fragment %q", text, got, frag)
				}
				if !strings.Contains(got, secret.Mask) {
					t.Fatalf("Redact(%q) = %q has no mask", text, got)
				}
			}
		}
	}
	short := key[3:10] // 7 bytes
	if got := r.Redact("a " + short + " b"); got != "a "+short+" b" {
		t.Fatalf("a %d-byte piece was redacted: %q", len(short), got)
	}
}

func TestRedactKeepsTheRest(t *testing.T) {
	t.Parallel()
	r := secret.New(key, "tok3n-for-nats", "pw12")
	cases := map[string]string{
		"":             "",
		"nothing here": "nothing here",
		"Incorrect API key provided: sk-or-v1-0123****CDEF": "Incorrect API key provided: " + secret.Mask + "****CDEF",
		"a " + key + " b " + key[10:20] + " c":              "a " + secret.Mask + " b " + secret.Mask + " c",
		"nats://tok3n-for-nats@host:4222":                   "nats://" + secret.Mask + "@host:4222",
		"password pw12 given":                               "password " + secret.Mask + " given",
		key[len(key)-8:]:                                    secret.Mask,
	}
	for in, want := range cases {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	var none *secret.Redactor
	if none.Redact(key) != key || !none.Empty() || secret.New("", "abc").Empty() != true {
		t.Fatal("a nil Redactor, or one of empty and too short secrets, redacts")
	}
}

func TestAddWhileRedacting(t *testing.T) {
	t.Parallel()
	r := secret.New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				_ = r.Redact("a token: " + key)
			}
		})
	}
	r.Add(key)
	wg.Wait()
	if strings.Contains(r.Redact("a token: "+key), key[:8]) {
		t.Fatal("Add did not take effect")
	}
}

func TestErrorKeepsTheChain(t *testing.T) {
	t.Parallel()
	r := secret.New(key)
	base := fmt.Errorf("open %s: %w", key[2:14], fs.ErrNotExist)
	err := r.Error(base)
	if strings.Contains(err.Error(), key[2:14]) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Error = %v (Is ErrNotExist: %v)", err, errors.Is(err, fs.ErrNotExist))
	}
	clean := errors.New("nothing secret")
	if r.Error(clean) != clean || r.Error(nil) != nil {
		t.Fatal("Error changed an error without a secret")
	}
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

type nilErr struct{}

func (*nilErr) Error() string { panic("nil receiver") }

// Nothing a log record carries reaches the output with a fragment: message, string
// attributes, errors, Stringers, other values, groups, and attributes given to With.
func TestHandlerRedactsEveryRecord(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if format == "json" {
			h = slog.NewJSONHandler(&buf, nil)
		}
		r := secret.New()
		log := slog.New(secret.NewHandler(h, r))
		r.Add(key)
		frag := key[5:17]
		var np *nilErr
		log = log.With("url", "nats://"+frag+"@h", "component", "test")
		log.Info("refused "+frag, "err", errors.New("bad key "+frag), "s", stringer{frag}, "v", struct{ K string }{frag},
			slog.Group("g", "inner", frag, "n", 3), "list", []string{"ok", frag}, "nilerr", np, "plain", "fine", "n", 42)
		out := buf.String()
		for i := 0; i+secret.MinFragment <= len(key); i++ {
			if strings.Contains(out, key[i:i+secret.MinFragment]) {
				t.Fatalf("%s: the log holds %q:\n%s", format, key[i:i+secret.MinFragment], out)
			}
		}
		for _, want := range []string{"fine", "42", "component", "inner", "3"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the log lost %q:\n%s", format, want, out)
			}
		}
	}
}

func BenchmarkRedact(b *testing.B) {
	r := secret.New(key, "a-nats-token-of-32-characters-xx", "a-nats-password")
	clean := `time=2026-01-02T03:04:05Z level=WARN msg="item failed" component=processor batch=b-2026 position=417 stage=stage1 class=permanent err="llm: HTTP 400: Invalid request: the model refused the prompt"`
	dirty := strings.Replace(clean, "refused", "refused key "+key[:14], 1)
	for _, bc := range []struct{ name, text string }{{"clean", clean}, {"fragment", dirty}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			b.ReportAllocs()
			for b.Loop() {
				_ = r.Redact(bc.text)
			}
		})
	}
}
