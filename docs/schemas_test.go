package docs_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaDir holds the published schemas of the wire contract, version 1.
const schemaDir = "schemas/v1"

// schemaSet compiles the contract's schemas, as published or strict: in the strict
// set every object schema with properties admits no other property, so that a field
// the Go code writes and the schemas do not describe fails validation. The published
// set admits other properties (a v1 consumer must ignore the fields it does not know).
type schemaSet struct {
	c      *jsonschema.Compiler
	base   string // file URL of schemaDir, ending in '/'
	mu     sync.Mutex
	cached map[string]*jsonschema.Schema
}

var (
	publishedOnce, strictOnce sync.Once
	published, strict         *schemaSet
)

// schemas returns the published schema set; strictSchemas the strict one.
func schemas(t *testing.T) *schemaSet {
	t.Helper()
	publishedOnce.Do(func() { published = newSchemaSet(t, false) })
	return published
}

func strictSchemas(t *testing.T) *schemaSet {
	t.Helper()
	strictOnce.Do(func() { strict = newSchemaSet(t, true) })
	return strict
}

func newSchemaSet(t *testing.T, closed bool) *schemaSet {
	t.Helper()
	dir, err := filepath.Abs(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	base := "file://" + filepath.ToSlash(dir) + "/"
	if closed {
		for _, f := range schemaFiles(t) {
			doc := readJSON(t, f)
			closeObjects(doc)
			if err := c.AddResource(base+filepath.Base(f), doc); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &schemaSet{c: c, base: base, cached: map[string]*jsonschema.Schema{}}
}

// schemaFiles lists the schema files.
func schemaFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schema files in %s: %v", schemaDir, err)
	}
	return files
}

// readJSON reads a JSON file as the validator's instance (numbers as json.Number).
func readJSON(t *testing.T, path string) any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// closeObjects sets additionalProperties false on every object schema that lists
// properties and says nothing of others.
func closeObjects(v any) {
	switch v := v.(type) {
	case map[string]any:
		_, props := v["properties"]
		_, extra := v["additionalProperties"]
		if v["type"] == "object" && props && !extra {
			v["additionalProperties"] = false
		}
		for _, x := range v {
			closeObjects(x)
		}
	case []any:
		for _, x := range v {
			closeObjects(x)
		}
	}
}

// schema compiles ref: a file of schemaDir, optionally with a JSON pointer
// ("result.schema.json#/$defs/usage").
func (s *schemaSet) schema(t *testing.T, ref string) *jsonschema.Schema {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.cached[ref]; ok {
		return sch
	}
	sch, err := s.c.Compile(s.base + ref)
	if err != nil {
		t.Fatalf("compile %s: %v", ref, err)
	}
	s.cached[ref] = sch
	return sch
}

// validate reports whether the JSON document data is valid against ref.
func (s *schemaSet) validate(t *testing.T, ref string, data []byte) error {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.schema(t, ref).Validate(inst)
}

// validateHeaders reports whether h, as an object of name to first value, is valid
// against ref.
func (s *schemaSet) validateHeaders(t *testing.T, ref string, h nats.Header) error {
	t.Helper()
	return s.schema(t, ref).Validate(headerObject(h))
}

func headerObject(h nats.Header) map[string]any {
	obj := make(map[string]any, len(h))
	for k, v := range h {
		if len(v) > 0 {
			obj[k] = v[0]
		}
	}
	return obj
}

// schemaProperties returns the property names an object schema lists: ref is a file
// of schemaDir, optionally with a pointer into it.
func schemaProperties(t *testing.T, ref string) []string {
	t.Helper()
	file, pointer, _ := strings.Cut(ref, "#")
	data, err := os.ReadFile(filepath.Join(schemaDir, file))
	if err != nil {
		t.Fatal(err)
	}
	var node any
	if err := json.Unmarshal(data, &node); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, key := range strings.Split(strings.Trim(pointer, "/"), "/") {
		if key == "" {
			continue
		}
		m, ok := node.(map[string]any)
		if !ok || m[key] == nil {
			t.Fatalf("%s: no %q", ref, key)
		}
		node = m[key]
	}
	props, ok := node.(map[string]any)["properties"].(map[string]any)
	if !ok {
		t.Fatalf("%s lists no properties", ref)
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// jsonFields returns the JSON names of a struct type's fields, embedded structs
// flattened, as encoding/json writes them.
func jsonFields(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			names = append(names, jsonFields(f.Type)...)
			continue
		case name == "":
			name = f.Name
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
