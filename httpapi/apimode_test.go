package httpapi_test

import (
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe/httpapi"
)

// A bad api_mode is refused at the HTTP door, naming the field, in a query and in a
// JSON body.
func TestAPIModeRefusedAtTheHTTPDoor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	for _, c := range []struct{ name, query, ctype, body string }{
		{"query", "?api_mode=fast", "text/csv", "term\n물\n"},
		{"json", "", "application/json", `{"api_mode":"fast","items":[{"term":"물"}]}`},
	} {
		var got httpapi.Error
		e.call("POST", "/v1/batches"+c.query, adminToken, c.ctype, strings.NewReader(c.body), 400, &got)
		if got.Field != "api_mode" || !strings.Contains(got.Message, "sync") {
			t.Errorf("%s: %+v, want field api_mode and a message naming the modes", c.name, got)
		}
	}
}
