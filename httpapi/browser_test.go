package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// webTestDir holds the browser test (ui.mjs) and its npm packages.
const webTestDir = "web/test"

// browserPrereqs returns the node binary and Chromium, or skips the test saying what
// is missing and how to install it.
func browserPrereqs(t *testing.T) (node, chromium string) {
	t.Helper()
	if testing.Short() {
		t.Skip("the browser test does not run with -short")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("the browser test needs Node.js 20 or newer with npm")
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("the browser test needs Chromium at %s (apt-get install -y chromium, or set CHROMIUM)", chromium)
	}
	if _, err := os.Stat(filepath.Join(webTestDir, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Skipf("the browser test needs its npm packages: npm ci --prefix httpapi/%s", webTestDir)
	}
	return node, chromium
}

// The web page from the browser alone: log in, upload a file with a bad row and see
// it, upload a good file and watch its progress reach 100%, see its failed item,
// retry it, download the TSV, set a spend cap (a bad one refused); every page on a phone; nothing without the login.
// Screenshots go to $FLASHPIPE_SCREENSHOTS (docs/screenshots is made this way), else
// to a temporary directory.
func TestWebPageInARealBrowser(t *testing.T) {
	node, chromium := browserPrereqs(t)
	t.Parallel()
	const failing = "실패"
	p := apptest.New(t, apptest.Config{Sim: llmsim.Config{
		Latency: 150 * time.Millisecond, LatencyJitter: 100 * time.Millisecond,
		Faults: llmsim.Faults{FailTerms: map[string]int{failing: 400}},
	}})
	// Few items in flight, so that the batch runs long enough to watch.
	p.StartProcessor(p.ProcessorConfig(processor.Config{ConcurrentMax: 3}))
	p.StartSequencer(sequencer.Config{})
	p.StartSink(sink.Config{})
	logs := &natstest.SyncBuffer{}
	srv, err := httpapi.New(p.Client, httpapi.Config{Addr: "127.0.0.1:0", Tokens: []httpapi.Token{{Secret: adminToken}}, Logger: textLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	url, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	bad := filepath.Join(dir, "words-bad.csv")
	good := filepath.Join(dir, "korean-basics.csv")
	var rows strings.Builder
	rows.WriteString("position,term,type\n")
	for i, term := range strings.Fields("물 불 바람 나무 하늘 바다 산 강 꽃 비 눈 달 별 해 구름 돌 " + failing + " 길 집 문 책 손 발 눈물") {
		fmt.Fprintf(&rows, "%d,%s,noun\n", i+1, term)
	}
	write(t, good, rows.String())
	write(t, bad, "position,term,type\n1,물,noun\n2,,verb\n3,불,noun\n")
	shots := os.Getenv("FLASHPIPE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "ui.mjs")
	cmd.Dir = webTestDir
	cmd.Env = append(os.Environ(), "FLASHPIPE_URL="+url, "FLASHPIPE_TOKEN="+adminToken, "FLASHPIPE_BAD_FILE="+bad,
		"FLASHPIPE_GOOD_FILE="+good, "FLASHPIPE_FAILING_TERM="+failing, "FLASHPIPE_SCREENSHOTS="+shots, "CHROMIUM="+chromium)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		t.Log(line)
		if line == "READY-FOR-RETRY" {
			// The page showed the failed item: fix its cause, then let it press retry.
			if err := p.Sim.SetFaults(llmsim.Faults{}); err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(stdin, "go\n")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the browser test failed: %v\n%s\n%s\nserver log:\n%s", err, out.String(), stderr.String(), logs.String())
	}
	for _, name := range []string{"login.png", "upload-error.png", "batch-running.png", "batch.png", "batch-retried.png", "batches.png", "batch-phone.png", "spend.png"} {
		if fi, err := os.Stat(filepath.Join(shots, name)); err != nil || fi.Size() == 0 {
			t.Errorf("screenshot %s not saved: %v", name, err)
		}
	}
	t.Logf("screenshots in %s", shots)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
