package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/testutil/natsauth"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// httpURL is the address a command prints on its "HTTP:" line.
var httpURL = regexp.MustCompile(`HTTP:\s+(https?://\S+)`)

// waitHTTPURL waits for c to print where its HTTP API listens.
func (c *child) waitHTTPURL(within time.Duration) string {
	c.t.Helper()
	c.waitLog("HTTP:", within)
	m := httpURL.FindStringSubmatch(c.log())
	if m == nil {
		c.t.Fatalf("%s printed no HTTP URL:\n%s", c.name, c.log())
	}
	return m[1]
}

// apiCall sends one request with the bearer token (none when token is "") and
// decodes a JSON answer into out (nil: ignore the body); it returns the status.
func apiCall(t *testing.T, client *http.Client, method, url, token, contentType string, body io.Reader, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// `flashpipe api` as a process of its own, beside the services of a pipeline (embedded
// NATS, Postgres, the simulator): it serves its health endpoints where the Kubernetes
// probes and the compose healthcheck ask (the API's /healthz, /readyz on the metrics
// address with its checks), refuses a request without a token, takes a CSV file with
// one, and shows the batch running to completion; the TSV export holds the cards.
func TestAPICommandServesThePipeline(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{})
	p.StartAll()
	dir := t.TempDir()
	const token = "api-command-token-0123456789"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	api := startChild(t, "api", "api", "--api-addr", "127.0.0.1:0", "--api-tokens-file", tokens,
		"--nats-url", p.URL, "--prefix", p.Contract.Prefix(), "--postgres-url", p.PostgresURL,
		"--metrics-addr", metrics, "--log-format", "json")
	base := api.waitHTTPURL(time.Minute)
	client := &http.Client{Timeout: 30 * time.Second}

	if code := apiCall(t, client, "GET", base+httpapi.HealthPath, "", "", nil, nil); code != http.StatusOK {
		t.Fatalf("GET %s: %d", httpapi.HealthPath, code)
	}
	var ready struct {
		Status string `json:"status"`
		Checks []struct {
			Name, Status string
		} `json:"checks"`
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		return apiCall(t, client, "GET", "http://"+metrics+health.ReadinessPath, "", "", nil, &ready) == http.StatusOK
	}, "the api command never became ready at %s%s:\n%s", metrics, health.ReadinessPath, api.log())
	var names []string
	for _, c := range ready.Checks {
		names = append(names, c.Name+"="+c.Status)
	}
	if got := strings.Join(names, ","); got != "nats=ok,streams=ok,database=ok" {
		t.Errorf("readiness checks %s, want nats, streams and database ok", got)
	}

	if code := apiCall(t, client, "GET", base+"/v1/batches", "", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	file := "../../examples/test_5_words.csv"
	csv, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var sub httpapi.Submitted
	if code := apiCall(t, client, "POST", base+"/v1/batches?batch_id=api-cmd&source=test_5_words.csv", token, "text/csv",
		bytes.NewReader(csv), &sub); code != http.StatusCreated || sub.BatchID != "api-cmd" {
		t.Fatalf("submit: %d %+v\n%s", code, sub, api.log())
	}
	var d httpapi.BatchDetail
	natstest.Eventually(t, time.Minute, func() bool {
		return apiCall(t, client, "GET", base+"/v1/batches/api-cmd", token, "", nil, &d) == http.StatusOK &&
			d.State == flashpipe.BatchComplete
	}, "batch api-cmd never complete through the api command: %+v", &d)
	items := loadItems(t, file)
	if d.Items != len(items) || d.OK != len(items) || d.Failed != 0 || d.Usage.Stage1Calls != len(items) {
		t.Errorf("status %+v", d.Batch)
	}
	var list struct {
		Batches []httpapi.Batch `json:"batches"`
	}
	if code := apiCall(t, client, "GET", base+"/v1/batches", token, "", nil, &list); code != http.StatusOK ||
		len(list.Batches) != 1 || list.Batches[0].BatchID != "api-cmd" {
		t.Errorf("list: %d %+v", code, list)
	}
	req, _ := http.NewRequest("GET", base+"/v1/batches/api-cmd/export?format=tsv", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tsv, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d %s", resp.StatusCode, tsv)
	}
	checkTSV(t, string(tsv), items, 3)
	if strings.Contains(api.log(), token) {
		t.Error("the api command logged its token")
	}
}

