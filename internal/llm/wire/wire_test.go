package wire_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

func TestDecoderReadsShapes(t *testing.T) {
	t.Parallel()
	doc := ` {"s":"a\"b","n":-12,"f":1.5e3,"t":true,"z":null,"arr":[1,"x",{"k":[]},null,false],"o":{"x":{}},"u":"\u00e9"} `
	var d wire.Decoder
	d.Reset([]byte(doc))
	got := map[string]any{}
	ok := d.Object(func(k []byte) bool {
		var ok bool
		switch key := string(k); key {
		case "s", "u":
			got[key], _, ok = d.String()
		case "n":
			got[key], ok = d.Int()
		case "f":
			var f float64
			f, _, ok = d.Float()
			got[key] = f
		case "t":
			got[key], ok = d.Bool()
		case "z":
			got[key] = d.Null()
			ok = true
		case "arr":
			var raw []byte
			raw, ok = d.Raw()
			got[key] = string(raw)
		default:
			ok = d.Skip()
		}
		return ok
	})
	if !ok || !d.End() {
		t.Fatalf("decoding failed: %v", d.Err())
	}
	want := map[string]any{"s": `a"b`, "u": "é", "n": int64(-12), "f": 1500.0, "t": true, "z": true, "arr": `[1,"x",{"k":[]},null,false]`}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
}

func TestDecoderRejectsBadJSON(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{``, `{`, `{"a":}`, `{"a":1,}`, `[1 2]`, `{"a":tru}`, `{"a":nul}`, `{"a":01}`, `{"a":1.}`,
		`{"a":-}`, `{"a":1e}`, `{"a":"\x"}`, `{"a":"\u12g4"}`, "{\"a\":\"\x01\"}", `{"a":"b"`, `{"a":1} 2`, `{a:1}`,
		`{"a\u0062":1}`, strings.Repeat("[", 600) + strings.Repeat("]", 600)} {
		var d wire.Decoder
		d.Reset([]byte(doc))
		if d.Skip() && d.End() {
			t.Errorf("accepted %q", doc)
		}
		if json.Valid([]byte(doc)) && !strings.Contains(doc, `\u0062`) && !strings.HasPrefix(doc, "[[[") {
			t.Errorf("test case %q is valid JSON", doc)
		}
	}
	var d wire.Decoder
	d.Reset([]byte(`{"n":1.5}`))
	if d.Object(func([]byte) bool { _, ok := d.Int(); return ok }) {
		t.Error("Int accepted 1.5")
	}
}

func TestAppendString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain ascii text longer than eight bytes", "quote \" back \\ slash", "ctl \x00\x01\x1f\x7f",
		"\n\r\t", "한국어 男性 ʌ̃", "bad utf8 \xff\xfe end", "trunc \xe4\xb8", "line sep \u2028 para \u2029", "<html>&amp;</html>", "emoji 😀"} {
		b := wire.AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("AppendString(%q) = %s: not JSON: %v", s, b, err)
			continue
		}
		std, _ := json.Marshal(s)
		var want string
		json.Unmarshal(std, &want)
		if got != want {
			t.Errorf("round trip of %q = %q, want %q", s, got, want)
		}
		var d wire.Decoder
		d.Reset(b)
		if back, _, ok := d.String(); !ok || back != want {
			t.Errorf("Decoder read %q back as %q (%v)", s, back, ok)
		}
	}
}

// FuzzAppendString checks AppendString against encoding/json (HTML escaping off),
// byte for byte.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x00\"\\\u2028\u2029\xff\b\f", "한국어 text \xe4\xb8 and more ascii text here", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf strings.Builder
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(wire.AppendString(nil, s)); got != want {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	})
}
