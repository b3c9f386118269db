package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/httpapi"
)

// tenK is the 10,000-item word list with all its metadata columns (3.4 MB).
const tenK = "../testdata/10K_HSK_List.csv"

// benchAPI serves the API over a pipeline for a benchmark (services started when
// run is set) and returns its URL.
func benchAPI(b *testing.B, run bool) (*apptest.Pipeline, string) {
	b.Helper()
	p := apptest.New(b, apptest.Config{})
	if run {
		p.StartAll()
	}
	srv, err := httpapi.New(p.Client, httpapi.Config{Addr: "127.0.0.1:0", Tokens: []httpapi.Token{{Secret: adminToken}}})
	if err != nil {
		b.Fatal(err)
	}
	url, err := srv.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return p, url
}

// post submits data as a new batch and fails unless it is created.
func post(b *testing.B, url, id string, data []byte) {
	req, _ := http.NewRequest("POST", url+"/v1/batches?source=10K_HSK_List.csv&batch_id="+id, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
}

// HTTP submit of the 10,000-item list: the request, parsing and checking every row,
// publishing the manifest and 10,000 item messages, waiting for every ack.
//
//	go test -run '^$' -bench Submit10K -benchtime 5x ./httpapi/
func BenchmarkSubmit10K(b *testing.B) {
	data, err := os.ReadFile(tenK)
	if err != nil {
		b.Fatal(err)
	}
	_, url := benchAPI(b, false)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		post(b, url, fmt.Sprintf("bench-%d", i), data)
	}
	b.ReportMetric(float64(10_000*b.N)/b.Elapsed().Seconds(), "items/s")
}

// HTTP submit of the 10,000-item list, then its results followed over HTTP (JSON
// Lines) until the last one, through the whole pipeline against the simulator with
// no latency: the first iteration pays for every answer, later ones find them cached.
//
//	go test -run '^$' -bench SubmitAndFollow10K -benchtime 1x ./httpapi/
func BenchmarkSubmitAndFollow10K(b *testing.B) {
	data, err := os.ReadFile(tenK)
	if err != nil {
		b.Fatal(err)
	}
	_, url := benchAPI(b, true)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		post(b, url, id, data)
		submitted := time.Since(start)
		req, _ := http.NewRequest("GET", url+"/v1/batches/"+id+"/results", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n := bytes.Count(must(io.ReadAll(resp.Body)), []byte("\n"))
		resp.Body.Close()
		if n != 10_000 {
			b.Fatalf("%d results, want 10000", n)
		}
		b.Logf("iteration %d: submitted in %s, last result after %s", i, submitted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	b.ReportMetric(float64(10_000*b.N)/b.Elapsed().Seconds(), "items/s")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
