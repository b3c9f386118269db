package stages_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/stages"
)

var item = flashpipe.Item{Position: 42, Term: "남성", Type: "n"}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func parsedAnalysis(t testing.TB) *flashpipe.Analysis {
	t.Helper()
	a, err := stages.ParseStage1(readTestdata(t, "stage1_answer.json"), item)
	if err != nil {
		t.Fatalf("ParseStage1(testdata): %v", err)
	}
	return a
}

// jsonFields returns the JSON names of a struct type's fields.
func jsonFields(v any) []string {
	var names []string
	rt := reflect.TypeOf(v)
	for i := 0; i < rt.NumField(); i++ {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

func TestPromptsNameEveryDomainField(t *testing.T) {
	t.Parallel()
	cfg := stages.DefaultConfig()
	r1 := stages.Stage1Request(cfg, item)
	sys1 := r1.Messages[0].Content
	for _, f := range jsonFields(flashpipe.Analysis{}) {
		if !strings.Contains(sys1, `"`+f+`"`) {
			t.Errorf("stage 1 system prompt does not name field %q", f)
		}
	}
	for _, f := range jsonFields(flashpipe.Comparison{}) {
		if !strings.Contains(sys1, `"`+f+`"`) {
			t.Errorf("stage 1 system prompt does not name comparison field %q", f)
		}
	}
	for _, f := range jsonFields(flashpipe.Homonym{}) {
		if !strings.Contains(sys1, `"`+f+`"`) {
			t.Errorf("stage 1 system prompt does not name homonym field %q", f)
		}
	}
	for _, typ := range flashpipe.KnownTypes() {
		if !strings.Contains(sys1, typ) {
			t.Errorf("stage 1 system prompt does not list part of speech %q", typ)
		}
	}
	for _, limit := range []string{"200 characters", "500 characters", "300 characters", "at most 5", "at most 10"} {
		if !strings.Contains(sys1, limit) {
			t.Errorf("stage 1 system prompt does not state the limit %q", limit)
		}
	}

	r2 := stages.Stage2Request(cfg, item, parsedAnalysis(t))
	sys2, user2 := r2.Messages[0].Content, r2.Messages[1].Content
	for _, f := range jsonFields(flashpipe.Card{}) {
		if !strings.Contains(sys2, `"`+f+`"`) {
			t.Errorf("stage 2 system prompt does not name field %q", f)
		}
	}
	for _, tab := range stages.Tabs() {
		if !strings.Contains(sys2, tab) {
			t.Errorf("stage 2 system prompt does not name tab %q", tab)
		}
	}
	for _, s := range []string{`{"cards"`, "15 to 30 words", "80 to 150 words", "sensory", "term:", "pos:", "card:", "concept:",
		"metaphor:", "comparison_term:", "hanja", "character:", `"formal"`, `"casual"`, `"neutral"`} {
		if !strings.Contains(sys2, s) {
			t.Errorf("stage 2 system prompt does not say %q", s)
		}
	}
	for _, tab := range stages.DefaultTabs() {
		if p := stages.Primer("noun", 42, "남성", tab); !strings.Contains(user2, p) {
			t.Errorf("stage 2 user prompt lacks the primer %q", p)
		}
	}
}

func TestPrimer(t *testing.T) {
	t.Parallel()
	p := stages.Primer("adj", 7, "빠르다", stages.TabHanja)
	for _, s := range []string{"ADJECTIVE", "7", "빠르다", "Hanja", "memory palace"} {
		if !strings.Contains(p, s) {
			t.Errorf("Primer = %q, lacks %q", p, s)
		}
	}
	if stages.Primer("noun", 7, "빠르다", stages.TabHanja) != stages.Primer("noun", 7, "빠르다", stages.TabHanja) {
		t.Error("Primer is not fixed")
	}
}

func TestUserMessageEndsWithInputBlock(t *testing.T) {
	t.Parallel()
	cfg := stages.DefaultConfig()
	odd := flashpipe.Item{Position: 9000, Term: "\"따옴표\" ```펜스``` \n줄", Type: " ADV "}
	for _, it := range []flashpipe.Item{item, odd} {
		r1 := stages.Stage1Request(cfg, it)
		user := r1.Messages[1].Content
		if !strings.HasSuffix(user, "\n```") || !strings.Contains(user, "\n\nInput:\n```json\n{") {
			t.Errorf("stage 1 user message does not end with the input block:\n%s", user)
		}
		in, err := stages.DecodeInput(user)
		if err != nil {
			t.Fatalf("DecodeInput(stage 1): %v", err)
		}
		want := stages.Input{TermNumber: it.Position, Term: it.Term, Type: flashpipe.NormalizeType(it.Type)}
		if !reflect.DeepEqual(in, want) || in.Stage() != 1 {
			t.Errorf("DecodeInput(stage 1) = %+v, want %+v", in, want)
		}
		last := user[strings.LastIndex(user, "Input:\n```json\n"):]
		if strings.Count(last, "\n") != 3 {
			t.Errorf("input block is not one JSON line: %q", last)
		}

		a := parsedAnalysis(t)
		r2 := stages.Stage2Request(cfg, it, a)
		in2, err := stages.DecodeInput(r2.Messages[1].Content)
		if err != nil {
			t.Fatalf("DecodeInput(stage 2): %v", err)
		}
		wantA := stages.CanonicalAnalysis(a)
		wantA.TermNumber = it.Position
		if in2.Stage() != 2 || in2.Term != it.Term || in2.TermNumber != it.Position || !reflect.DeepEqual(*in2.Analysis, wantA) {
			t.Errorf("DecodeInput(stage 2) = %+v / %+v", in2, in2.Analysis)
		}
	}
	for _, bad := range []string{"no block", "Input:\n```json\n{\"term\":1}\n```", "Input:\n```json\n{}\n```", "Input:\n```json\n{\"term\":\"x\""} {
		if _, err := stages.DecodeInput(bad); err == nil {
			t.Errorf("DecodeInput(%q) succeeded", bad)
		}
	}
}

// schemaStrict checks the strict-mode rules on every object of a schema.
func schemaStrict(t *testing.T, path string, s map[string]any) {
	t.Helper()
	if props, ok := s["properties"].(map[string]any); ok {
		if s["additionalProperties"] != false {
			t.Errorf("%s: additionalProperties is not false", path)
		}
		req, _ := s["required"].([]any)
		var names []string
		for _, r := range req {
			names = append(names, r.(string))
		}
		for k, v := range props {
			if !slices.Contains(names, k) {
				t.Errorf("%s: property %q is not required", path, k)
			}
			schemaStrict(t, path+"."+k, v.(map[string]any))
		}
		if len(names) != len(props) {
			t.Errorf("%s: required %v does not match the properties", path, names)
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		schemaStrict(t, path+"[]", items)
	}
	alts, _ := s["anyOf"].([]any)
	for _, alt := range alts {
		schemaStrict(t, path+"|", alt.(map[string]any))
	}
}

func TestSchemas(t *testing.T) {
	t.Parallel()
	var s1, s2 map[string]any
	if err := json.Unmarshal(stages.Stage1Schema(), &s1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(stages.Stage2Schema(), &s2); err != nil {
		t.Fatal(err)
	}
	schemaStrict(t, "stage1", s1)
	schemaStrict(t, "stage2", s2)
	var props1 []string
	for k := range s1["properties"].(map[string]any) {
		props1 = append(props1, k)
	}
	if want := jsonFields(flashpipe.Analysis{}); !sameSet(props1, want) {
		t.Errorf("stage 1 schema properties %v, want the Analysis fields %v", props1, want)
	}
	card := s2["properties"].(map[string]any)["cards"].(map[string]any)["items"].(map[string]any)
	var props2 []string
	for k := range card["properties"].(map[string]any) {
		props2 = append(props2, k)
	}
	if want := jsonFields(flashpipe.Card{}); !sameSet(props2, want) {
		t.Errorf("stage 2 card properties %v, want the Card fields %v", props2, want)
	}
	// A schema copy cannot change the next request.
	c := stages.Stage1Schema()
	c[0] = 'X'
	if stages.Stage1Schema()[0] != '{' {
		t.Error("Stage1Schema returns a shared slice")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestRequests(t *testing.T) {
	t.Parallel()
	r := stages.Stage1Request(stages.Config{}, item)
	if r.Model != stages.DefaultModel || r.MaxTokens != stages.DefaultMaxTokens1 || r.Temperature == nil || *r.Temperature != stages.DefaultTemperature {
		t.Errorf("Stage1Request(zero Config) = model %q, max %d, temp %v", r.Model, r.MaxTokens, r.Temperature)
	}
	if r.ResponseFormat != nil {
		t.Errorf("zero Config sends a response_format")
	}
	if len(r.Messages) != 2 || r.Messages[0].Role != "system" || r.Messages[1].Role != "user" {
		t.Errorf("messages = %+v", r.Messages)
	}
	cfg := stages.DefaultConfig()
	cfg.Model2 = "openai/gpt-5"
	cfg.Temperature = -1
	cfg.Provider = json.RawMessage(`{"require_parameters":true}`)
	r1 := stages.Stage1Request(cfg, item)
	if rf := r1.ResponseFormat; rf == nil || rf.Type != "json_schema" || rf.JSONSchema.Name != stages.Stage1SchemaName || !rf.JSONSchema.Strict ||
		string(rf.JSONSchema.Schema) != string(stages.Stage1Schema()) {
		t.Errorf("stage 1 response_format = %+v", rf)
	}
	if r1.Temperature != nil || string(r1.Provider) != `{"require_parameters":true}` {
		t.Errorf("stage 1 temperature %v provider %s", r1.Temperature, r1.Provider)
	}
	r2 := stages.Stage2Request(cfg, item, parsedAnalysis(t))
	if r2.Model != "openai/gpt-5" || r2.MaxTokens != stages.DefaultMaxTokens2 || r2.ResponseFormat.JSONSchema.Name != stages.Stage2SchemaName {
		t.Errorf("stage 2 request = model %q max %d format %+v", r2.Model, r2.MaxTokens, r2.ResponseFormat)
	}
	// Stage 2 without an analysis still reads as stage 2.
	in, err := stages.DecodeInput(stages.Stage2Request(cfg, item, nil).Messages[1].Content)
	if err != nil || in.Stage() != 2 {
		t.Errorf("stage 2 without analysis: %+v, %v", in, err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := stages.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	for name, cfg := range map[string]stages.Config{
		"temperature": {Temperature: 3},
		"provider":    {Provider: json.RawMessage(`{`)},
		"model":       {Model1: " m"},
		"prompt":      {Prompts: stages.Prompts{Stage1User: "{{.Nope"}},
	} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Config.") {
			t.Errorf("%s: Validate() = %v, want an error naming the field", name, err)
		}
	}
}

func TestLoadPrompts(t *testing.T) {
	t.Parallel()
	def, err := stages.LoadPrompts(filepath.Join(t.TempDir(), "missing"))
	if err != nil || def.Version1 != stages.Stage1PromptVersion || def.Version2 != stages.Stage2PromptVersion {
		t.Fatalf("LoadPrompts(missing dir) = %+v, %v", def, err)
	}
	dir := t.TempDir()
	custom := "Term {{.TermNumber}}: {{.Term}} ({{.Type}}). Be extra careful."
	if err := os.WriteFile(filepath.Join(dir, stages.Stage1UserFile), []byte(custom), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := stages.LoadPrompts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Version1, "s1-custom-") || len(p.Version1) != len("s1-custom-")+8 || p.Version2 != stages.Stage2PromptVersion {
		t.Errorf("versions %q %q", p.Version1, p.Version2)
	}
	cfg := stages.DefaultConfig()
	cfg.Prompts = p
	user := stages.Stage1Request(cfg, item).Messages[1].Content
	if !strings.HasPrefix(user, "Term 42: 남성 (noun). Be extra careful.\n\nInput:\n```json\n") {
		t.Errorf("custom user message = %q", user)
	}
	if stages.Stage1Key(cfg, item) == stages.Stage1Key(stages.DefaultConfig(), item) {
		t.Error("a custom prompt does not change the stage 1 cache key")
	}
	if stages.Stage2Key(cfg, item, nil) != stages.Stage2Key(stages.DefaultConfig(), item, nil) {
		t.Error("a custom stage 1 prompt changes the stage 2 cache key")
	}
	// Another custom text, another version.
	os.WriteFile(filepath.Join(dir, stages.Stage1UserFile), []byte(custom+"!"), 0o644)
	p2, _ := stages.LoadPrompts(dir)
	if p2.Version1 == p.Version1 {
		t.Error("two custom prompts share a version")
	}
	// A template that does not parse is an error.
	os.WriteFile(filepath.Join(dir, stages.Stage2SystemFile), []byte("{{if}}"), 0o644)
	if _, err := stages.LoadPrompts(dir); err == nil {
		t.Error("LoadPrompts accepted a broken template")
	}
	// An explicit version names a custom prompt; a default prompt keeps its own.
	named := p
	named.Version1 = "s1-mine-3"
	cfgNamed := stages.DefaultConfig()
	cfgNamed.Prompts = named
	if stages.Stage1Key(cfgNamed, item) == stages.Stage1Key(cfg, item) {
		t.Error("an explicit version of a custom prompt does not change the key")
	}
	relabelled := stages.DefaultPrompts()
	relabelled.Version1 = "s1-mine-3"
	if stages.Stage1Key(stages.Config{Prompts: relabelled}, item) != stages.Stage1Key(stages.DefaultConfig(), item) {
		t.Error("relabelling the default prompt changes its key")
	}
	// A hand-edited default keeps its hash-based version, not the default one.
	edited := stages.DefaultPrompts()
	edited.Stage2User += " Extra."
	if v := stages.Stage2Key(stages.Config{Prompts: edited}, item, nil); v == stages.Stage2Key(stages.Config{}, item, nil) {
		t.Error("an edited default prompt keeps the default cache key")
	}
}

func TestCacheKeys(t *testing.T) {
	t.Parallel()
	cfg := stages.DefaultConfig()
	k := stages.Stage1Key(cfg, item)
	if len(k) != 64 {
		t.Errorf("Stage1Key = %q, want 64 hex digits", k)
	}
	moved := item
	moved.Position = 7
	moved.Metadata = map[string]string{"TOPIK_Level": "1"}
	if stages.Stage1Key(cfg, moved) != k {
		t.Error("the position (or metadata) changes the stage 1 key")
	}
	alias := item
	alias.Type = "noun"
	if stages.Stage1Key(cfg, alias) != k {
		t.Error("type alias n and noun give different keys")
	}
	other := cfg
	other.Model1 = "openai/gpt-5"
	for name, k2 := range map[string]string{
		"model": stages.Stage1Key(other, item),
		"term":  stages.Stage1Key(cfg, flashpipe.Item{Position: 42, Term: "남자", Type: "noun"}),
		"type":  stages.Stage1Key(cfg, flashpipe.Item{Position: 42, Term: "남성", Type: "verb"}),
	} {
		if k2 == k {
			t.Errorf("changing the %s does not change the stage 1 key", name)
		}
	}
	if stages.Stage1Key(cfg, item) == stages.Stage2Key(cfg, item, nil) {
		t.Error("stage 1 and stage 2 keys collide")
	}

	a := parsedAnalysis(t)
	k2 := stages.Stage2Key(cfg, item, a)
	b := *a
	b.TermNumber = 7
	if stages.Stage2Key(cfg, moved, &b) != k2 {
		t.Error("the position (item or analysis term_number) changes the stage 2 key")
	}
	c := *a
	c.Homonyms = nil
	d := *a
	d.Homonyms = []flashpipe.Homonym{}
	if stages.Stage2Key(cfg, item, &c) != stages.Stage2Key(cfg, item, &d) {
		t.Error("null and empty homonyms give different stage 2 keys")
	}
	e := *a
	e.Metaphor = "something else"
	if stages.Stage2Key(cfg, item, &e) == k2 {
		t.Error("a different analysis gives the same stage 2 key")
	}
	other2 := cfg
	other2.Model2 = "openai/gpt-5"
	if stages.Stage2Key(other2, item, a) == k2 {
		t.Error("the stage 2 model does not change the stage 2 key")
	}
	if stages.Stage2Key(other, item, a) != k2 {
		t.Error("the stage 1 model changes the stage 2 key")
	}
}

func TestParseStage1(t *testing.T) {
	t.Parallel()
	raw := readTestdata(t, "stage1_answer.json")
	a := parsedAnalysis(t)
	if a.TermNumber != 42 || a.Term != "남성[nam.sʌŋ]" || a.POS != "noun" || a.Comparison.Vs != "남자" || len(a.Homonyms) != 2 || len(a.KoreanKeywords) != 6 {
		t.Errorf("ParseStage1 = %+v", a)
	}
	for name, content := range map[string]string{
		"fenced":          "```json\n" + raw + "\n```",
		"prose":           "Sure! Here is the analysis {as requested}:\n\n" + raw + "\n\nHope this helps {really}.",
		"fenced in prose": "Here you go:\n```json\n" + raw + "```\nDone.",
		"term_number off": strings.Replace(raw, `"term_number": 42`, `"term_number": "7"`, 1),
	} {
		got, err := stages.ParseStage1(content, item)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("%s: got %+v, want %+v", name, got, a)
		}
	}
}

func TestParseStage1Normalises(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("가나다라마", 100) // 500 Hangul runes, 1500 bytes
	answer := map[string]any{
		"term_number": 1, "term": "남성", "ipa": "/nam.sʌŋ/", "pos": "Noun-ish",
		"primary_meaning": long, "other_meanings": long + long, "metaphor": long, "metaphor_noun": " tag ",
		"metaphor_action": "sings", "suggested_location": "door", "anchor_object": "knob", "anchor_sensory": long,
		"explanation": long + long, "usage_context": nil, "comparison": nil, "homonyms": nil,
		"korean_keywords": []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", " ", "12"},
	}
	b, _ := json.Marshal(answer)
	a, err := stages.ParseStage1(string(b), item)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, s string, max int) {
		t.Helper()
		if n := utf8.RuneCountInString(s); n != max || !utf8.ValidString(s) {
			t.Errorf("%s has %d runes (valid %v), want %d", name, n, utf8.ValidString(s), max)
		}
	}
	check("primary_meaning", a.PrimaryMeaning, 200)
	check("other_meanings", *a.OtherMeanings, 500)
	check("metaphor", a.Metaphor, 300)
	check("anchor_sensory", a.AnchorSensory, 200)
	check("explanation", a.Explanation, 500)
	if a.POS != flashpipe.TypeUnknown || a.TermNumber != 42 || a.IPA != "nam.sʌŋ" || a.Term != "남성[nam.sʌŋ]" || a.MetaphorNoun != "tag" {
		t.Errorf("normalised fields: pos %q term_number %d ipa %q term %q noun %q", a.POS, a.TermNumber, a.IPA, a.Term, a.MetaphorNoun)
	}
	if a.Homonyms == nil || len(a.Homonyms) != 0 || a.UsageContext != nil || a.Comparison != nil {
		t.Errorf("nulls: homonyms %#v usage %v comparison %v", a.Homonyms, a.UsageContext, a.Comparison)
	}
	if len(a.KoreanKeywords) != 10 || a.KoreanKeywords[9] != "10" {
		t.Errorf("korean_keywords = %v, want the first 10", a.KoreanKeywords)
	}
	answer["homonyms"] = slices.Repeat([]map[string]string{{"hanja": "男", "reading": "남", "meaning": "m", "differentiator": "d"}}, 8)
	answer["pos"] = "adj"
	answer["term"] = "남성 [nam.sʌŋ]"
	b, _ = json.Marshal(answer)
	a, err = stages.ParseStage1(string(b), item)
	if err != nil || len(a.Homonyms) != 5 || a.POS != "adjective" || a.Term != "남성 [nam.sʌŋ]" {
		t.Errorf("homonyms %d pos %q term %q err %v", len(a.Homonyms), a.POS, a.Term, err)
	}
	// A term for another word is replaced by the item's.
	answer["term"] = "남자[nam.dʑa]"
	b, _ = json.Marshal(answer)
	if a, _ = stages.ParseStage1(string(b), item); a.Term != "남성[nam.sʌŋ]" {
		t.Errorf("term = %q, want the item's term with the IPA", a.Term)
	}
}

func TestParseStage1Invalid(t *testing.T) {
	t.Parallel()
	raw := readTestdata(t, "stage1_answer.json")
	var m map[string]any
	json.Unmarshal([]byte(raw), &m)
	without := func(field string) string {
		c := make(map[string]any, len(m))
		for k, v := range m {
			if k != field {
				c[k] = v
			}
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	with := func(field string, v any) string {
		c := make(map[string]any, len(m))
		for k, vv := range m {
			c[k] = vv
		}
		c[field] = v
		b, _ := json.Marshal(c)
		return string(b)
	}
	for _, tc := range []struct{ name, content, field string }{
		{"empty", "", ""},
		{"prose only", "I cannot help with that.", ""},
		{"truncated", raw[:len(raw)/2], ""},
		{"missing primary_meaning", without("primary_meaning"), "primary_meaning"},
		{"missing metaphor", without("metaphor"), "metaphor"},
		{"missing korean_keywords", without("korean_keywords"), "korean_keywords"},
		{"null term", with("term", nil), "term"},
		{"blank explanation", with("explanation", "  "), "explanation"},
		{"number as ipa", with("ipa", 5), "ipa"},
		{"keywords as string", with("korean_keywords", "a, b"), "korean_keywords"},
		{"homonyms as object", with("homonyms", map[string]any{"hanja": "x"}), "homonyms"},
	} {
		_, err := stages.ParseStage1(tc.content, item)
		if !errors.Is(err, stages.ErrInvalidAnswer) || flashpipe.ClassOf(err) != flashpipe.Transient {
			t.Errorf("%s: err = %v, want a transient ErrInvalidAnswer", tc.name, err)
			continue
		}
		var ie *stages.InvalidAnswerError
		if !errors.As(err, &ie) || ie.Stage != "stage1" || (tc.field != "" && ie.Field != tc.field) {
			t.Errorf("%s: err = %#v, want field %q", tc.name, ie, tc.field)
		}
		if tc.field != "" && !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %q does not name the field", tc.name, err)
		}
	}
}

func TestParseStage2(t *testing.T) {
	t.Parallel()
	raw := readTestdata(t, "stage2_answer.json")
	a := parsedAnalysis(t)
	cards, err := stages.ParseStage2(raw, item, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(cards) != 3 || cards[0].TabName != "Scene" || cards[1].TabName != "Usage-Comparison" || cards[2].TabName != "Hanja" {
		t.Fatalf("cards = %+v", cards)
	}
	for _, c := range cards {
		if c.Primer != stages.Primer("noun", 42, "남성", c.TabName) {
			t.Errorf("primer %q", c.Primer)
		}
		if !strings.HasPrefix(c.Tags, "term:남성,pos:noun,card:") || strings.Count(","+c.Tags, ",term:") != 1 {
			t.Errorf("tags %q", c.Tags)
		}
		if n := len(strings.Fields(c.Front)); n < 15 || n > 30 {
			t.Errorf("%s front has %d words", c.TabName, n)
		}
		if n := len(strings.Fields(c.Back)); n < 80 || n > 150 {
			t.Errorf("%s back has %d words", c.TabName, n)
		}
	}
	if cards[1].HonorificLevel != "formal" || cards[2].HonorificLevel != "" {
		t.Errorf("honorific levels %q %q", cards[1].HonorificLevel, cards[2].HonorificLevel)
	}
	// Same cards through fences, prose, or as a bare array.
	var obj struct {
		Cards json.RawMessage `json:"cards"`
	}
	json.Unmarshal([]byte(raw), &obj)
	for name, content := range map[string]string{
		"fenced":     "```json\n" + raw + "\n```",
		"prose":      "Here are your {three} cards:\n" + raw + "\nEnjoy!",
		"bare array": string(obj.Cards),
	} {
		got, err := stages.ParseStage2(content, item, a)
		if err != nil || !reflect.DeepEqual(got, cards) {
			t.Errorf("%s: %v\n got %+v\nwant %+v", name, err, got, cards)
		}
	}
	// A cached answer parsed for another position gets that position's primers.
	moved := item
	moved.Position = 7
	got, _ := stages.ParseStage2(raw, moved, a)
	if !strings.Contains(got[0].Primer, "room 7,") {
		t.Errorf("primer %q for position 7", got[0].Primer)
	}
}

func TestParseStage2Normalises(t *testing.T) {
	t.Parallel()
	content := `{"cards":[{"tab_name":"usage comparison","primer":"","front":" f ","back":"b","tags":"card:usage, concept:a b ,, term:wrong,POS:verb,card:usage","honorific_level":"Polite"},
	{"tab_name":"FORMAL_CASUAL","front":"f","back":"b","honorific_level":" Casual "},{"tab_name":"cultural","front":"f","back":"b","tags":null}]}`
	cards, err := stages.ParseStage2(content, flashpipe.Item{Position: 3, Term: "먹다 보다", Type: "verb"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cards[0].TabName != "Usage-Comparison" || cards[1].TabName != "Formal-Casual" || cards[2].TabName != "Cultural" {
		t.Errorf("tabs %q %q %q", cards[0].TabName, cards[1].TabName, cards[2].TabName)
	}
	if cards[0].Tags != "term:먹다_보다,pos:verb,card:usage,concept:a_b" {
		t.Errorf("tags = %q", cards[0].Tags)
	}
	if cards[2].Tags != "term:먹다_보다,pos:verb" {
		t.Errorf("tags = %q", cards[2].Tags)
	}
	if cards[0].HonorificLevel != "" || cards[1].HonorificLevel != "casual" || cards[0].Front != "f" {
		t.Errorf("honorific %q %q front %q", cards[0].HonorificLevel, cards[1].HonorificLevel, cards[0].Front)
	}
	if !strings.Contains(cards[0].Primer, "VERB hall to room 3,") {
		t.Errorf("primer %q", cards[0].Primer)
	}
	many := `{"cards":[` + strings.Repeat(`{"tab_name":"Example","front":"f","back":"b"},`, 14) + `{"tab_name":"Example","front":"f","back":"b"}]}`
	if cards, err := stages.ParseStage2(many, item, nil); err != nil || len(cards) != stages.MaxCards {
		t.Errorf("15 cards: %d, %v", len(cards), err)
	}
	if cards, err := stages.ParseStage2(`{"tab_name":"Scene","front":"f","back":"b"}`, item, nil); err != nil || len(cards) != 1 {
		t.Errorf("a lone card: %v, %v", cards, err)
	}
}

func TestParseStage2Invalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, content, field string }{
		{"empty", "", ""},
		{"no cards", `{"cards":[]}`, "cards"},
		{"null cards", `{"cards":null}`, ""},
		{"other object", `{"answer":"x"}`, ""},
		{"unknown tab", `{"cards":[{"tab_name":"Trivia","front":"f","back":"b"}]}`, "cards[0].tab_name"},
		{"missing tab", `{"cards":[{"front":"f","back":"b"}]}`, "cards[0].tab_name"},
		{"missing front", `{"cards":[{"tab_name":"Scene","front":"f","back":"b"},{"tab_name":"Hanja","back":"b"}]}`, "cards[1].front"},
		{"empty back", `{"cards":[{"tab_name":"Scene","front":"f","back":" "}]}`, "cards[0].back"},
		{"front as number", `{"cards":[{"tab_name":"Scene","front":1,"back":"b"}]}`, ""},
	} {
		_, err := stages.ParseStage2(tc.content, item, nil)
		if !errors.Is(err, stages.ErrInvalidAnswer) || flashpipe.ClassOf(err) != flashpipe.Transient {
			t.Errorf("%s: err = %v, want a transient ErrInvalidAnswer", tc.name, err)
			continue
		}
		var ie *stages.InvalidAnswerError
		if errors.As(err, &ie) && tc.field != "" && ie.Field != tc.field {
			t.Errorf("%s: field %q, want %q (%v)", tc.name, ie.Field, tc.field, err)
		}
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"가나다라", 2, "가나"}, {"가나다라", 4, "가나다라"}, {"ab  cd", 3, "ab"}, {"", 0, ""},
	} {
		if got := stages.Truncate(tc.s, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestCustomTemplateFallsBack(t *testing.T) {
	t.Parallel()
	// Renders on the sample data Compile checks, fails for an item without comparison.
	p, err := stages.Prompts{Stage2User: "Compare with {{.Analysis.Comparison.Vs}}."}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := stages.DefaultConfig()
	cfg.Prompts = p
	a := parsedAnalysis(t)
	a.Comparison = nil
	user := stages.Stage2Request(cfg, item, a).Messages[1].Content
	if !strings.HasPrefix(user, "Write the flashcards for term number 42") {
		t.Errorf("a failing custom template did not fall back to the default: %q", user)
	}
	if _, err := stages.DecodeInput(user); err != nil {
		t.Errorf("fallback message has no input block: %v", err)
	}
}
