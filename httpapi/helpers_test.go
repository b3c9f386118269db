package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Tokens of the tests: an unrestricted one and one of tenant "acme".
const (
	adminToken = "admin-token-0123456789abcdef"
	acmeToken  = "acme-token-0123456789abcdef"
)

// env is the API served on loopback port 0 over a whole pipeline (apptest), with
// auth on; every answer its client receives is checked against the OpenAPI document.
type env struct {
	t      *testing.T
	p      *apptest.Pipeline
	srv    *httpapi.Server
	url    string
	client *http.Client
	logs   *natstest.SyncBuffer
}

type envConfig struct {
	sim     llmsim.Config
	api     httpapi.Config
	noStart bool // services not started
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	p := apptest.New(t, apptest.Config{Sim: cfg.sim})
	if !cfg.noStart {
		p.StartAll()
	}
	e := &env{t: t, p: p, logs: &natstest.SyncBuffer{}}
	api := cfg.api
	if api.Tokens == nil {
		api.Tokens = []httpapi.Token{{Secret: adminToken}, {Secret: acmeToken, Tenant: "acme"}}
	}
	api.Addr = "127.0.0.1:0"
	api.Logger = textLogger(e.logs)
	srv, err := httpapi.New(p.Client, api)
	if err != nil {
		t.Fatal(err)
	}
	if e.url, err = srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e.srv = srv
	e.client = &http.Client{Transport: &checked{t: t, doc: loadDoc(t, e.url), next: http.DefaultTransport},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e
}

// do sends a request with the token ("" for none) and returns the answer.
func (e *env) do(method, path, token, contentType string, body io.Reader, header ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// call sends a request and decodes its JSON answer into out, failing unless the
// status is want.
func (e *env) call(method, path, token, contentType string, body io.Reader, want int, out any) {
	e.t.Helper()
	resp := e.do(method, path, token, contentType, body)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v\n%s", method, path, err, data)
		}
	}
}

// submitFile posts a file as CSV or JSON Lines (by its extension) with the query.
func (e *env) submitFile(path, query string, want int) httpapi.Submitted {
	e.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	ct := "text/csv"
	if strings.HasSuffix(path, ".jsonl") {
		ct = "application/x-ndjson"
	}
	var sub httpapi.Submitted
	e.call("POST", "/v1/batches"+query, adminToken, ct, bytes.NewReader(data), want, &sub)
	return sub
}

// lines reads a JSON Lines answer to its end, decoding each line with decode.
func lines(t *testing.T, r io.Reader, decode func([]byte)) error {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		decode(sc.Bytes())
	}
	return sc.Err()
}

// event is one server-sent event.
type event struct {
	name, id, data string
}

// events reads server-sent events to the end of the stream.
func events(t *testing.T, r io.Reader) []event {
	t.Helper()
	var out []event
	var cur event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" || cur.data != "" {
				out = append(out, cur)
			}
			cur = event{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			cur.data += strings.TrimPrefix(line, "data: ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("event stream: %v", err)
	}
	return out
}

var (
	docOnce sync.Once
	docData *openapi3.T
	docErr  error
)

// loadDoc loads the OpenAPI document served by the API, validated, with its server
// set to url.
func loadDoc(t *testing.T, url string) routers.Router {
	t.Helper()
	docOnce.Do(func() {
		loader := openapi3.NewLoader()
		docData, docErr = loader.LoadFromData(httpapi.OpenAPI)
		if docErr == nil {
			docErr = docData.Validate(context.Background())
		}
	})
	if docErr != nil {
		t.Fatalf("the OpenAPI document: %v", docErr)
	}
	doc := *docData
	doc.Servers = openapi3.Servers{{URL: url}}
	r, err := legacy.NewRouter(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checked is a transport that checks every answer against the OpenAPI document: the
// route and status are documented, the content type is one the status lists, and a
// JSON body matches its schema. Streams are checked by their tests, line by line.
type checked struct {
	t    *testing.T
	doc  routers.Router
	next http.RoundTripper
}

func (c *checked) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || strings.HasPrefix(req.URL.Path, "/ui/") || req.URL.Path == "/" {
		return resp, err
	}
	route, params, rerr := c.doc.FindRoute(req)
	if rerr != nil {
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			c.t.Errorf("%s %s: answered %d but the OpenAPI document has no such route: %v", req.Method, req.URL.Path, resp.StatusCode, rerr)
		}
		return resp, nil
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: ct != "application/json"},
	}
	if ct == "application/json" {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		input.SetBodyBytes(data)
	}
	if err := openapi3filter.ValidateResponse(req.Context(), input); err != nil {
		c.t.Errorf("%s %s: the answer does not match the OpenAPI document: %v", req.Method, req.URL.Path, err)
	}
	if r := route.Operation.Responses.Status(resp.StatusCode); r != nil && r.Value != nil && len(r.Value.Content) > 0 && r.Value.Content.Get(ct) == nil {
		c.t.Errorf("%s %s: status %d has content type %q, which the OpenAPI document does not list", req.Method, req.URL.Path, resp.StatusCode, ct)
	}
	return resp, nil
}

// schema returns a component schema of the document.
func schema(t *testing.T, name string) *openapi3.Schema {
	t.Helper()
	loadDoc(t, "http://127.0.0.1")
	s := docData.Components.Schemas[name]
	if s == nil || s.Value == nil {
		t.Fatalf("no schema %s in the OpenAPI document", name)
	}
	return s.Value
}

// matches checks a JSON value against a component schema of the document.
func matches(t *testing.T, name string, data []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v: %s", name, err, data)
	}
	if err := schema(t, name).VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()); err != nil {
		t.Errorf("%s does not match the OpenAPI document: %v\n%.300s", name, err, data)
	}
}

// eventually waits for cond, failing after within.
func eventually(t *testing.T, within time.Duration, cond func() bool, msg string) {
	t.Helper()
	natstest.Eventually(t, within, cond, msg)
}
