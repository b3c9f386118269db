package stages

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/flashpipe/flashpipe"
)

// appendAnalysis must write exactly what encoding/json writes (HTML escaping off), so
// cache keys stay the same whichever encoder computes them.
func TestAppendAnalysisMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	odd := "quote \" back \\ ctl \x01\x1f \b\f\n\r\t <html>&amp; \u2028\u2029 bad \xff utf8 한국어 😀"
	for _, a := range []flashpipe.Analysis{
		{},
		sampleAnalysisValue(flashpipe.Item{Position: 7, Term: "남성", Type: "noun"}),
		{TermNumber: -5, Term: odd, IPA: odd, POS: odd, PrimaryMeaning: odd, OtherMeanings: &odd, Metaphor: odd,
			Comparison: &flashpipe.Comparison{Vs: odd, Nuance: odd}, Homonyms: []flashpipe.Homonym{{Hanja: odd}, {}},
			KoreanKeywords: []string{odd, ""}},
		{Homonyms: []flashpipe.Homonym{}, KoreanKeywords: []string{}},
	} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&a); err != nil {
			t.Fatal(err)
		}
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := appendAnalysis(nil, &a); !bytes.Equal(got, want) {
			t.Errorf("appendAnalysis\n got %s\nwant %s", got, want)
		}
	}
}

func sampleAnalysisValue(it flashpipe.Item) flashpipe.Analysis { return *sampleAnalysis(it) }

// The Go renderings of the default user templates must match the templates.
func TestNativeDefaultUserTemplates(t *testing.T) {
	t.Parallel()
	a := sampleAnalysis(flashpipe.Item{Position: 3, Term: "x", Type: "verb"})
	for _, it := range []flashpipe.Item{{Position: 7, Term: "남성", Type: "n"}, {Position: 123456, Term: "{{.Term}} <&> \"q\"", Type: "weird type"}} {
		for _, slot := range []int{slotS1User, slotS2User} {
			data := stage1Data(it)
			if slot == slotS2User {
				data = stage2Data(it, a)
			}
			var viaTemplate, native bytes.Buffer
			if err := defaults.tmpl[slot].Execute(&viaTemplate, data); err != nil {
				t.Fatal(err)
			}
			renderDefaultUser(&native, slot, data)
			if viaTemplate.String() != native.String() {
				t.Errorf("slot %d:\ntemplate %q\n  native %q", slot, viaTemplate.String(), native.String())
			}
		}
	}
	if !defaults.native[slotS1User] || !defaults.native[slotS2User] || defaults.native[slotS1System] {
		t.Errorf("native flags %v", defaults.native)
	}
}
