package store_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/storetest"
)

func TestCleanText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain 남성 🐯", "plain 남성 🐯"},
		{"\x00", "\uFFFD"},
		{"a\x00b\x00\x00", "a\uFFFDb\uFFFD\uFFFD"},
		{"in\xffvalid", "in\uFFFDvalid"},
		{"\xff\x00", "\uFFFD\uFFFD"},
		{`\u0000`, `\u0000`}, // text, not a NUL
	} {
		if got := store.CleanText(tc.in); got != tc.want {
			t.Errorf("CleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCleanJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{`"\u0000"`, `"\ufffd"`},
		{`{"k\u0000":"a\u0000\u0000b"}`, `{"k\ufffd":"a\ufffd\ufffdb"}`},
		{`"\\u0000"`, `"\\u0000"`},                 // an escaped backslash, then text
		{`"\\\u0000"`, `"\\\ufffd"`},               // an escaped backslash, then a NUL
		{`"\\\\u0000\u0001"`, `"\\\\u0000\u0001"`}, // two escaped backslashes, then text
		{`"\u00001"`, `"\ufffd1"`},
	} {
		if got := string(store.CleanJSON([]byte(tc.in))); got != tc.want {
			t.Errorf("CleanJSON(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// Whatever a string holds, its JSON, cleaned, is valid JSON of the same string with
// each NUL replaced by U+FFFD.
func FuzzCleanJSON(f *testing.F) {
	for _, s := range []string{"", "a", "\x00", `\u0000`, "\\\x00", `\\u0000` + "\x00", "\xff\x00\\", "남\x00성"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw, err := json.Marshal(map[string]string{s: s})
		if err != nil {
			t.Fatal(err)
		}
		var plain map[string]string // the string as encoding/json round-trips it
		if err := json.Unmarshal(raw, &plain); err != nil {
			t.Fatal(err)
		}
		clean := store.CleanJSON(raw)
		if strings.Contains(string(clean), `\u0000`) && !strings.Contains(s, `\u0000`) {
			t.Fatalf("CleanJSON(%s) = %s still holds an escaped NUL", raw, clean)
		}
		var got map[string]string
		if err := json.Unmarshal(clean, &got); err != nil {
			t.Fatalf("CleanJSON(%s) = %s is not JSON: %v", raw, clean, err)
		}
		for k, v := range plain {
			want := strings.ReplaceAll(v, "\x00", "\uFFFD")
			if got[strings.ReplaceAll(k, "\x00", "\uFFFD")] != want || len(got) != 1 {
				t.Fatalf("CleanJSON(%s) = %s, want the string %q", raw, clean, want)
			}
		}
		if c := store.CleanText(s); !utf8.ValidString(c) || strings.Contains(c, "\x00") {
			t.Fatalf("CleanText(%q) = %q", s, c)
		}
	})
}

func TestBatchState(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		generation int
		c          *store.StoredCompletion
		counted    int
		setAside   int
		want       string
	}{
		{"no completion", 0, nil, 10, 0, flashpipe.BatchRunning},
		{"all counted", 0, &store.StoredCompletion{Generation: 0, Emitted: 3, At: at}, 3, 0, flashpipe.BatchComplete},
		{"one missing", 0, &store.StoredCompletion{Generation: 0, Emitted: 3, At: at}, 2, 0, flashpipe.BatchRunning},
		{"older generation", 1, &store.StoredCompletion{Generation: 0, Emitted: 3, At: at}, 3, 0, flashpipe.BatchRunning},
		{"newer generation than the manifest", 1, &store.StoredCompletion{Generation: 2, Emitted: 1, At: at}, 1, 0, flashpipe.BatchComplete},
		{"empty", 0, &store.StoredCompletion{Generation: 0, Emitted: 0, At: at}, 0, 0, flashpipe.BatchComplete},
		{"set-aside events, incomplete", 0, &store.StoredCompletion{Generation: 0, Emitted: 3, At: at}, 2, 1, flashpipe.BatchBlocked},
		{"set-aside events, no completion", 0, nil, 2, 1, flashpipe.BatchBlocked},
		{"set-aside events, complete after a replay", 0, &store.StoredCompletion{Generation: 0, Emitted: 3, At: at}, 3, 1, flashpipe.BatchComplete},
	} {
		state, completedAt := store.BatchState(tc.generation, tc.c, tc.counted, tc.setAside)
		if state != tc.want || (completedAt != nil) != (state == flashpipe.BatchComplete) ||
			(completedAt != nil && !completedAt.Equal(at)) {
			t.Errorf("%s: BatchState = %s, %v; want %s", tc.name, state, completedAt, tc.want)
		}
	}
}

// BenchmarkEncodeItem measures the encoding and cleaning of a realistic result (the
// fixtures' 1 KB analysis and three cards), the per-result CPU cost of Apply in Go.
func BenchmarkEncodeItem(b *testing.B) {
	r := storetest.NewResult("bench", 1, 0)
	for b.Loop() {
		if _, err := store.EncodeItem(r); err != nil {
			b.Fatal(err)
		}
	}
}
