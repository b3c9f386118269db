package docs_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// goTypes maps every Go type that travels in a message body to the schema that
// describes it. extra lists properties only the wire form has.
var goTypes = []struct {
	v      any
	schema string
	extra  []string
}{
	{flashpipe.Manifest{}, "manifest.schema.json", []string{"seq_bitmap"}},
	{flashpipe.WorkItem{}, "item.schema.json", nil},
	{flashpipe.Result{}, "result.schema.json", nil},
	{flashpipe.Usage{}, "result.schema.json#/$defs/usage", nil},
	{flashpipe.Failure{}, "result.schema.json#/$defs/failure", nil},
	{flashpipe.Analysis{}, "result.schema.json#/$defs/analysis", nil},
	{flashpipe.Comparison{}, "result.schema.json#/$defs/comparison", nil},
	{flashpipe.Homonym{}, "result.schema.json#/$defs/homonym", nil},
	{flashpipe.Card{}, "result.schema.json#/$defs/card", nil},
	{flashpipe.Event{}, "event.schema.json", nil},
	{flashpipe.Completion{}, "event.schema.json#/$defs/completion", nil},
}

// A field added to a Go type that travels on the wire fails this test until the
// schema describes it, and a property the schema describes that Go no longer writes
// fails it too: the two cannot drift apart.
func TestSchemasDescribeEveryGoField(t *testing.T) {
	t.Parallel()
	for _, gt := range goTypes {
		typ := reflect.TypeOf(gt.v)
		goNames := append(jsonFields(typ), gt.extra...)
		slices.Sort(goNames)
		schemaNames := schemaProperties(t, gt.schema)
		for _, n := range goNames {
			if !slices.Contains(schemaNames, n) {
				t.Errorf("%s has field %q that %s does not describe: add it to the schema and to docs/contract.md (v1 only adds fields)", typ, n, gt.schema)
			}
		}
		for _, n := range schemaNames {
			if !slices.Contains(goNames, n) {
				t.Errorf("%s describes %q, which %s does not have: v1 never removes a field; restore it in Go", gt.schema, n, typ)
			}
		}
	}
}

// Every struct type reachable from the message bodies has its schema in goTypes, so a
// new nested type cannot travel undescribed.
func TestEveryGoTypeOnTheWireHasASchema(t *testing.T) {
	t.Parallel()
	known := map[reflect.Type]bool{}
	for _, gt := range goTypes {
		known[reflect.TypeOf(gt.v)] = true
	}
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, embedded bool)
	walk = func(typ reflect.Type, embedded bool) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeOf(time.Time{}) || seen[typ] {
			return
		}
		seen[typ] = true
		if !embedded && !known[typ] {
			t.Errorf("%s travels in a message body but has no schema in goTypes (and none in %s)", typ, schemaDir)
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.IsExported() {
				walk(f.Type, f.Anonymous)
			}
		}
	}
	walk(reflect.TypeOf(flashpipe.Event{}), false)
	walk(reflect.TypeOf(flashpipe.WorkItem{}), false)
}

// sample is a message as the Go code encodes it, with the Nats-Msg-Id the services
// publish it with.
type sample struct {
	name                 string
	msg                  *nats.Msg
	bodySchema, hdSchema string // hdSchema: a headers.schema.json definition or refusal.schema.json
}

func ptr[T any](v T) *T { return &v }

