package httpapi_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe/httpapi"
)

// The document and the routes cannot drift: every route the server serves (but the
// pages under /ui/ and the redirect to them) is an operation of the document, and
// every operation of the document is a route.
func TestTheOpenAPIDocumentListsEveryRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	var served []string
	for _, r := range e.srv.Routes() {
		method, path, _ := strings.Cut(r, " ")
		if strings.HasPrefix(path, "/ui/") || path == "/{$}" {
			continue
		}
		served = append(served, method+" "+path)
	}
	var documented []string
	for path, item := range docData.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if !slices.Equal(served, documented) {
		t.Fatalf("routes and the OpenAPI document differ:\nserved:     %v\ndocumented: %v", served, documented)
	}
	for _, op := range []string{"POST /v1/batches", "GET /v1/batches/{id}/results", "GET /v1/batches/{id}/export"} {
		if !slices.Contains(served, op) {
			t.Errorf("%s is not served", op)
		}
	}
}

func TestParseTokens(t *testing.T) {
	t.Parallel()
	good := "# tokens\n\n0123456789abcdef0123\nfedcba9876543210fedc  acme\n"
	tokens, err := httpapi.ParseTokens(strings.NewReader(good), "tokens.txt")
	if err != nil || len(tokens) != 2 || tokens[0].Tenant != "" || tokens[1].Tenant != "acme" {
		t.Fatalf("%+v %v", tokens, err)
	}
	for _, c := range []struct{ in, want string }{
		{"short\n", "tokens.txt line 1: the token is shorter than 16"},
		{"0123456789abcdef0123 a b\n", "line 1: want a token and optionally a tenant"},
		{"\n0123456789abcdef0123 bad/tenant\n", "line 2: tenant \"bad/tenant\""},
		{"0123456789abcdef0123\n0123456789abcdef0123 x\n", "line 2: the same token as line 1"},
	} {
		_, err := httpapi.ParseTokens(strings.NewReader(c.in), "tokens.txt")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("%q: the error holds the token: %v", c.in, err)
		}
	}
	tokens, err = httpapi.LoadTokens("", "FLASHPIPE_API_TOKENS", "0123456789abcdef0123,fedcba9876543210fedc acme")
	if err != nil || len(tokens) != 2 || tokens[1].Tenant != "acme" {
		t.Fatalf("from the environment: %+v %v", tokens, err)
	}
}