// `flashpipe run FILE --api-addr 127.0.0.1:0` serves the HTTP API while the batch
// runs: the list shows the batch before the command finishes, and the command then
// exits 0 with its cards written.
func TestRunServesTheAPIWhileTheBatchRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := abs(t, "../../examples/test_5_words.csv")
	// Two calls per item of at least 1.5 s each: the batch runs for 3 s or more.
	run := startChild(t, "run", "run", file, "--batch", "served", "--data-dir", filepath.Join(dir, "state"),
		"-o", filepath.Join(dir, "cards.tsv"), "--api-addr", "127.0.0.1:0", "--sim-latency", "1500ms", "--quiet")
	base := run.waitHTTPURL(time.Minute)
	client := &http.Client{Timeout: 10 * time.Second}
	var list struct {
		Batches []httpapi.Batch `json:"batches"`
	}
	seen := false
	natstest.Eventually(t, 30*time.Second, func() bool {
		select {
		case err := <-run.done:
			run.done <- err
			t.Fatalf("run finished (%v) before its API listed the batch:\n%s", err, run.log())
		default:
		}
		// No token on a loopback address: the API is open to this machine.
		if apiCall(t, client, "GET", base+"/v1/batches", "", "", nil, &list) != http.StatusOK {
			return false
		}
		for _, b := range list.Batches {
			seen = seen || (b.BatchID == "served" && b.Items == 5)
		}
		return seen
	}, "the API of run never listed the batch: %+v", &list)
	select {
	case err := <-run.done:
		run.done <- err
		if err != nil {
			t.Fatalf("run: %v\n%s", err, run.log())
		}
	case <-time.After(time.Minute):
		t.Fatalf("run did not finish within a minute:\n%s", run.log())
	}
	tsv, err := os.ReadFile(filepath.Join(dir, "cards.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	checkTSV(t, string(tsv), loadItems(t, file), 3)
}

// --api-tls-cert and --api-tls-key serve the API over TLS: a client that trusts the
// test's private CA gets the list with its token; one that does not is refused by the
// handshake, and plain HTTP gets no API answer.
func TestAPIOverTLSWithAPrivateCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := natsauth.NewCA(t, "flashpipe test CA")
	caFile := ca.Write(t, dir, "ca.pem")
	cert, key := ca.Issue(t, dir, "api", true)
	const token = "tls-test-token-0123456789abcdef"
	dev := startChild(t, "dev", "dev", "--data-dir", filepath.Join(dir, "state"), "--api-addr", "127.0.0.1:0",
		"--api-tls-cert", cert, "--api-tls-key", key, "--api-tokens", token)
	base := dev.waitHTTPURL(time.Minute)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("dev with --api-tls-cert serves %s, want https", base)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the CA file holds no certificate")
	}
	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	var list struct {
		Batches []httpapi.Batch `json:"batches"`
	}
	if code := apiCall(t, trusting, "GET", base+"/v1/batches", token, "", nil, &list); code != http.StatusOK || list.Batches == nil {
		t.Fatalf("over TLS with the CA: %d %+v", code, list)
	}
	if code := apiCall(t, trusting, "GET", base+"/v1/batches", "", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("over TLS without the token: %d, want 401", code)
	}
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/v1/batches"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("a client without the CA: %v, want a certificate signed by an unknown authority", err)
	}
	resp, err := http.Get("http://" + strings.TrimPrefix(base, "https://") + "/v1/batches")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %d %s, want 400 (a TLS server's answer to HTTP)", resp.StatusCode, b)
		}
	}
}
