package ingest

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
)

// item builds an expected item; kv are metadata key/value pairs.
func item(pos int64, term, typ string, kv ...string) flashpipe.Item {
	it := flashpipe.Item{Position: pos, Term: term, Type: typ}
	for i := 0; i+1 < len(kv); i += 2 {
		if it.Metadata == nil {
			it.Metadata = map[string]string{}
		}
		it.Metadata[kv[i]] = kv[i+1]
	}
	return it
}

type parseCase struct {
	name    string
	in      string
	opts    ParseOptions
	want    []flashpipe.Item
	layout  string
	skipped []RowError
	err     string // the exact Error() of the rejected batch
}

// runParseCases runs each case through Parse; a case without Source gets source.
func runParseCases(t *testing.T, source string, cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			if opts.Source == "" {
				opts.Source = source
			}
			got, err := Parse(strings.NewReader(tc.in), opts)
			checkSpool(t, tc.in, opts, got, err) // a batch read from a file: the same
			if tc.err != "" {
				assertParseError(t, got, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got.Items, tc.want) {
				t.Errorf("items:\n got %#v\nwant %#v", got.Items, tc.want)
			}
			if got.Layout != tc.layout {
				t.Errorf("layout = %q, want %q", got.Layout, tc.layout)
			}
			if !reflect.DeepEqual(got.Skipped, tc.skipped) {
				t.Errorf("skipped:\n got %#v\nwant %#v", got.Skipped, tc.skipped)
			}
		})
	}
}

// assertParseError checks that err is a permanent *ParseError with the given text.
func assertParseError(t *testing.T, got *Parsed, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Parse succeeded with %d items, want error %q", len(got.Items), want)
	}
	if got != nil {
		t.Errorf("Parse returned %+v along with its error", got)
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ParseError", err, err)
	}
	if !flashpipe.IsPermanent(err) {
		t.Errorf("error %v is not classified permanent", err)
	}
	if err.Error() != want {
		t.Errorf("error text:\n got %q\nwant %q", err.Error(), want)
	}
}

