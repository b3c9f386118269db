package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// flashpipeCmd runs the built binary with args in dir, without any API key.
func flashpipeCmd(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return flashpipeCmdIn(t, dir, nil, args...)
}

// flashpipeCmdIn is flashpipeCmd with stdin as the standard input.
func flashpipeCmdIn(t *testing.T, dir string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run flashpipe: %v", err)
	}
	return out.String(), errb.String(), code
}

// cleanEnv is the environment without flashpipe settings or API keys.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FLASHPIPE_") || strings.HasPrefix(kv, "OPENROUTER_") || strings.HasPrefix(kv, "DATABASE_URL=") ||
			strings.HasPrefix(kv, "CONCURRENT_MAX=") || strings.HasPrefix(kv, "NATS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func abs(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The README's main job: `flashpipe run FILE -o cards.tsv` on embedded defaults.
func TestRunCommandWritesTSVAndSummary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := abs(t, "../../examples/test_5_words.csv")
	stdout, stderr, code := flashpipeCmd(t, dir, "run", file, "-o", "cards.tsv", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "simulator") {
		t.Errorf("stderr does not say the simulator is used:\n%s", stderr)
	}
	var sum summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary is not one JSON object: %v\n%s", err, stdout)
	}
	if sum.Items != 5 || sum.OK != 5 || sum.Failed != 0 || sum.Cards != 15 || sum.APICalls.Stage1 != 5 || sum.APICalls.Stage2 != 5 ||
		sum.APICalls.Total != 10 || sum.PromptTokens == 0 || sum.CompletionTokens == 0 || sum.CostUSD <= 0 || sum.Elapsed <= 0 || sum.ItemsPerSecond <= 0 {
		t.Fatalf("summary %+v", sum)
	}
	data, err := os.ReadFile(filepath.Join(dir, "cards.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	checkTSV(t, string(data), loadItems(t, file), 3)
	if _, err := os.Stat(filepath.Join(dir, ".flashpipe", "flashpipe.db")); err != nil {
		t.Fatalf("no state kept in the default data dir: %v", err)
	}

	// A second run reuses the state: the same batch, nothing published again.
	stdout, stderr, code = flashpipeCmd(t, dir, "run", file, "-o", "again.tsv", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, stderr)
	}
	var again summary
	if err := json.Unmarshal([]byte(stdout), &again); err != nil {
		t.Fatal(err)
	}
	if !again.Resubmitted || again.BatchID != sum.BatchID || again.Cards != 15 {
		t.Fatalf("second run summary %+v, want the same batch resubmitted", again)
	}
	second, _ := os.ReadFile(filepath.Join(dir, "again.tsv"))
	if !bytes.Equal(second, data) {
		t.Fatal("the second run wrote a different TSV")
	}

	// export writes the same TSV from the store later.
	_, stderr, code = flashpipeCmd(t, dir, "export", "--batch", sum.BatchID, "-o", "export.tsv")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	exported, _ := os.ReadFile(filepath.Join(dir, "export.tsv"))
	if !bytes.Equal(exported, data) {
		t.Fatal("export wrote a different TSV than run")
	}
}

