package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's "Running the services separately" recipe, as written (with SQLite for
// the sink, so that it needs no Postgres): each service a process of its own against
// `dev --nats-only`, the processor at the simulator's speed, not the real API's
// default rate limit; then a SIGTERM drains the services, which exit cleanly.
func TestReadmeRecipeRunsAtFullSpeed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev := startChild(t, "dev", "dev", "--nats-only", "--nats-port", "0", "--data-dir", filepath.Join(dir, "dev"))
	dev.waitLog("no services run here", 30*time.Second)
	natsURL := regexp.MustCompile(`nats://127\.0\.0\.1:\d+`).FindString(dev.log())
	sim := startChild(t, "simulate-api", "simulate-api", "--addr", "127.0.0.1:0")
	sim.waitLog("--rate-limit-rpm 0", 30*time.Second)
	apiFlags := strings.Fields(regexp.MustCompile(`--api-base-url \S+ --rate-limit-rpm 0`).FindString(sim.log()))
	if natsURL == "" || len(apiFlags) != 4 {
		t.Fatalf("dev or simulate-api did not print what the recipe needs:\n%s\n%s", dev.log(), sim.log())
	}
	common := []string{"--nats-url", natsURL, "--log-format", "json"}
	services := []*child{
		startChild(t, "sink", append([]string{"sink", "--sqlite", filepath.Join(dir, "flashpipe.db"), "--auto-migrate"}, common...)...),
		startChild(t, "sequencer", append([]string{"sequencer"}, common...)...),
		startChild(t, "processor", append(append([]string{"processor"}, apiFlags...), common...)...),
	}
	services[0].waitLog(`"msg":"sink started"`, 30*time.Second)
	services[2].waitLog(`"msg":"processor started"`, 30*time.Second)

	out, stderr, code := flashpipeCmd(t, dir, "submit", abs(t, "../../examples/vocabulary_1000.csv"), "--nats-url", natsURL,
		"--wait", "-o", "cards.tsv", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s%s", code, out, stderr)
	}
	var sum struct {
		OK          int     `json:"ok"`
		ItemsPerSec float64 `json:"items_per_second"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	tsv, err := os.ReadFile(filepath.Join(dir, "cards.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the recipe ran the 1,000-word list at %.0f items/s", sum.ItemsPerSec)
	// The real API's default (600 requests per minute, two per item) would hold it to
	// 5 items/s.
	if sum.OK != 1000 || sum.ItemsPerSec < 50 || strings.Count(string(tsv), "\n") < 2000 {
		t.Fatalf("submit --wait: %d ok at %.1f items/s, %d TSV lines; want 1000 at the simulator's speed", sum.OK, sum.ItemsPerSec, strings.Count(string(tsv), "\n"))
	}

	for _, c := range services {
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range services {
		select {
		case err := <-c.done:
			c.done <- err // for the cleanup
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM:\n%s", c.name, err, c.log())
			}
		case <-time.After(45 * time.Second):
			t.Errorf("%s did not stop within 45s of SIGTERM:\n%s", c.name, c.log())
		}
	}
}