// samples encodes one message of every kind, with every optional field set somewhere.
func samples(t *testing.T) []sample {
	t.Helper()
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	items := []flashpipe.Item{
		{Position: 10, Term: "사과", Type: "noun", Metadata: map[string]string{"level": "1", "hanja": "沙果"}},
		{Position: 20, Term: "먹다", Type: "verb"},
		{Position: 35, Term: "R&D <lab>", Type: "unknown"},
	}
	m0 := flashpipe.Manifest{BatchID: "week-12", Count: len(items), Source: "crm", ContentHash: flashpipe.HashItems(items),
		Tenant: "js-team", Priority: 2, Settings: map[string]string{"note": "spring list"}, CreatedAt: at}
	retry := m0
	retry.Generation, retry.Seqs = 1, []int{2}
	long := flashpipe.Manifest{BatchID: "big", Generation: 2, Count: 1000, Source: "nats", ContentHash: "abc", CreatedAt: at}
	for s := 1; s <= 1000; s += 7 {
		long.Seqs = append(long.Seqs, s)
	}
	replacement := m0
	replacement.Generation, replacement.Base = 3, 3
	full := flashpipe.Analysis{TermNumber: 10, Term: "사과[sa.gwa]", IPA: "sa.ɡwa", POS: "noun", PrimaryMeaning: "apple",
		OtherMeanings: ptr("apology (謝過)"), Metaphor: "A red apple bows to you", MetaphorNoun: "apple", MetaphorAction: "bows",
		SuggestedLocation: "kitchen", AnchorObject: "fruit bowl", AnchorSensory: "crisp sound", Explanation: "the bow is the apology",
		UsageContext: ptr("everyday"), Comparison: &flashpipe.Comparison{Vs: "배", Nuance: "a pear, not an apple"},
		Homonyms:       []flashpipe.Homonym{{Hanja: "謝過", Reading: "사과", Meaning: "apology", Differentiator: "a verb with 하다"}},
		KoreanKeywords: []string{"과일", "빨간"}}
	bare := flashpipe.Analysis{TermNumber: 20, Term: "먹다[mʌk.ta]", POS: "verb", PrimaryMeaning: "to eat"}
	cards := []flashpipe.Card{
		{TabName: "Scene", Primer: "NOUN 10 사과", Front: "front", Back: "back", Tags: "term:사과,pos:noun,card:scene", HonorificLevel: "neutral"},
		{TabName: "Hanja", Primer: "NOUN 10 사과", Front: "front", Back: "back", Tags: "term:사과,pos:noun,hanja"},
	}
	usage := flashpipe.Usage{Stage1Calls: 1, Stage2Calls: 1, CacheMisses: 2, PromptTokens: 900, CompletionTokens: 700, Cost: 0.0132}
	wi := flashpipe.WorkItem{BatchID: m0.BatchID, Seq: 1, Item: items[0]}
	ok := &flashpipe.Result{BatchID: m0.BatchID, Seq: 1, Item: items[0], Status: flashpipe.StatusOK, Analysis: &full, Cards: cards,
		Attempts: 1, Usage: usage, ProcessedAt: at}
	okBare := &flashpipe.Result{BatchID: m0.BatchID, Seq: 2, Item: items[1], Status: flashpipe.StatusOK, Analysis: &bare,
		Cards: cards[:1], Attempts: 2, Usage: flashpipe.Usage{CacheHits: 2}, ProcessedAt: at}
	failed := &flashpipe.Result{BatchID: m0.BatchID, Seq: 3, Item: items[2], Status: flashpipe.StatusFailed, Attempts: 10,
		Failure:     &flashpipe.Failure{Stage: "stage2", Reason: "HTTP 503", Class: flashpipe.Transient, NextStep: flashpipe.NextRetry},
		ProcessedAt: at}
	inPlace := &flashpipe.Result{BatchID: m0.BatchID, Seq: 2, Generation: 1, Item: flashpipe.Item{Position: -2}, Status: flashpipe.StatusFailed,
		Failure:     &flashpipe.Failure{Stage: "input", Reason: "item never published", Class: flashpipe.Permanent, NextStep: flashpipe.NextFixInput},
		ProcessedAt: at}
	done := &flashpipe.Completion{BatchID: m0.BatchID, Generation: 0, Emitted: 3, CompletedAt: at}

	var out []sample
	must := func(m *nats.Msg, err error) *nats.Msg {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	withID := func(m *nats.Msg, id string) *nats.Msg {
		m.Header.Set(nats.MsgIdHdr, id)
		return m
	}
	for _, m := range []flashpipe.Manifest{m0, retry, long, replacement} {
		out = append(out, sample{fmt.Sprintf("manifest generation %d", m.Generation),
			withID(must(c.ManifestMsg(m)), contract.ManifestMsgID(m.BatchID, m.Generation)), "manifest.schema.json", "headers.schema.json#/$defs/manifest"})
	}
	itemMsg := withID(must(c.ItemMsg(wi)), contract.ItemMsgID(wi.BatchID, wi.Seq, wi.Generation))
	out = append(out, sample{"item", itemMsg, "item.schema.json", "headers.schema.json#/$defs/item"})
	for _, r := range []*flashpipe.Result{ok, okBare, failed, inPlace} {
		rm := withID(must(c.ResultMsg(r)), contract.MsgID(r.BatchID, r.Position, r.Generation))
		out = append(out, sample{fmt.Sprintf("result seq %d %s", r.Seq, r.Status), rm, "result.schema.json", "headers.schema.json#/$defs/result"})
		// As the sequencer appends it: the result's bytes inside an event, its keys as headers.
		k, err := contract.KeysOf(rm.Header)
		if err != nil {
			t.Fatal(err)
		}
		ev := withID(c.ResultEventMsg(k, rm.Data), contract.MsgID(r.BatchID, r.Position, r.Generation))
		out = append(out, sample{fmt.Sprintf("result event seq %d %s", r.Seq, r.Status), ev, "event.schema.json", "headers.schema.json#/$defs/result"})
	}
	for _, ev := range []flashpipe.Event{
		{Kind: flashpipe.EventManifest, Manifest: &m0},
		{Kind: flashpipe.EventManifest, Manifest: &long},
		{Kind: flashpipe.EventResult, Result: ok},
		{Kind: flashpipe.EventComplete, Completion: done},
	} {
		def := map[flashpipe.EventKind]string{flashpipe.EventManifest: "manifest_event", flashpipe.EventResult: "result",
			flashpipe.EventComplete: "complete_event"}[ev.Kind]
		out = append(out, sample{string(ev.Kind) + " event", withID(must(c.EventMsg(ev)), contract.EventMsgID(ev)),
			"event.schema.json", "headers.schema.json#/$defs/" + def})
	}
	refused := c.RefusedMsg(contract.Refusal{BatchID: wi.BatchID, Subject: c.ItemSubject(wi.BatchID, 4), Header: itemMsg.Header,
		Data: itemMsg.Data, Reason: "not_in_manifest: item refused: seq 4 is not in generation 0 of batch week-12 (count 3)",
		By: "scheduler", ID: c.ItemsStream() + ":4"})
	out = append(out, sample{"refusal", refused, "", "refusal.schema.json"})
	return out
}

// Every kind of message, as the Go code encodes it, is valid against its schema, and
// against the strict schemas (no field the schemas do not know), headers included.
func TestGoMessagesAreValid(t *testing.T) {
	t.Parallel()
	for _, s := range samples(t) {
		if s.bodySchema != "" {
			if err := schemas(t).validate(t, s.bodySchema, s.msg.Data); err != nil {
				t.Errorf("%s: body not valid against %s: %v\n%s", s.name, s.bodySchema, err, s.msg.Data)
			}
			if err := strictSchemas(t).validate(t, s.bodySchema, s.msg.Data); err != nil {
				t.Errorf("%s: body has a property %s does not describe: %v\n%s", s.name, s.bodySchema, err, s.msg.Data)
			}
		}
		if err := schemas(t).validateHeaders(t, s.hdSchema, s.msg.Header); err != nil {
			t.Errorf("%s: headers not valid against %s: %v\n%v", s.name, s.hdSchema, err, s.msg.Header)
		}
	}
}

// The seq bitmap is decoded by the rule contract.md states (independently of the Go
// decoder), and long seq lists travel as one.
func TestSeqBitmapAsDocumented(t *testing.T) {
	t.Parallel()
	m := flashpipe.Manifest{BatchID: "b", Generation: 1, Count: 1000, Source: "x", ContentHash: "h"}
	for s := 3; s <= 1000; s += 5 {
		m.Seqs = append(m.Seqs, s)
	}
	m.Seqs = append(m.Seqs, 1000)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct {
		Count     int     `json:"count"`
		Seqs      []int   `json:"seqs"`
		SeqBitmap *string `json:"seq_bitmap"`
	}
	if err := json.Unmarshal(data, &wire); err != nil {
		t.Fatal(err)
	}
	if wire.SeqBitmap == nil || wire.Seqs != nil {
		t.Fatalf("a retry of %d seqs travels as seqs, not seq_bitmap: %s", len(m.Seqs), data)
	}
	bits, err := base64.StdEncoding.DecodeString(*wire.SeqBitmap)
	if err != nil {
		t.Fatalf("seq_bitmap is not standard base64: %v", err)
	}
	if len(bits) != wire.Count/8+1 {
		t.Errorf("seq_bitmap has %d bytes, want floor(count/8)+1 = %d", len(bits), wire.Count/8+1)
	}
	var got []int
	for s := 1; s <= wire.Count; s++ {
		if bits[s/8]&(1<<(s%8)) != 0 {
			got = append(got, s)
		}
	}
	if !slices.Equal(got, m.Seqs) {
		t.Errorf("seq_bitmap decoded by the documented rule gives %v, want %v", got, m.Seqs)
	}
	short := m
	short.Seqs = m.Seqs[:64]
	if data, _ := json.Marshal(short); !strings.Contains(string(data), `"seqs":[`) {
		t.Errorf("64 seqs travel as a list: %s", data)
	}
}

// mutation is a valid document with one thing broken.
type mutation struct {
	why   string
	path  string // dot-separated keys; the last is set to value, or deleted when value is del
	value any
}

var del = struct{}{}

// Wrongly typed or shaped messages are refused by the schemas, each for the one
// thing broken in an otherwise valid document.
func TestSchemasRefuseWrongMessages(t *testing.T) {
	t.Parallel()
	const (
		manifest = `{"batch_id":"week-12","generation":0,"count":3,"source":"crm","content_hash":"ab12","tenant":"js-team","priority":1,"created_at":"2026-03-01T12:00:00Z"}`
		item     = `{"batch_id":"week-12","seq":1,"generation":0,"position":10,"term":"사과","type":"noun","metadata":{"level":"1"}}`
		result   = `{"batch_id":"week-12","seq":3,"generation":0,"position":35,"term":"물","type":"noun","status":"failed","failure":{"stage":"stage1","reason":"HTTP 400","class":"permanent","next_step":"fix the input"},"attempts":1,"usage":{"stage1_calls":1,"stage2_calls":0,"cache_hits":0,"cache_misses":1,"prompt_tokens":0,"completion_tokens":0,"cost":0},"processed_at":"2026-03-01T12:00:01Z"}`
		complete = `{"kind":"complete","completion":{"batch_id":"week-12","generation":0,"emitted":3,"completed_at":"2026-03-01T12:00:02Z"}}`
		itemHd   = `{"Flashpipe-Batch":"week-12","Flashpipe-Seq":"1","Flashpipe-Position":"10","Flashpipe-Generation":"0","Nats-Msg-Id":"week-12:item:1:0"}`
		refusal  = `{"Flashpipe-Refused-Reason":"no_manifest: item refused: batch x has no manifest of generation 0","Flashpipe-Refused-Subject":"flashpipe.items.x.1","Flashpipe-Refused-By":"scheduler"}`
	)
	cases := []struct {
		schema, doc string
		muts        []mutation
	}{
		{"manifest.schema.json", manifest, []mutation{
			{"count is a string", "count", "3"},
			{"count is zero", "count", 0},
			{"count above the limit", "count", 10_000_001},
			{"batch id with a space", "batch_id", "week 12"},
			{"batch id longer than 64", "batch_id", strings.Repeat("a", 65)},
			{"negative generation", "generation", -1},
			{"generation is fractional", "generation", 1.5},
			{"no content hash", "content_hash", del},
			{"no created_at", "created_at", del},
			{"created_at is not a date-time", "created_at", "yesterday"},
			{"seqs hold a string", "seqs", []any{"1"}},
			{"a setting that is a number", "settings", map[string]any{"max": 3}},
			{"priority is a string", "priority", "high"},
			{"priority above 1000", "priority", 1001},
			{"priority below -1000", "priority", -1001},
			{"tenant with a space", "tenant", "js team"},
			{"tenant starting with '-'", "tenant", "-js"},
			{"tenant longer than 64", "tenant", strings.Repeat("t", 65)},
		}},
		{"manifest.schema.json", strings.Replace(manifest, `"generation":0`, `"generation":1,"seq_bitmap":"BA=="`, 1), []mutation{
			{"seqs and seq_bitmap both", "seqs", []int{2}},
			{"seq_bitmap not base64", "seq_bitmap", "seq 2"},
		}},
		{"item.schema.json", item, []mutation{
			{"seq zero", "seq", 0},
			{"position as a string", "position", "10"},
			{"position zero", "position", 0},
			{"no term", "term", del},
			{"empty term", "term", ""},
			{"term is a number", "term", 7},
			{"a metadata value that is a number", "metadata", map[string]any{"level": 1}},
			{"no batch id", "batch_id", del},
		}},
		{"result.schema.json", result, []mutation{
			{"unknown status", "status", "done"},
			{"failed without a failure", "failure", del},
			{"failure class unknown", "failure.class", "fatal"},
			{"cost as a string", "usage.cost", "0.1"},
			{"negative token count", "usage.prompt_tokens", -5},
			{"usage without a field", "usage.cache_hits", del},
			{"cards as an object", "cards", map[string]any{"front": "x"}},
			{"ok without an analysis", "status", "ok"},
			{"attempts missing", "attempts", del},
		}},
		{"event.schema.json", complete, []mutation{
			{"unknown kind", "kind", "progress"},
			{"kind result without a result", "kind", "result"},
			{"two payloads", "manifest", json.RawMessage(manifest)},
			{"completion without emitted", "completion.emitted", del},
			{"completion of a bad batch id", "completion.batch_id", "a.b"},
		}},
		{"event.schema.json", `{"kind":"manifest","manifest":` + manifest + `}`, []mutation{
			{"a manifest event whose manifest has a string count", "manifest.count", "3"},
		}},
		{"event.schema.json", `{"kind":"result","result":` + result + `}`, []mutation{
			{"a result event whose result has no usage", "result.usage", del},
		}},
		{"headers.schema.json#/$defs/item", itemHd, []mutation{
			{"seq header not a number", "Flashpipe-Seq", "one"},
			{"generation header negative", "Flashpipe-Generation", "-1"},
			{"no Nats-Msg-Id", "Nats-Msg-Id", del},
			{"Nats-Msg-Id not batch:position:generation", "Nats-Msg-Id", "week-12-10"},
			{"no batch header", "Flashpipe-Batch", del},
			{"position header zero", "Flashpipe-Position", "0"},
		}},
		{"refusal.schema.json", refusal, []mutation{
			{"no reason", "Flashpipe-Refused-Reason", del},
			{"a reason without a code", "Flashpipe-Refused-Reason", "bad item"},
			{"no subject", "Flashpipe-Refused-Subject", del},
		}},
	}
	for _, tc := range cases {
		if err := schemas(t).validate(t, tc.schema, []byte(tc.doc)); err != nil {
			t.Fatalf("the valid %s document is refused: %v", tc.schema, err)
		}
		for _, m := range tc.muts {
			doc := mutate(t, tc.doc, m)
			if err := schemas(t).validate(t, tc.schema, doc); err == nil {
				t.Errorf("%s: %s is accepted: %s", tc.schema, m.why, doc)
			}
		}
	}
}

func mutate(t *testing.T, doc string, m mutation) []byte {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal([]byte(doc), &root); err != nil {
		t.Fatal(err)
	}
	keys := strings.Split(m.path, ".")
	node := root
	for _, k := range keys[:len(keys)-1] {
		next, ok := node[k].(map[string]any)
		if !ok {
			t.Fatalf("%s: no object at %q", m.why, k)
		}
		node = next
	}
	last := keys[len(keys)-1]
	if m.value == del {
		delete(node, last)
	} else {
		node[last] = m.value
	}
	out, err := json.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// contractDoc is docs/contract.md.
func contractDoc(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("contract.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// exampleRE finds the examples of contract.md that name their schema: a comment
// <!-- schema: REF --> right before a fenced block, JSON or header lines.
var exampleRE = regexp.MustCompile("(?s)<!-- schema: (\\S+) -->\\s*```(json|text)\\n(.*?)```")

// Every example in contract.md that names its schema is valid against it.
func TestContractExamplesAreValid(t *testing.T) {
	t.Parallel()
	doc := contractDoc(t)
	found := map[string]int{}
	for _, m := range exampleRE.FindAllStringSubmatch(doc, -1) {
		ref, lang, body := m[1], m[2], m[3]
		file, _, _ := strings.Cut(ref, "#")
		found[file]++
		data := []byte(body)
		if lang == "text" { // header lines, "Name: value"
			obj := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
				name, value, ok := strings.Cut(line, ": ")
				if !ok {
					t.Fatalf("example for %s: %q is not a header line", ref, line)
				}
				obj[name] = value
			}
			data, _ = json.Marshal(obj)
		}
		if err := schemas(t).validate(t, ref, data); err != nil {
			t.Errorf("the example of contract.md for %s is not valid: %v\n%s", ref, err, body)
		}
	}
	for _, f := range []string{"manifest.schema.json", "item.schema.json", "result.schema.json", "event.schema.json",
		"headers.schema.json", "refusal.schema.json"} {
		if found[f] == 0 {
			t.Errorf("contract.md has no example checked against %s (<!-- schema: %s --> before a fenced block)", f, f)
		}
	}
}

// contract.md names every stream, subject, header and refusal code of the Go code, and
// links every schema file.
func TestContractNamesEverything(t *testing.T) {
	t.Parallel()
	doc := contractDoc(t)
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, sc := range c.StreamConfigs() {
		want = append(want, "<PREFIX>"+strings.TrimPrefix(sc.Name, "FLASHPIPE"))
		for _, subj := range sc.Subjects {
			kind := strings.Split(subj, ".")[1]
			want = append(want, "<prefix>."+kind+".<batch>")
		}
	}
	want = append(want, "<PREFIX>"+strings.TrimPrefix(c.RegistryBucket(), "FLASHPIPE"),
		contract.HeaderBatch, contract.HeaderSeq, contract.HeaderPosition, contract.HeaderGeneration, contract.HeaderKind,
		contract.HeaderStatus, contract.HeaderRefusedReason, contract.HeaderRefusedSubject, contract.HeaderRefusedBy, nats.MsgIdHdr)
	want = append(want, refusalCodes(t)...)
	for _, f := range schemaFiles(t) {
		want = append(want, "schemas/v1/"+strings.TrimPrefix(f, schemaDir+"/"))
	}
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("contract.md does not mention %q", w)
		}
	}
}

// refusalCodes reads the refusal codes declared in internal/refusal, so that a new
// code cannot go undocumented.
func refusalCodes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../internal/refusal/refusal.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			for _, v := range spec.(*ast.ValueSpec).Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					codes = append(codes, s)
				}
			}
		}
	}
	if len(codes) < 5 {
		t.Fatalf("found only %v in internal/refusal", codes)
	}
	return codes
}