// A bad batch is rejected with every bad row listed, and nothing is published.
func TestSubmitRejectsBadFileAndPublishesNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	prefix := natstest.UniquePrefix(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	content := "position,term,type\n1,사람,noun\n2,,verb\nx,물,noun\n1,dup,noun\n"
	if err := os.WriteFile(bad, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := flashpipeCmd(t, dir, "submit", bad, "--nats-url", srv.ClientURL(), "--prefix", prefix)
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, stderr)
	}
	for _, want := range []string{"line 3: term is empty", `line 4: position "x" is not an integer`, "line 5: position 1 is already used on line 2"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// Nothing was published: the streams do not even exist.
	_, err := js.Stream(context.Background(), strings.ToUpper(prefix)+"_ITEMS")
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("items stream: %v, want it never created", err)
	}

	// A client creates no stream: submitting to a server without them says how to
	// create them.
	_, stderr, code = flashpipeCmd(t, dir, "submit", bad, "--nats-url", srv.ClientURL(), "--prefix", prefix, "--skip-bad-rows")
	if code != 1 || !strings.Contains(stderr, "flashpipe streams apply") {
		t.Fatalf("submit before the streams exist: exit %d, stderr:\n%s", code, stderr)
	}
	streamsApply(t, dir, srv.ClientURL(), prefix)

	// The same file with --skip-bad-rows publishes only the good row, and says which
	// rows it skipped.
	var out string
	out, stderr, code = flashpipeCmd(t, dir, "submit", bad, "--nats-url", srv.ClientURL(), "--prefix", prefix, "--skip-bad-rows", "--batch", "skipped")
	if code != 0 || strings.TrimSpace(out) != "skipped" || !strings.Contains(stderr, "skipped line 3") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, out, stderr)
	}
	st, err := js.Stream(context.Background(), strings.ToUpper(prefix)+"_ITEMS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d items published, want 1", info.State.Msgs)
	}
}

