package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// curl runs the real curl binary in dir and returns its output with the HTTP status
// (written last by -w).
func curl(t *testing.T, dir string, args ...string) (body string, status int) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("curl %s: no status in %q", strings.Join(args, " "), s)
	}
	return s[:max(i, 0)], code
}

// The README's HTTP API example, with the real curl against `flashpipe dev` with a
// token: submit a CSV file, follow its results, download the TSV; refusals are JSON.
func TestCurlAgainstTheHTTPAPIOfDev(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (apt-get install -y curl): the HTTP API's curl test needs it")
	}
	t.Parallel()
	dir := t.TempDir()
	const token = "curl-test-token-0123456789"
	if err := os.WriteFile(filepath.Join(dir, "tokens.txt"), []byte("# the test's\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, api := startDevWith(t, dir, ".flashpipe", "--api-tokens-file", "tokens.txt")
	file := abs(t, "../../examples/test_5_words.csv")
	auth := "Authorization: Bearer " + token

	body, status := curl(t, dir, "-X", "POST", "-H", auth, "-H", "Content-Type: text/csv", "--data-binary", "@"+file,
		api+"/v1/batches?source=test_5_words.csv")
	var sub struct {
		BatchID string `json:"batch_id"`
		Items   int    `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &sub); status != 201 || err != nil || sub.Items != 5 {
		t.Fatalf("submit: %d %s", status, body)
	}
	if _, status = curl(t, dir, "-X", "POST", "-H", auth, "-H", "Content-Type: text/csv", "--data-binary", "@"+file,
		api+"/v1/batches?source=test_5_words.csv"); status != 200 {
		t.Errorf("the same file again: %d, want 200", status)
	}

	// The results as they come, then the TSV, named after the batch.
	body, status = curl(t, dir, "-N", "-H", auth, api+"/v1/batches/"+sub.BatchID+"/results")
	if lines := strings.Split(strings.TrimSpace(body), "\n"); status != 200 || len(lines) != 5 || !strings.Contains(lines[4], `"seq":5`) {
		t.Fatalf("results: %d\n%s", status, body)
	}
	if _, status = curl(t, dir, "-f", "-H", auth, "-OJ", api+"/v1/batches/"+sub.BatchID+"/export?format=tsv"); status != 200 {
		t.Fatalf("export: %d", status)
	}
	tsv, err := os.ReadFile(filepath.Join(dir, sub.BatchID+".tsv"))
	if err != nil {
		t.Fatalf("curl -OJ did not save %s.tsv: %v", sub.BatchID, err)
	}
	checkTSV(t, string(tsv), loadItems(t, file), 3)

	// Refusals: no token, a bad file row by row.
	body, status = curl(t, dir, api+"/v1/batches")
	if status != 401 || !strings.Contains(body, `"error"`) {
		t.Errorf("no token: %d %s", status, body)
	}
	body, status = curl(t, dir, "-X", "POST", "-H", auth, "-H", "Content-Type: text/csv", "--data-binary", "position,term\n1,물\n2,\n", api+"/v1/batches")
	if status != 422 || !strings.Contains(body, `{"line":3,"reason":"term is empty"}`) {
		t.Errorf("bad file: %d %s", status, body)
	}
}

// Without a token the HTTP API refuses a network address, before serving anything.
func TestDevRefusesAnOpenAPIOnTheNetwork(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, stderr, code := flashpipeCmd(t, dir, "dev", "--api-addr", "0.0.0.0:0")
	if code == 0 || !strings.Contains(stderr, "no API token") || !strings.Contains(stderr, "FLASHPIPE_API_TOKENS") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}
