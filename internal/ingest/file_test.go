package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/testutil/batchgen"
)

// collect reads every item of items, checking that seqs run 1..Len.
func collect(t *testing.T, items Items) []flashpipe.Item {
	t.Helper()
	var out []flashpipe.Item
	err := items.Each(context.Background(), func(seq int, it flashpipe.Item) error {
		if seq != len(out)+1 {
			t.Fatalf("item %d has seq %d", len(out)+1, seq)
		}
		out = append(out, it)
		return nil
	})
	if err != nil {
		t.Fatalf("Each: %v", err)
	}
	if len(out) != items.Len() {
		t.Fatalf("Each gave %d items, Len is %d", len(out), items.Len())
	}
	return out
}

// sameAsParse checks that a File holds what Parse returned (want, wantErr) for the
// same input: the same items in seq order, bad rows, layout and hash, or the same
// error.
func sameAsParse(t *testing.T, b *File, err error, want *Parsed, wantErr error) {
	t.Helper()
	if wantErr != nil {
		if err == nil {
			b.Close()
			t.Fatalf("the file was accepted with %d items; Parse said %q", b.Len(), wantErr)
		}
		var pe *ParseError
		if err.Error() != wantErr.Error() || errors.As(wantErr, &pe) != errors.As(err, &pe) ||
			flashpipe.IsPermanent(err) != flashpipe.IsPermanent(wantErr) {
			t.Fatalf("file error:\n got %q\nwant %q (as Parse)", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("the file was refused (%v); Parse accepted it", err)
	}
	defer b.Close()
	if got := collect(t, b); !reflect.DeepEqual(got, want.Items) {
		t.Errorf("file items:\n got %#v\nwant %#v", got, want.Items)
	}
	if !reflect.DeepEqual(b.Skipped, want.Skipped) || b.Layout != want.Layout {
		t.Errorf("file skipped %v, layout %q; Parse skipped %v, layout %q", b.Skipped, b.Layout, want.Skipped, want.Layout)
	}
	hash, err := b.Hash(context.Background())
	if err != nil || hash != flashpipe.HashItems(want.Items) {
		t.Errorf("file hash %q, %v; want HashItems of Parse's items", hash, err)
	}
}

// checkSpool checks that Spool reads in what Parse read (the parse_test.go cases
// go through it too): the same rules, the same errors.
func checkSpool(t *testing.T, in string, opts ParseOptions, want *Parsed, wantErr error) {
	t.Helper()
	b, err := Spool(strings.NewReader(in), opts)
	sameAsParse(t, b, err, want, wantErr)
}

func TestOpenFileMatchesParseFile(t *testing.T) {
	t.Parallel()
	paths := []string{
		"testdata/simple.csv", "testdata/items.jsonl", "testdata/items.ndjson", "testdata/sniffed.txt",
		"testdata/bad_rows.csv", "testdata/missing.csv", "../../examples/vocabulary_1000.csv", "../../examples/test_5_words.csv",
	}
	for _, path := range paths {
		for _, skip := range []bool{false, true} {
			opts := ParseOptions{SkipBadRows: skip}
			want, wantErr := ParseFile(path, opts)
			b, err := OpenFile(path, opts)
			if errors.Is(wantErr, os.ErrNotExist) {
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: err = %v, want not-exist", path, err)
				}
				continue
			}
			sameAsParse(t, b, err, want, wantErr)
		}
	}
}

// Positions unsorted in the file and with gaps: the same seqs (ranks of position),
// the same items and the same hash as the in-memory parse, so the default batch id
// and the conflict check do not depend on how the file was read.
func TestOpenFileUnsortedWithGaps(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 7, 5000} {
		var buf bytes.Buffer
		if err := batchgen.WriteCSV(&buf, batchgen.Config{Items: n, Shuffle: true, Gap: 7, Seed: uint64(n)}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "shuffled.csv")
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		want, err := Parse(bytes.NewReader(buf.Bytes()), ParseOptions{Source: "shuffled.csv"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := OpenFile(path, ParseOptions{})
		sameAsParse(t, b, err, want, nil)
		for i, it := range want.Items {
			if it.Position != int64(7*(i+1)) {
				t.Fatalf("n=%d: seq %d has position %d, want %d", n, i+1, it.Position, 7*(i+1))
			}
		}
	}
}

// A file changed after it was validated is not published from.
func TestFileChangedAfterValidation(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "b.csv")
	if err := os.WriteFile(path, []byte("position,term\n2,물\n1,불\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(path, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := os.WriteFile(path, []byte("position,term\n2,물\n1,\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = b.Each(context.Background(), func(int, flashpipe.Item) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "b.csv changed after it was validated") {
		t.Fatalf("Each after a change: %v", err)
	}
}

// Standard input is copied to a temporary file as it is validated and read from it;
// the copy is unlinked at once, so nothing is left in TMPDIR even if the process
// dies.
func TestSpoolReadsAnInputOnceAndLeavesNoFile(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	in := "{\"position\":30,\"term\":\"물\"}\n\n{\"position\":10,\"term\":\"불\",\"type\":\"n\"}\n"
	r := &onceReader{r: strings.NewReader(in)}
	b, err := Spool(r, ParseOptions{Source: "stdin"})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("%d files in TMPDIR while the batch is open, want none", len(entries))
	}
	want := []flashpipe.Item{item(10, "불", "noun"), item(30, "물", "unknown")}
	if got := collect(t, b); !reflect.DeepEqual(got, want) || b.Layout != LayoutJSONL {
		t.Fatalf("items %#v, layout %q; want %#v, jsonl (sniffed)", got, b.Layout, want)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("%d files left in TMPDIR after Close", len(entries))
	}

	_, err = Spool(strings.NewReader("term\n\n"), ParseOptions{Source: "stdin"})
	if err == nil || err.Error() != "stdin: no items: the header row is the only row" {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("%d files left in TMPDIR after a refused batch", len(entries))
	}
}

// onceReader fails if it is read after its end: standard input cannot be read twice.
type onceReader struct {
	r   io.Reader
	eof bool
}

func (o *onceReader) Read(p []byte) (int, error) {
	if o.eof {
		return 0, errors.New("read again after the end")
	}
	n, err := o.r.Read(p)
	o.eof = errors.Is(err, io.EOF)
	return n, err
}

// longLineReader produces head, n x's and tail without holding the x's.
type longLineReader struct {
	head, tail string
	n, sent    int64 // sent: bytes read so far
}

var xs = bytes.Repeat([]byte("x"), 64<<10)

func (r *longLineReader) Read(p []byte) (int, error) {
	head, body := int64(len(r.head)), int64(len(r.head))+r.n
	var k int
	switch s := r.sent; {
	case s < head:
		k = copy(p, r.head[s:])
	case s < body:
		k = copy(p, xs[:min(int64(len(xs)), body-s)])
	case s-body < int64(len(r.tail)):
		k = copy(p, r.tail[s-body:])
	default:
		return 0, io.EOF
	}
	r.sent += int64(k)
	return k, nil
}

// A 50 MB line is refused, with its length, without ever being held: the reader
// keeps MaxLineBytes+1 bytes of it, which costs a few MaxLineBytes of allocations as
// its buffer grows, not 50 MB. (Not parallel: it measures the allocations of the
// whole process.)
func TestLongLineIsRefusedWithoutHoldingIt(t *testing.T) {
	const n = 50 << 20
	for _, tc := range []struct {
		name, head, tail, reason string
		line                     int
	}{
		{name: "csv", head: "position,term,note\n1,물,a\n2,불,", tail: "\n3,흙,c\n", line: 3},
		{name: "csv quoted", head: "position,term,note\n1,물,a\n2,불,\"", tail: "\"\n3,흙,c\n", line: 3},
		{name: "jsonl", head: "{\"position\":1,\"term\":\"물\"}\n{\"position\":2,\"term\":\"", tail: "\"}\n{\"position\":3,\"term\":\"흙\"}\n", line: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format := FormatCSV
			if tc.name == "jsonl" {
				format = FormatJSONL
			}
			r := &longLineReader{head: tc.head, tail: tc.tail, n: n}
			// The long line: the end of head, the x's, the start of tail.
			length := len(tc.head) - strings.LastIndex(tc.head, "\n") - 1 + n + strings.Index(tc.tail, "\n")
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, err := Parse(r, ParseOptions{Format: format, SkipBadRows: true})
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if r.sent != int64(len(tc.head))+n+int64(len(tc.tail)) {
				t.Fatalf("read %d bytes, want all of them", r.sent)
			}
			want := []RowError{{Line: tc.line, Reason: "line is longer than 1 MiB (" + strconv.Itoa(length) + " bytes)"}}
			if !reflect.DeepEqual(got.Skipped, want) || len(got.Items) != 2 {
				t.Fatalf("skipped %v, %d items; want %v and 2 items", got.Skipped, len(got.Items), want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*MaxLineBytes {
				t.Fatalf("parsing allocated %.1f MB for a %d MB line; the limit is %d MB", float64(alloc)/(1<<20), n>>20, 8*MaxLineBytes>>20)
			}
			t.Logf("parsing allocated %.1f MB for a %d MB line", float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), n>>20)
		})
	}
}

// The rows the parse_test.go cases have through Spool as well: see checkSpool.
func TestSpoolMatchesParseOnLongLines(t *testing.T) {
	t.Parallel()
	in := "position,term\n" + "1,a\n" + "2," + strings.Repeat("y", MaxLineBytes) + "\n3,c\n2,d\n"
	for _, skip := range []bool{false, true} {
		opts := ParseOptions{Source: "long.csv", SkipBadRows: skip}
		want, wantErr := Parse(strings.NewReader(in), opts)
		checkSpool(t, in, opts, want, wantErr)
	}
}

// FuzzOpenFile checks that a batch file read by OpenFile holds exactly what Parse
// makes of the same bytes, or is refused with the same error.
func FuzzOpenFile(f *testing.F) {
	for _, s := range csvReaderSeeds {
		f.Add([]byte(s), false, true)
	}
	for _, s := range []string{
		"position,term\n3,a\n1,b\n3,c\n2,d\n1,e\n",
		"{\"position\":2,\"term\":\"a\"}\n{\"term\":\"b\"}\n{\"position\":2,\"term\":\"c\"}\n",
	} {
		f.Add([]byte(s), true, false)
		f.Add([]byte(s), false, true)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, jsonl, skip bool) {
		opts := ParseOptions{Format: FormatCSV, SkipBadRows: skip, Source: "fuzz"}
		if jsonl {
			opts.Format = FormatJSONL
		}
		path := filepath.Join(dir, "fuzz")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want, wantErr := Parse(bytes.NewReader(data), opts)
		b, err := OpenFile(path, opts)
		sameAsParse(t, b, err, want, wantErr)
	})
}

// SliceItems refuses, at Hash, items out of position order.
func TestSliceItemsHashChecksOrder(t *testing.T) {
	t.Parallel()
	ok := []flashpipe.Item{item(2, "a", "noun"), item(5, "b", "noun")}
	if h, err := SliceItems(ok).Hash(context.Background()); err != nil || h != flashpipe.HashItems(ok) {
		t.Fatalf("Hash = %q, %v", h, err)
	}
	for _, bad := range [][]flashpipe.Item{{ok[1], ok[0]}, {ok[0], ok[0]}} {
		if _, err := SliceItems(bad).Hash(context.Background()); err == nil {
			t.Errorf("Hash of positions %d, %d: no error", bad[0].Position, bad[1].Position)
		}
	}
}