// submit --dry-run prices a batch without publishing it; cache stats and clear work
// against the same server.
func TestDryRunAndCacheCommands(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	prefix := natstest.UniquePrefix(t)
	dir := t.TempDir()
	file := abs(t, "../../examples/test_5_words.csv")
	streamsApply(t, dir, srv.ClientURL(), prefix)
	out, stderr, code := flashpipeCmd(t, dir, "submit", file, "--dry-run", "--json", "--nats-url", srv.ClientURL(), "--prefix", prefix)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var est struct {
		Items        int     `json:"items"`
		Stage1Calls  int     `json:"stage1_calls"`
		Stage2Calls  int     `json:"stage2_calls"`
		Stage1Cached int     `json:"stage1_cached"`
		CostUSD      float64 `json:"cost_usd"`
		CacheUsed    bool    `json:"cache_used"`
	}
	if err := json.Unmarshal([]byte(out), &est); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if est.Items != 5 || est.Stage1Calls != 5 || est.Stage2Calls != 5 || est.Stage1Cached != 0 || est.CostUSD <= 0 || !est.CacheUsed {
		t.Fatalf("estimate %+v", est)
	}
	if st, err := js.Stream(context.Background(), strings.ToUpper(prefix)+"_ITEMS"); err != nil || st.CachedInfo().State.Msgs != 0 {
		t.Fatalf("the dry run published (items stream: %v)", err)
	}

	// Two answers in the cache of this prefix, one per stage.
	c, err := contract.New(contract.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	answers, err := cache.New(context.Background(), js, c, cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for stage := 1; stage <= 2; stage++ {
		if err := answers.Put(context.Background(), cache.Key(stage, "m", "h"), cache.Entry{Stage: stage, Value: []byte(`"v"`)}); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, code = flashpipeCmd(t, dir, "cache", "stats", "--json", "--nats-url", srv.ClientURL(), "--prefix", prefix)
	if code != 0 || !strings.Contains(out, `"entries":2`) {
		t.Fatalf("cache stats: exit %d, %s\n%s", code, out, stderr)
	}
	if _, stderr, code = flashpipeCmd(t, dir, "cache", "clear", "--nats-url", srv.ClientURL(), "--prefix", prefix); code == 0 || !strings.Contains(stderr, "--yes") {
		t.Fatalf("clearing everything without --yes: exit %d\n%s", code, stderr)
	}
	out, stderr, code = flashpipeCmd(t, dir, "cache", "clear", "--stage", "2", "--nats-url", srv.ClientURL(), "--prefix", prefix)
	if code != 0 || !strings.Contains(out, "removed 1") {
		t.Fatalf("cache clear: exit %d, %s\n%s", code, out, stderr)
	}
	if _, found, _ := answers.Get(context.Background(), cache.Key(1, "m", "h")); !found {
		t.Fatal("clearing stage 2 removed the stage 1 answer")
	}
}

// Every service serves its Prometheus metrics with --metrics-addr.
func TestServicesServeMetrics(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	prefix := natstest.UniquePrefix(t)
	ports := freePorts(t, 3)
	common := []string{"--nats-url", srv.ClientURL(), "--prefix", prefix}
	services := map[string][]string{
		"flashpipe_processor_in_flight": append([]string{"processor", "--api-base-url", "http://127.0.0.1:1/v1"}, common...),
		"flashpipe_sequencer_batches":   append([]string{"sequencer"}, common...),
		"flashpipe_sink_write_seconds":  append([]string{"sink", "--sqlite", filepath.Join(t.TempDir(), "m.db")}, common...),
	}
	i := 0
	for metric, args := range services {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		i++
		cmd := exec.Command(binary, append(args, "--metrics-addr", addr)...)
		cmd.Env = cleanEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		var body string
		natstest.Eventually(t, 20*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return strings.Contains(body, metric)
		}, "%s: no %s at %s/metrics", args[0], metric, addr)
	}
}

// streamsApply creates the streams and buckets of prefix as an operator does.
func streamsApply(t *testing.T, dir, url, prefix string) {
	t.Helper()
	out, stderr, code := flashpipeCmd(t, dir, "streams", "apply", "--yes", "--nats-url", url, "--prefix", prefix)
	if code != 0 || !strings.Contains(out, "create stream "+strings.ToUpper(prefix)+"_ITEMS") {
		t.Fatalf("streams apply: exit %d, stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

// The operator set a 25 s retention; a client with the default flags (168h) leaves it
// alone, and `streams` shows the difference without changing anything.
func TestClientWithDefaultFlagsLeavesStreamsAlone(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	prefix := natstest.UniquePrefix(t)
	dir := t.TempDir()
	out, stderr, code := flashpipeCmd(t, dir, "streams", "apply", "--yes", "--nats-url", srv.ClientURL(), "--prefix", prefix,
		"--stream-max-age", "25s", "--items-max-age", "25s", "--results-max-age", "25s", "--duplicate-window", "5s")
	if code != 0 {
		t.Fatalf("streams apply: exit %d\n%s%s", code, out, stderr)
	}
	file := abs(t, "../../examples/test_5_words.csv")
	if _, stderr, code := flashpipeCmd(t, dir, "submit", file, "--nats-url", srv.ClientURL(), "--prefix", prefix); code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, stderr)
	}
	for _, name := range []string{"_BATCHES", "_ITEMS", "_RESULTS", "_ORDERED"} {
		st, err := js.Stream(context.Background(), strings.ToUpper(prefix)+name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := st.CachedInfo().Config; cfg.MaxAge != 25*time.Second || cfg.Duplicates != 5*time.Second {
			t.Fatalf("%s: max age %s, duplicate window %s after a default submit; want 25s and 5s", name, cfg.MaxAge, cfg.Duplicates)
		}
	}
	out, _, code = flashpipeCmd(t, dir, "streams", "--nats-url", srv.ClientURL(), "--prefix", prefix)
	if code != 0 || !strings.Contains(out, "max_age 25s -> 168h0m0s") || !strings.Contains(out, "flashpipe streams apply") {
		t.Fatalf("streams (show) with the default flags: exit %d\n%s", code, out)
	}
	// Asked without a terminal and without --yes, apply changes nothing.
	if _, stderr, code := flashpipeCmd(t, dir, "streams", "apply", "--nats-url", srv.ClientURL(), "--prefix", prefix); code != 2 || !strings.Contains(stderr, "--yes") {
		t.Fatalf("streams apply without --yes: exit %d\n%s", code, stderr)
	}
	if st, _ := js.Stream(context.Background(), strings.ToUpper(prefix)+"_ITEMS"); st.CachedInfo().Config.MaxAge != 25*time.Second {
		t.Fatal("streams apply without --yes changed the stream")
	}
}