func TestParseCSV(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("가", 101)
	runParseCases(t, "t.csv", []parseCase{
		{
			name: "simple layout normalises types",
			in: "position,term,type\n1,내가,pronoun\n2,먹다,v\n3,빨리,ADV\n4,예쁘다,adj\n5,아,int\n" +
				"6,잘 가,phr\n7,은,part\n8,사과,n\n9,그냥,\n10,하다, Idiom \n",
			want: []flashpipe.Item{
				item(1, "내가", "pronoun"), item(2, "먹다", "verb"), item(3, "빨리", "adverb"),
				item(4, "예쁘다", "adjective"), item(5, "아", "interjection"), item(6, "잘 가", "phrase"),
				item(7, "은", "particle"), item(8, "사과", "noun"), item(9, "그냥", "unknown"),
				item(10, "하다", "idiom"),
			},
			layout: LayoutSimple,
		},
		{
			name:   "header names are trimmed and case-insensitive, values trimmed",
			in:     " Position , TERM ,Type \n 2 , 물 ,Noun\n",
			want:   []flashpipe.Item{item(2, "물", "noun")},
			layout: LayoutSimple,
		},
		{
			name:   "byte order mark is ignored",
			in:     "\uFEFFposition,term\n1,물\n",
			want:   []flashpipe.Item{item(1, "물", "unknown")},
			layout: LayoutSimple,
		},
		{
			name: "rich layout keeps every other column as metadata",
			in:   "Position,Hangul,IPA,Word_Type,Definition,Notes\n1,내가,nɛ.ka,pronoun,I,\n2,그,kɯ,,that, a note \n",
			want: []flashpipe.Item{
				item(1, "내가", "pronoun", "IPA", "nɛ.ka", "Definition", "I"),
				item(2, "그", "unknown", "IPA", "kɯ", "Definition", "that", "Notes", "a note"),
			},
			layout: LayoutRich,
		},
		{
			name:   "rich layout keeps term and type columns as metadata",
			in:     "hangul,term,type\n물,water,n\n",
			want:   []flashpipe.Item{item(1, "물", "unknown", "term", "water", "type", "n")},
			layout: LayoutRich,
		},
		{
			name:   "simple layout keeps other columns, ignores blank header names",
			in:     "term,Definition, Level ,\n물,water,1,x\n",
			want:   []flashpipe.Item{item(1, "물", "unknown", "Definition", "water", "Level", "1")},
			layout: LayoutSimple,
		},
		{
			name:   "blank lines and rows of empty fields are skipped",
			in:     "\nposition,term\n\n1,a\n   \n,\n2,b\n\n",
			want:   []flashpipe.Item{item(1, "a", "unknown"), item(2, "b", "unknown")},
			layout: LayoutSimple,
		},
		{
			name:    "without a position column the data row number is the position",
			in:      "term,type\na,n\n\n,v\nc,adj\n",
			opts:    ParseOptions{SkipBadRows: true},
			want:    []flashpipe.Item{item(1, "a", "noun"), item(3, "c", "adjective")},
			skipped: []RowError{{Line: 4, Reason: "term is empty"}},
			layout:  LayoutSimple,
		},
		{
			name:   "positions with gaps come out sorted",
			in:     "position,term\n30,c\n5,a\n+12,b\n",
			want:   []flashpipe.Item{item(5, "a", "unknown"), item(12, "b", "unknown"), item(30, "c", "unknown")},
			layout: LayoutSimple,
		},
		{
			name:   "a term of 100 characters is accepted",
			in:     "term\n" + strings.Repeat("가", 100) + "\n",
			want:   []flashpipe.Item{item(1, strings.Repeat("가", 100), "unknown")},
			layout: LayoutSimple,
		},
		{
			name:    "a duplicate position is bad, the first row keeps it",
			in:      "position,term\n3,a\n3,b\n",
			opts:    ParseOptions{SkipBadRows: true},
			want:    []flashpipe.Item{item(3, "a", "unknown")},
			skipped: []RowError{{Line: 3, Reason: "position 3 is already used on line 2"}},
			layout:  LayoutSimple,
		},
		{
			name:    "a bad row does not claim its position",
			in:      "position,term\n3,\n3,b\n",
			opts:    ParseOptions{SkipBadRows: true},
			want:    []flashpipe.Item{item(3, "b", "unknown")},
			skipped: []RowError{{Line: 2, Reason: "term is empty"}},
			layout:  LayoutSimple,
		},
		{
			name: "every bad row is reported",
			in: "position,term,type\n" +
				"1,a,n\n" + // line 2: fine
				"x,b,n\n" +
				"0,c,n\n" +
				"-4,d,n\n" +
				"99999999999999999999,e,n\n" +
				",f,n\n" +
				"1.5,g,n\n" +
				"1,h,n\n" +
				"2, ,n\n" + // line 10
				"3,a\tb,n\n" +
				"4," + long + ",n\n" +
				"5,\xff,n\n" +
				"6,i\n" +
				"7,j,n,extra\n" +
				"8,k,no\x01un\n" +
				"9,l,\xfe\n" +
				"-99999999999999999999,m,n\n",
			err: "t.csv: 16 bad rows, nothing was published:\n" +
				"  line 3: position \"x\" is not an integer\n" +
				"  line 4: position \"0\" is less than 1\n" +
				"  line 5: position \"-4\" is less than 1\n" +
				"  line 6: position \"99999999999999999999\" is too large, the limit is 9223372036854775807\n" +
				"  line 7: position is empty\n" +
				"  line 8: position \"1.5\" is not an integer\n" +
				"  line 9: position 1 is already used on line 2\n" +
				"  line 10: term is empty\n" +
				"  line 11: term contains a control character\n" +
				"  line 12: term has 101 characters, the limit is 100\n" +
				"  line 13: term is not valid UTF-8\n" +
				"  line 14: expected 3 fields, got 2\n" +
				"  line 15: expected 3 fields, got 4\n" +
				"  line 16: type contains a control character\n" +
				"  line 17: type is not valid UTF-8\n" +
				"  line 18: position \"-99999999999999999999\" is less than 1",
		},
		{
			name: "line numbers count the lines of quoted fields",
			in:   "position,term,note\n1,a,\"two\nlines\"\n2,,x\n3,\"c\r\nd\",y\n4,\"\"\"e\"\"\",\"\n\n\"\n5,,\n",
			err: "t.csv: 3 bad rows, nothing was published:\n" +
				"  line 4: term is empty\n" +
				"  line 5: term contains a control character\n" +
				"  line 10: term is empty",
		},
		{
			name: "CSV syntax errors are bad rows and parsing goes on",
			in:   "position,term\n1,a\"b\n2,ok\n3,\"x\"y\n4,\"open\nstill open\n5,c\n",
			err: "t.csv: 3 bad rows, nothing was published:\n" +
				"  line 2: a \" in an unquoted field; quote the whole field and double the \" inside it\n" +
				"  line 4: extraneous or missing \" in a quoted field\n" +
				"  line 5: extraneous or missing \" in a quoted field (on line 7)",
		},
		{
			name: "metadata must be valid UTF-8",
			in:   "term,Notes\na,\xff\n",
			err:  "t.csv: 1 bad row, nothing was published:\n  line 2: column \"Notes\" is not valid UTF-8",
		},
		{
			name: "a long value is shortened in the reason",
			in:   "position,term\n" + strings.Repeat("9", 50) + ",a\n",
			err: "t.csv: 1 bad row, nothing was published:\n  line 2: position \"" + strings.Repeat("9", 40) +
				"\"... is too large, the limit is 9223372036854775807",
		},
		{
			name: "all rows bad with SkipBadRows is still an error",
			in:   "position,term\n1,\n2, \n",
			opts: ParseOptions{SkipBadRows: true},
			err:  "t.csv: no items, 2 bad rows, nothing was published:\n  line 2: term is empty\n  line 3: term is empty",
		},
		{
			name: "no term column",
			in:   "position,word,kind\n1,a,n\n",
			err:  `t.csv: the header row has no "term" column (or "Hangul" for the word-frequency layout); it has "position", "word", "kind"`,
		},
		{
			name: "tab-separated header",
			in:   "position\tterm\n1\ta\n",
			err: `t.csv: the header row has no "term" column (or "Hangul" for the word-frequency layout); it has "position\tterm"` +
				" (the header contains tabs, but columns must be separated by commas)",
		},
		{
			name: "empty input",
			in:   "",
			err:  "t.csv: no items: the input is empty",
		},
		{
			name: "blank input",
			in:   "\uFEFF\n \n,,\n",
			err:  "t.csv: no items: the input is empty",
		},
		{
			name: "header only",
			in:   "position,term,type\n\n",
			err:  "t.csv: no items: the header row is the only row",
		},
		{
			name: "a used column twice",
			in:   "term,Term\na,b\n",
			err:  `t.csv: the header row names column "Term" twice (columns 1 and 2)`,
		},
		{
			name: "a metadata column twice",
			in:   "term,note,x,note\na,b,c,d\n",
			err:  `t.csv: the header row names column "note" twice (columns 2 and 4)`,
		},
		{
			name: "header not valid UTF-8",
			in:   "term,\xff\na,b\n",
			err:  "t.csv: the header row is not valid UTF-8",
		},
		{
			name: "header not valid CSV",
			in:   "te\"rm\na\n",
			err:  `t.csv: the header row (line 1) is not valid CSV: a " in an unquoted field; quote the whole field and double the " inside it`,
		},
	})
}

