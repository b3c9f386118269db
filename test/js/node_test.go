package js_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// minNodeMajor is the oldest Node.js the NATS client supports.
const minNodeMajor = 18

// node returns the path of node once the packages of package-lock.json are installed
// (`npm ci`, unless node_modules holds them already: .ci/run installs them), or skips
// the test saying what is missing.
func node(t *testing.T) string {
	t.Helper()
	nodePath, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the JavaScript contract test needs Node.js 18 or newer and npm (Debian: apt-get install -y nodejs npm)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: the JavaScript contract test needs it to install the NATS client (Debian: apt-get install -y npm)")
	}
	out, err := exec.Command(nodePath, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	if m := regexp.MustCompile(`^v(\d+)\.`).FindSubmatch(out); m == nil {
		t.Fatalf("node --version: %q", out)
	} else if major, _ := strconv.Atoi(string(m[1])); major < minNodeMajor {
		t.Skipf("node %s is too old for the NATS JavaScript client (%d or newer)", bytes.TrimSpace(out), minNodeMajor)
	}
	if installed(t) {
		return nodePath
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	return nodePath
}

// installed reports whether node_modules holds exactly the packages of
// package-lock.json: npm records what it installed in node_modules/.package-lock.json
// (the same entries, less the root package).
func installed(t *testing.T) bool {
	t.Helper()
	read := func(path string) map[string]json.RawMessage {
		var lock struct {
			Packages map[string]json.RawMessage `json:"packages"`
		}
		data, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(data, &lock) != nil {
			return nil
		}
		delete(lock.Packages, "")
		return lock.Packages
	}
	want := read("package-lock.json")
	if len(want) == 0 {
		t.Fatal("package-lock.json lists no packages")
	}
	got := read(filepath.Join("node_modules", ".package-lock.json"))
	return maps.EqualFunc(want, got, func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
	})
}

// summary is what run.mjs prints.
type summary struct {
	ManifestAgain string           `json:"manifest_again"`
	BatchHash     string           `json:"batch_hash"`
	Items         []flashpipe.Item `json:"items"`
	Results       []struct {
		Seq      int              `json:"seq"`
		Position int64            `json:"position"`
		Status   flashpipe.Status `json:"status"`
		Cards    int              `json:"cards"`
	} `json:"results"`
	Refusals []struct {
		Batch  string `json:"batch"`
		Reason string `json:"reason"`
	} `json:"refusals"`
	Probe     []flashpipe.Item `json:"probe"`
	ProbeHash string           `json:"probe_hash"`
}

// A batch published with the official NATS JavaScript client, from docs/contract.md
// alone, runs through a real pipeline like one submitted by flashpipe: the JS side reads
// the ordered log back in order (manifest, every result in seq order, completion) and
// the refusals of an item beyond the count and of an item with no manifest; the store
// holds the batch, its tenant and every result in order; and the content hash the JS
// side computes by the documented algorithm is flashpipe's own.
func TestJavaScriptPublisherAndReader(t *testing.T) {
	nodePath := node(t)
	p := apptest.New(t, apptest.Config{SQLite: true})
	p.StartProcessor(p.ProcessorConfig(processor.Config{}))
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{OrphanGrace: time.Second}})
	p.StartSink(sink.Config{})

	const batch, orphan = "js-week-12", "js-orphan"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodePath, "run.mjs")
	cmd.Env = append(os.Environ(), "NATS_URL="+p.URL, "FLASHPIPE_PREFIX="+p.Contract.Prefix(),
		"BATCH_ID="+batch, "ORPHAN_BATCH_ID="+orphan, "TIMEOUT_MS=120000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node run.mjs: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("run.mjs printed no summary: %v\n%s", err, stdout.String())
	}
	t.Logf("JavaScript side: %d results, a second manifest was %s, refusals %v", len(s.Results), s.ManifestAgain, s.Refusals)

	if got, want := s.ProbeHash, flashpipe.HashItems(s.Probe); got != want {
		t.Errorf("content hash of %+v: JavaScript %s, flashpipe %s: the documented algorithm is wrong", s.Probe, got, want)
	}
	if got, want := s.BatchHash, flashpipe.HashItems(s.Items); got != want {
		t.Errorf("content hash of the batch: JavaScript %s, flashpipe %s", got, want)
	}
	st := p.WaitStored(batch, 0, time.Minute)
	if st.Manifest.Tenant != "js-team" || st.Manifest.Source != "js-test" || st.OK != len(s.Items) || st.Failed != 0 {
		t.Errorf("stored batch: tenant %q, source %q, %d ok, %d failed; want js-team, js-test, %d ok", st.Manifest.Tenant,
			st.Manifest.Source, st.OK, st.Failed, len(s.Items))
	}
	var positions []int64
	for _, r := range p.Results(batch) {
		positions = append(positions, r.Position)
	}
	want := []int64{10, 20, 35, 50}
	if !slices.Equal(positions, want) {
		t.Errorf("stored positions %v, want %v", positions, want)
	}
}
