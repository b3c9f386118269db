package llmsim_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// discardWriter is an http.ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// requestBody returns req as the client sends it, captured by a loopback server.
func requestBody(t testing.TB, req llm.Request) []byte {
	t.Helper()
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		io.WriteString(w, `{"choices":[{"finish_reason":"stop","message":{"content":"x"}}]}`)
	}))
	defer srv.Close()
	c, err := llm.New(llm.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return body
}

// stage1Content returns the simulator's stage 1 answer for it.
func stage1Content(t testing.TB, sim *llmsim.Simulator, it flashpipe.Item) string {
	t.Helper()
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, err := llm.New(llm.Config{BaseURL: srv.URL + "/api/v1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Complete(context.Background(), stages.Stage1Request(stages.DefaultConfig(), it))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Content
}