func TestParseJSONL(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("가", 101)
	runParseCases(t, "t.jsonl", []parseCase{
		{
			name: "fields, metadata and extra fields",
			in: `{"position":2,"term":" 물 ","type":"n","metadata":{"def":"water","level":1,"tags":["a", "b"],"ok":true,` +
				`"x":null,"blank":" ","obj":{"k": 1.50}},"source":" hsk ","rank":{"n": 5},"none":null}` + "\n" +
				`{"position":"1","term":"불"}` + "\n",
			want: []flashpipe.Item{
				item(1, "불", "unknown"),
				item(2, "물", "noun", "def", "water", "level", "1", "tags", `["a","b"]`, "ok", "true",
					"obj", `{"k":1.50}`, "source", "hsk", "rank", `{"n":5}`),
			},
			layout: LayoutJSONL,
		},
		{
			name:   "field names are case-insensitive",
			in:     `{"Position":1,"TERM":"a","Type":"V","Metadata":{"k":"v"}}`,
			want:   []flashpipe.Item{item(1, "a", "verb", "k", "v")},
			layout: LayoutJSONL,
		},
		{
			name:    "without a position the non-blank line number is the position",
			in:      "\n{\"term\":\"a\"}\n\n{\"term\":\"\"}\n{\"term\":\"c\",\"position\":null}\n",
			opts:    ParseOptions{SkipBadRows: true},
			want:    []flashpipe.Item{item(1, "a", "unknown"), item(3, "c", "unknown")},
			skipped: []RowError{{Line: 4, Reason: "term is empty"}},
			layout:  LayoutJSONL,
		},
		{
			name:   "byte order mark and CRLF line ends",
			in:     "\uFEFF{\"term\":\"a\"}\r\n \t\r\n{\"term\":\"b\"}\r\n",
			want:   []flashpipe.Item{item(1, "a", "unknown"), item(2, "b", "unknown")},
			layout: LayoutJSONL,
		},
		{
			name:   "positions sorted",
			in:     "{\"position\":30,\"term\":\"c\"}\n{\"position\":5,\"term\":\"a\"}\n",
			want:   []flashpipe.Item{item(5, "a", "unknown"), item(30, "c", "unknown")},
			layout: LayoutJSONL,
		},
		{
			name: "every bad row is reported",
			in: `{"position":1,"term":"ok"}` + "\n" +
				`{"position":1,"term":"dup"}` + "\n" +
				`{"term":"a"` + "\n" +
				`[1,2]` + "\n" +
				`"just a string"` + "\n" +
				`null` + "\n" +
				`{"term":"a"} {"term":"b"}` + "\n" +
				`{"term":"a",}` + "\n" +
				`{"position":1.5,"term":"a"}` + "\n" +
				`{"position":1e3,"term":"a"}` + "\n" + // line 10
				`{"position":"x","term":"a"}` + "\n" +
				`{"position":0,"term":"a"}` + "\n" +
				`{"position":-2,"term":"a"}` + "\n" +
				`{"position":true,"term":"a"}` + "\n" +
				`{"position":99999999999999999999,"term":"a"}` + "\n" +
				`{"position":3}` + "\n" +
				`{"position":4,"term":5}` + "\n" +
				`{"position":5,"term":"a\tb"}` + "\n" +
				`{"position":6,"term":"a","type":["n"]}` + "\n" +
				`{"position":7,"term":"a","metadata":"x"}` + "\n" + // line 20
				`{"position":8,"term":"a","term":"b"}` + "\n" +
				`{"position":9,"term":"a","Term":"b"}` + "\n" +
				`{"position":10,"term":"a","note":"x","metadata":{"note":"y"}}` + "\n" +
				`{"position":11,"term":"a","metadata":{"k":1,"k":2}}` + "\n" +
				"{\"position\":12,\"term\":\"\xff\"}\n" +
				"{\"position\":13,\"term\":\"a\",\"note\":\"\xff\"}\n" +
				"{\"position\":14,\"term\":\"a\",\"\xff\":\"x\"}\n" +
				"{\"position\":15,\"term\":\"a\",\"type\":\"\xff\"}\n" +
				`{"position":16,"term":"` + long + `"}` + "\n" +
				`{"position":17,"term":"  "}` + "\n" + // line 30
				`{"position":"","term":"a"}` + "\n" +
				`{"position":18,"term":"a","type":"x\u0000"}` + "\n" +
				`{"position":19,"term":"a","metadata":[]}` + "\n" +
				`{"position":20,"term":null}` + "\n" +
				`{"position":{},"term":"a"}` + "\n" +
				`{"position":21,"term":"a","metadata":{"k":"\ud800"}} x` + "\n",
			err: "t.jsonl: 35 bad rows, nothing was published:\n" +
				"  line 2: position 1 is already used on line 1\n" +
				"  line 3: malformed JSON: the line ends before the JSON object does\n" +
				"  line 4: line is not a JSON object but an array\n" +
				"  line 5: line is not a JSON object but a string\n" +
				"  line 6: line is not a JSON object but null\n" +
				"  line 7: more than one JSON value on the line\n" +
				"  line 8: malformed JSON: invalid character '}' looking for beginning of object key string\n" +
				"  line 9: position \"1.5\" is not an integer\n" +
				"  line 10: position \"1e3\" is not an integer\n" +
				"  line 11: position \"x\" is not an integer\n" +
				"  line 12: position \"0\" is less than 1\n" +
				"  line 13: position \"-2\" is less than 1\n" +
				"  line 14: position must be an integer, got boolean\n" +
				"  line 15: position \"99999999999999999999\" is too large, the limit is 9223372036854775807\n" +
				"  line 16: term is missing\n" +
				"  line 17: term must be a string, got number\n" +
				"  line 18: term contains a control character\n" +
				"  line 19: type must be a string, got array\n" +
				"  line 20: metadata must be an object, got string\n" +
				"  line 21: field \"term\" appears twice\n" +
				"  line 22: field \"term\" appears twice, as \"term\" and \"Term\"\n" +
				"  line 23: field \"note\" is also a metadata key\n" +
				"  line 24: metadata key \"k\" appears twice\n" +
				"  line 25: term is not valid UTF-8\n" +
				"  line 26: field \"note\" is not valid UTF-8\n" +
				"  line 27: line is not valid UTF-8\n" +
				"  line 28: type is not valid UTF-8\n" +
				"  line 29: term has 101 characters, the limit is 100\n" +
				"  line 30: term is empty\n" +
				"  line 31: position is empty\n" +
				"  line 32: type contains a control character\n" +
				"  line 33: metadata must be an object, got array\n" +
				"  line 34: term is missing\n" +
				"  line 35: position must be an integer, got object\n" +
				"  line 36: malformed JSON: invalid character 'x' looking for beginning of value",
		},
		{
			name: "all rows bad with SkipBadRows is still an error",
			in:   "{\"term\":1}\n\n{}\n",
			opts: ParseOptions{SkipBadRows: true},
			err:  "t.jsonl: no items, 2 bad rows, nothing was published:\n  line 1: term must be a string, got number\n  line 3: term is missing",
		},
		{
			name: "a JSON array is not JSON Lines",
			in:   "\n [{\"term\":\"a\"},\n{\"term\":\"b\"}]\n",
			err:  "t.jsonl: the input is a JSON array; JSON Lines wants one JSON object per line",
		},
		{
			name: "empty input",
			in:   "",
			err:  "t.jsonl: no items: the input is empty",
		},
		{
			name: "blank input",
			in:   "\uFEFF\n \r\n\t\n",
			err:  "t.jsonl: no items: the input is empty",
		},
	})
}

