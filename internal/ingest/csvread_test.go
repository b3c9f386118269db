package ingest

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// csvRead is what a reading of CSV made of one record: its fields, or its parse
// error (kind and lines), the lines it spans, whether it is blank and its first
// over-long line.
type csvRead struct {
	Fields          []string
	Err             error
	StartLine, Line int // of the parse error
	First, Last     int // lines of the record
	Blank           bool
	Long            longLine
}

// oracleCSV reads data the way ingest read CSV before csvReader: encoding/csv over a
// lineWatcher that notes the over-long lines (the code it replaced).
func oracleCSV(t *testing.T, data []byte, limit int64) []csvRead {
	lw := &lineWatcher{r: bytes.NewReader(data), limit: limit, line: 1}
	cr := csv.NewReader(lw)
	cr.FieldsPerRecord = -1
	var out []csvRead
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			out = append(out, csvRead{Err: pe.Err, StartLine: pe.StartLine, Line: pe.Line})
			continue
		}
		if err != nil {
			t.Fatalf("encoding/csv: %v", err)
		}
		first, _ := cr.FieldPos(0)
		lastField, _ := cr.FieldPos(len(rec) - 1)
		last := lastField + strings.Count(rec[len(rec)-1], "\n")
		r := csvRead{Fields: rec, First: first, Last: last, Blank: true}
		for _, f := range rec {
			if strings.TrimSpace(f) != "" {
				r.Blank = false
			}
		}
		r.Long, _ = lw.longIn(first, last)
		out = append(out, r)
	}
}

// newCSV reads data with csvReader, through a small buffer so that lines span reads.
func newCSV(t *testing.T, data []byte, limit int64) []csvRead {
	cr := newCSVReader(bufio.NewReaderSize(bytes.NewReader(data), 16), 0, limit)
	var out []csvRead
	var rec csvRecord
	var off int64
	for {
		err := cr.read(&rec)
		if errors.Is(err, io.EOF) {
			return out
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			out = append(out, csvRead{Err: pe.Err, StartLine: pe.StartLine, Line: pe.Line})
			off = cr.off
			continue
		}
		if err != nil {
			t.Fatalf("csvReader: %v", err)
		}
		if rec.Off < off || bytes.Count(data[:rec.Off], []byte("\n"))+1 != rec.Line {
			t.Fatalf("record at offset %d (after %d) does not start on its line %d", rec.Off, off, rec.Line)
		}
		off = cr.off
		out = append(out, csvRead{Fields: slicesClone(rec.Fields), First: rec.Line, Last: rec.End, Blank: rec.Blank, Long: rec.Long})
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// checkCSVReader compares csvReader with the oracle on data. Fields of records with
// an over-long line are not kept whole, so they are not compared.
func checkCSVReader(t *testing.T, data []byte, limit int64) {
	t.Helper()
	want, got := oracleCSV(t, data, limit), newCSV(t, data, limit)
	if len(got) != len(want) {
		t.Fatalf("limit %d, input %q:\n got %d records %+v\nwant %d records %+v", limit, data, len(got), got, len(want), want)
	}
	for i := range want {
		if want[i].Long.line > 0 {
			got[i].Fields, want[i].Fields = nil, nil
		}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("limit %d, input %q, record %d:\n got %+v\nwant %+v", limit, data, i, got[i], want[i])
		}
	}
}

var csvReaderSeeds = []string{
	"position,term,type\n1,내가,pronoun\n2,먹다,v\n",
	"Position,Hangul,Word_Type,Definition\n2,그,,that\n1,\"a\nb\",n,\"x\"\"y\"\n",
	"\uFEFFterm\n\n \t물 \n,\n",
	"position,term\n1,a\"b\n3,\"open\n",
	"a,b\r\nc,d\r\n\r\n\re,f\rg\r",
	"\"a\"\r\n\"b\"\rx\n\"c\"\r",
	"\"ab\nc\"\"d\",e\n\"unterminated\r\n",
	"\"a\n\r",
	"\"a\nb",
	"a,\n,\n\"\",\"\"\n",
	"\u3000,\u00a0\n\u0085\n \xe3\x80\n\xff\n",
	"x,\"y\"z\nq\n",
	"\"\"\"\n",
	"a,b,\"c\r\nd\r\ne\",\"f\"\r\n",
	"a\"\nb\n",
	"\r",
	"\r\n\r\n\n",
	"\"",
	"a,\"b\"",
	"aaaaaaaaaaaaaaaaaaaaaaaa,b\n\"cccccccccccccccccccccc\"\"\nddddddddddd\"\nxxxxxxxxxxxxxx\"\n\u3000\u3000\u3000\u3000\u3000\u3000\u3000\u3000,  \n",
}

// csvReader reads exactly what encoding/csv read (under the lineWatcher that noted
// over-long lines), with limits small enough that lines are over them.
func TestCSVReaderMatchesEncodingCSV(t *testing.T) {
	t.Parallel()
	for _, s := range csvReaderSeeds {
		for _, limit := range []int64{0, 1, 2, 3, 5, 8, 13, 1 << 20} {
			checkCSVReader(t, []byte(s), limit)
		}
	}
}

func FuzzCSVReader(f *testing.F) {
	for _, s := range csvReaderSeeds {
		f.Add([]byte(s), uint8(4))
		f.Add([]byte(s), uint8(255))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint8) {
		checkCSVReader(t, data, int64(limit))
	})
}

// lineWatcher passes its input through, noting the physical lines longer than
// limit bytes (without their terminator). Lines are counted like encoding/csv
// counts them: by '\n'. It is the code csvReader replaced, kept as the tests' oracle.
type lineWatcher struct {
	r      io.Reader
	limit  int64
	line   int   // number of the line being read
	n      int64 // its length so far
	lastCR bool  // its last byte so far is '\r'
	done   bool
	long   []longLine
}

func (w *lineWatcher) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	b := p[:n]
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.n += int64(len(b))
			w.lastCR = b[len(b)-1] == '\r'
			break
		}
		w.n += int64(i)
		if i > 0 {
			w.lastCR = b[i-1] == '\r'
		}
		w.endLine()
		b = b[i+1:]
	}
	if err != nil && !w.done && w.n > 0 {
		w.done = true
		w.endLine()
	}
	return n, err
}

func (w *lineWatcher) endLine() {
	n := w.n
	if w.lastCR {
		n--
	}
	if n > w.limit {
		w.long = append(w.long, longLine{line: w.line, n: n})
	}
	w.line++
	w.n, w.lastCR = 0, false
}

// longIn returns the first overlong line in start..end. Rows are checked in file
// order, so lines before start are forgotten.
func (w *lineWatcher) longIn(start, end int) (longLine, bool) {
	for len(w.long) > 0 && w.long[0].line < start {
		w.long = w.long[1:]
	}
	if len(w.long) > 0 && w.long[0].line <= end {
		return w.long[0], true
	}
	return longLine{}, false
}