// TestParseLongLines checks the MaxLineBytes limit at its edge, in both formats.
func TestParseLongLines(t *testing.T) {
	t.Parallel()
	pad := func(n int) string { return strings.Repeat("x", n) }
	// CSV lines "N,<pad>": exactly MaxLineBytes long, then one byte longer.
	csvIn := "position,term,note\n" +
		"1,a," + pad(MaxLineBytes-4) + "\r\n" + // line 2: at the limit, CRLF
		"2,b," + pad(MaxLineBytes-3) + "\n" + // line 3: one byte over
		"3,c,\"short\n" + pad(MaxLineBytes+1) + "\"\n" + // lines 4-5: the second line is over
		"4,d,x\n" +
		"5,e," + pad(MaxLineBytes-3) // line 7: over, without a final newline
	jsonLine := func(pos, n int) string {
		s := `{"position":` + strconv.Itoa(pos) + `,"term":"a","pad":"`
		return s + pad(n-len(s)-2) + `"}`
	}
	jsonIn := jsonLine(1, MaxLineBytes) + "\r\n" + jsonLine(2, MaxLineBytes+1) + "\n" + jsonLine(3, 40) + "\n" +
		jsonLine(4, 3*MaxLineBytes)
	cases := []struct {
		name, in string
		format   Format
		want     []int64
		skipped  []RowError
	}{
		{
			name: "csv", in: csvIn, format: FormatCSV, want: []int64{1, 4},
			skipped: []RowError{
				{Line: 3, Reason: "line is longer than 1 MiB (1048577 bytes)"},
				{Line: 4, Reason: "line 5 of this row is longer than 1 MiB (1048578 bytes)"},
				{Line: 7, Reason: "line is longer than 1 MiB (1048577 bytes)"},
			},
		},
		{
			name: "jsonl", in: jsonIn, format: FormatJSONL, want: []int64{1, 3},
			skipped: []RowError{
				{Line: 2, Reason: "line is longer than 1 MiB (1048577 bytes)"},
				{Line: 4, Reason: "line is longer than 1 MiB (3145728 bytes)"},
			},
		},
	}
	t.Run("csv header", func(t *testing.T) {
		t.Parallel()
		in := "\nterm," + pad(MaxLineBytes-4) + "\n물,x\n"
		got, err := Parse(strings.NewReader(in), ParseOptions{Source: "t.csv", SkipBadRows: true})
		assertParseError(t, got, err, "t.csv: the header row (line 2) is longer than 1 MiB (1048577 bytes)")
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(strings.NewReader(tc.in), ParseOptions{Format: tc.format, SkipBadRows: true})
			checkSpool(t, tc.in, ParseOptions{Format: tc.format, SkipBadRows: true}, got, err)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var positions []int64
			for _, it := range got.Items {
				positions = append(positions, it.Position)
			}
			if !slices.Equal(positions, tc.want) {
				t.Errorf("positions = %v, want %v", positions, tc.want)
			}
			if !reflect.DeepEqual(got.Skipped, tc.skipped) {
				t.Errorf("skipped:\n got %#v\nwant %#v", got.Skipped, tc.skipped)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	t.Parallel()
	const csvIn, jsonIn = "term\n물\n", "{\"term\":\"물\"}\n"
	cases := []struct {
		name, in, source string
		format           Format
		layout           string
	}{
		{name: ".csv", in: csvIn, source: "a.csv", layout: LayoutSimple},
		{name: ".CSV", in: csvIn, source: "dir/A.CSV", layout: LayoutSimple},
		{name: ".jsonl", in: jsonIn, source: "a.jsonl", layout: LayoutJSONL},
		{name: ".ndjson", in: jsonIn, source: "a.ndjson", layout: LayoutJSONL},
		{name: ".json", in: jsonIn, source: "a.json", layout: LayoutJSONL},
		{name: "sniffed JSON Lines", in: "\uFEFF\n  \t" + jsonIn, source: "upload.txt", layout: LayoutJSONL},
		{name: "sniffed CSV", in: csvIn, source: "http", layout: LayoutSimple},
		{name: "sniffed without a source", in: jsonIn, layout: LayoutJSONL},
		{name: "explicit CSV beats the extension", in: csvIn, source: "a.jsonl", format: FormatCSV, layout: LayoutSimple},
		{name: "explicit JSONL beats the extension", in: jsonIn, source: "a.csv", format: FormatJSONL, layout: LayoutJSONL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(strings.NewReader(tc.in), ParseOptions{Format: tc.format, Source: tc.source})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Layout != tc.layout {
				t.Errorf("layout = %q, want %q", got.Layout, tc.layout)
			}
			if want := []flashpipe.Item{item(1, "물", "unknown")}; !reflect.DeepEqual(got.Items, want) {
				t.Errorf("items = %#v, want %#v", got.Items, want)
			}
		})
	}

	t.Run("the extension is believed", func(t *testing.T) {
		t.Parallel()
		_, err := Parse(strings.NewReader(jsonIn), ParseOptions{Source: "a.csv"})
		assertParseError(t, nil, err, `a.csv: the header row (line 1) is not valid CSV: `+
			`a " in an unquoted field; quote the whole field and double the " inside it`)
	})
	t.Run("unknown format", func(t *testing.T) {
		t.Parallel()
		_, err := Parse(strings.NewReader(csvIn), ParseOptions{Format: "xml"})
		var pe *ParseError
		if err == nil || errors.As(err, &pe) {
			t.Fatalf("err = %v, want a plain error", err)
		}
		if want := `ingest: ParseOptions.Format "xml" is not "csv", "jsonl" or empty`; err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
	})
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path   string
		want   []flashpipe.Item
		layout string
	}{
		{
			path: "testdata/simple.csv", layout: LayoutSimple,
			want: []flashpipe.Item{
				item(1, "물", "noun", "notes", "water"), item(2, "먹다", "verb"),
				item(3, "빨리", "adverb", "notes", "fast,\nquickly"),
			},
		},
		{
			path: "testdata/items.jsonl", layout: LayoutJSONL,
			want: []flashpipe.Item{item(1, "물", "noun", "def", "water"), item(2, "불", "unknown", "source", "hsk")},
		},
		{
			path: "testdata/items.ndjson", layout: LayoutJSONL,
			want: []flashpipe.Item{item(1, "물", "unknown"), item(2, "불", "noun")},
		},
		{
			path: "testdata/sniffed.txt", layout: LayoutJSONL,
			want: []flashpipe.Item{item(1, "물", "unknown")},
		},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			got, err := ParseFile(tc.path, ParseOptions{})
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if !reflect.DeepEqual(got.Items, tc.want) {
				t.Errorf("items:\n got %#v\nwant %#v", got.Items, tc.want)
			}
			if got.Layout != tc.layout {
				t.Errorf("layout = %q, want %q", got.Layout, tc.layout)
			}
		})
	}

	const badRows = ": 2 bad rows, nothing was published:\n" +
		"  line 3: term is empty\n" +
		"  line 5: position 2 is already used on line 4"
	t.Run("source defaults to the base name", func(t *testing.T) {
		t.Parallel()
		got, err := ParseFile("testdata/bad_rows.csv", ParseOptions{})
		assertParseError(t, got, err, "bad_rows.csv"+badRows)
	})
	t.Run("explicit source", func(t *testing.T) {
		t.Parallel()
		got, err := ParseFile("testdata/bad_rows.csv", ParseOptions{Source: "upload"})
		assertParseError(t, got, err, "upload"+badRows)
	})
	t.Run("skip bad rows", func(t *testing.T) {
		t.Parallel()
		got, err := ParseFile("testdata/bad_rows.csv", ParseOptions{SkipBadRows: true})
		if err != nil {
			t.Fatalf("ParseFile: %v", err)
		}
		if want := []flashpipe.Item{item(1, "물", "noun"), item(2, "불", "noun")}; !reflect.DeepEqual(got.Items, want) {
			t.Errorf("items = %#v, want %#v", got.Items, want)
		}
		want := []RowError{{3, "term is empty"}, {5, "position 2 is already used on line 4"}}
		if !reflect.DeepEqual(got.Skipped, want) {
			t.Errorf("skipped = %#v, want %#v", got.Skipped, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, err := ParseFile("testdata/missing.csv", ParseOptions{})
		var pe *ParseError
		if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &pe) {
			t.Fatalf("err = %v, want a not-exist error that is no ParseError", err)
		}
	})
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestParseReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, format := range []Format{FormatCSV, FormatJSONL, FormatAuto} {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			r := &failingReader{data: []byte("term\na\n{\"term\":\"b\"}\n"), err: boom}
			_, err := Parse(r, ParseOptions{Format: format, Source: "up"})
			var pe *ParseError
			if !errors.Is(err, boom) || errors.As(err, &pe) {
				t.Fatalf("err = %v, want boom and no ParseError", err)
			}
			if want := "ingest: reading up: boom"; err.Error() != want {
				t.Errorf("err = %q, want %q", err, want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	if got, want := (RowError{Line: 7, Reason: "term is empty"}).Error(), "line 7: term is empty"; got != want {
		t.Errorf("RowError.Error() = %q, want %q", got, want)
	}
	_, err := Parse(strings.NewReader("position,term\n1,\n"), ParseOptions{SkipBadRows: true})
	if !errors.Is(err, ErrNoItems) {
		t.Errorf("all rows skipped: err = %v, want ErrNoItems", err)
	}
	_, err = Parse(strings.NewReader("position,term\n1,\n2,b\n"), ParseOptions{})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Err != nil || errors.Is(err, ErrNoItems) {
		t.Errorf("bad rows: err = %v, want a ParseError with Rows only", err)
	}
	if pe != nil && pe.Unwrap() != nil {
		t.Errorf("Unwrap = %v, want nil", pe.Unwrap())
	}
	_, err = Parse(strings.NewReader("term,type\n,n\n"), ParseOptions{}) // no Source: no prefix
	if want := "1 bad row, nothing was published:\n  line 2: term is empty"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
	whole := &ParseError{Source: "s", Err: io.ErrUnexpectedEOF}
	if !errors.Is(whole, io.ErrUnexpectedEOF) || whole.Error() != "s: unexpected EOF" {
		t.Errorf("whole-file ParseError = %q, does not unwrap to its Err", whole)
	}
}

func TestParseExampleFiles(t *testing.T) {
	t.Parallel()
	t.Run("vocabulary_1000", func(t *testing.T) {
		t.Parallel()
		const path = "../../examples/vocabulary_1000.csv"
		got, err := ParseFile(path, ParseOptions{})
		if err != nil {
			t.Fatalf("ParseFile: %v", err)
		}
		if got.Layout != LayoutSimple || len(got.Items) != 1000 || len(got.Skipped) != 0 {
			t.Fatalf("layout %q, %d items, %d skipped; want simple, 1000, 0", got.Layout, len(got.Items), len(got.Skipped))
		}
		rows := readCSV(t, path) // independent reading: position,term,type
		for i, it := range got.Items {
			want := item(int64(i+1), rows[i+1][1], rows[i+1][2])
			if !reflect.DeepEqual(it, want) || !flashpipe.IsKnownType(it.Type) {
				t.Fatalf("item %d = %#v, want %#v", i, it, want)
			}
		}
	})
	t.Run("10K_HSK_List", func(t *testing.T) {
		t.Parallel()
		got, err := ParseFile("../../testdata/10K_HSK_List.csv", ParseOptions{})
		if err != nil {
			t.Fatalf("ParseFile: %v", err)
		}
		if got.Layout != LayoutRich || len(got.Items) != 10000 {
			t.Fatalf("layout %q, %d items; want rich, 10000", got.Layout, len(got.Items))
		}
		first := got.Items[0]
		if first.Term != "내가" || first.Type != "pronoun" || first.Position != 1 ||
			first.Metadata["IPA_Pronunciation"] != "nɛ.ka" || first.Metadata["Definition"] != "I" {
			t.Errorf("first item = %#v", first)
		}
		for i, it := range got.Items {
			if it.Position != int64(i+1) {
				t.Fatalf("item %d has position %d", i, it.Position)
			}
			for _, k := range []string{"Position", "Hangul", "Word_Type"} {
				if _, ok := it.Metadata[k]; ok {
					t.Fatalf("item %d has %s in its metadata", i, k)
				}
			}
		}
	})
	t.Run("test_5_words", func(t *testing.T) {
		t.Parallel()
		got, err := ParseFile("../../examples/test_5_words.csv", ParseOptions{})
		if err != nil {
			t.Fatalf("ParseFile: %v", err)
		}
		var terms []string
		for i, it := range got.Items {
			terms = append(terms, it.Term)
			if it.Position != int64(i+1) {
				t.Errorf("item %d has position %d", i, it.Position)
			}
		}
		if want := []string{"내가", "그", "난", "내", "안"}; got.Layout != LayoutRich || !slices.Equal(terms, want) {
			t.Errorf("layout %q, terms %q; want rich, %q", got.Layout, terms, want)
		}
		if last := got.Items[4]; last.Type != "adverb" || last.Metadata["IPA_Pronunciation"] != "an" {
			t.Errorf("last item = %#v", last)
		}
	})
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkItems fails unless items satisfy the input rules.
func checkItems(t *testing.T, items []flashpipe.Item) {
	t.Helper()
	if len(items) == 0 {
		t.Fatal("a parsed batch without items")
	}
	for i, it := range items {
		switch {
		case it.Position < 1:
			t.Fatalf("item %d: position %d < 1", i, it.Position)
		case i > 0 && it.Position <= items[i-1].Position:
			t.Fatalf("item %d: position %d after %d", i, it.Position, items[i-1].Position)
		case it.Term == "" || strings.TrimSpace(it.Term) != it.Term:
			t.Fatalf("item %d: term %q is empty or untrimmed", i, it.Term)
		case !utf8.ValidString(it.Term) || utf8.RuneCountInString(it.Term) > flashpipe.MaxTermLength:
			t.Fatalf("item %d: term %q is invalid UTF-8 or too long", i, it.Term)
		case strings.ContainsFunc(it.Term, unicode.IsControl) || strings.ContainsFunc(it.Type, unicode.IsControl):
			t.Fatalf("item %d: control character in %q or %q", i, it.Term, it.Type)
		case it.Type == "" || flashpipe.NormalizeType(it.Type) != it.Type || !utf8.ValidString(it.Type):
			t.Fatalf("item %d: type %q is not normalised", i, it.Type)
		}
		for k, v := range it.Metadata {
			if v == "" || strings.TrimSpace(v) != v || !utf8.ValidString(v) || !utf8.ValidString(k) {
				t.Fatalf("item %d: metadata %q = %q", i, k, v)
			}
		}
	}
}

// FuzzParse checks that Parse never panics, that what it returns keeps the rules,
// and that SkipBadRows leaves out exactly the rows a strict parse reports.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"position,term,type\n1,내가,pronoun\n2,먹다,v\n",
		"Position,Hangul,Word_Type,Definition\n2,그,,that\n1,\"a\nb\",n,\"x\"\"y\"\n",
		"\uFEFFterm\n\n \t물 \n,\n",
		"position,term\n1,a\"b\n3,\"open\n",
		`{"position":2,"term":"물","type":"n","metadata":{"k":[1,2],"n":null},"x":1}` + "\n\n{\"term\":\"불\"}\n",
		`{"position":"7","term":"\u0000"}` + "\n[1]\n{\"term\":\"a\",\"TERM\":\"b\"}\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, jsonl bool) {
		format := FormatCSV
		if jsonl {
			format = FormatJSONL
		}
		strict, strictErr := Parse(bytes.NewReader(data), ParseOptions{Format: format, Source: "fuzz"})
		lax, laxErr := Parse(bytes.NewReader(data), ParseOptions{Format: format, Source: "fuzz", SkipBadRows: true})

		var strictPE, laxPE *ParseError
		if strictErr != nil && !errors.As(strictErr, &strictPE) {
			t.Fatalf("strict: %v is not a ParseError", strictErr)
		}
		if laxErr != nil && !errors.As(laxErr, &laxPE) {
			t.Fatalf("lax: %v is not a ParseError", laxErr)
		}
		for _, pe := range []*ParseError{strictPE, laxPE} {
			if pe == nil {
				continue
			}
			if len(pe.Rows) == 0 && pe.Err == nil {
				t.Fatalf("ParseError without rows or Err")
			}
			for i, r := range pe.Rows {
				if r.Line < 1 || i > 0 && r.Line <= pe.Rows[i-1].Line || r.Reason == "" {
					t.Fatalf("bad rows out of order or without reason: %v", pe.Rows)
				}
			}
		}
		if strict != nil {
			checkItems(t, strict.Items)
			if len(strict.Skipped) != 0 {
				t.Fatalf("strict parse skipped %v", strict.Skipped)
			}
		}
		if lax != nil {
			checkItems(t, lax.Items)
		}

		switch {
		case strictErr == nil: // no bad rows: skipping changes nothing
			if laxErr != nil || !reflect.DeepEqual(strict, lax) {
				t.Fatalf("strict %+v, lax %+v, %v", strict, lax, laxErr)
			}
		case len(strictPE.Rows) == 0: // a whole-file problem
			if laxErr == nil || laxErr.Error() != strictErr.Error() {
				t.Fatalf("strict error %q, lax error %v", strictErr, laxErr)
			}
		default: // bad rows: skipping leaves out exactly those
			skipped := strictPE.Rows
			if laxErr == nil && !reflect.DeepEqual(lax.Skipped, skipped) {
				t.Fatalf("strict rows %v, lax skipped %v", skipped, lax.Skipped)
			}
			if laxErr != nil && (!errors.Is(laxErr, ErrNoItems) || !reflect.DeepEqual(laxPE.Rows, skipped)) {
				t.Fatalf("strict rows %v, lax error %v", skipped, laxErr)
			}
		}
	})
}

func BenchmarkParse10K(b *testing.B) {
	data, err := os.ReadFile("../../testdata/10K_HSK_List.csv")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := Parse(bytes.NewReader(data), ParseOptions{Format: FormatCSV})
		if err != nil || len(p.Items) != 10000 {
			b.Fatalf("Parse: %d items, %v", len(p.Items), err)
		}
	}
}
