//go:build image

package deploy_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/testutil/freeport"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// The image test: builds the flashpipe image FROM scratch (deploy/Dockerfile.prebuilt)
// from a static binary built here, with podman, then runs from it (1) `flashpipe run`
// on the 1,000-item example with no network at all, and (2) the services, each in its
// own container with a read-only root, against an embedded NATS server of this test and
// the PostgreSQL at 127.0.0.1:5432, and submits the batch from the image too.
//
//	scripts/image-test.sh        (needs: apt-get install -y podman runc)
//
// FLASHPIPE_PODMAN_FLAGS replaces the global podman flags (default: --runtime runc
// --cgroup-manager cgroupfs, what works on a machine without systemd).
// FLASHPIPE_IMAGE_TEST_KEEP=1 keeps the image (localhost/flashpipe:image-test) after
// the test. FLASHPIPE_IMAGE_TEST_RPM sets the processors' RATE_LIMIT_RPM (default 0: no limit, the
// fastest run; 600 shows the pipeline at the default limit of a real API).

const imageTag = "localhost/flashpipe:image-test"

func podmanArgs(args ...string) []string {
	flags := strings.Fields(os.Getenv("FLASHPIPE_PODMAN_FLAGS"))
	if _, set := os.LookupEnv("FLASHPIPE_PODMAN_FLAGS"); !set {
		flags = []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}
	}
	return append(flags, args...)
}

// podman runs podman and returns its standard output; it fails the test on an error.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := podmanErr(args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func podmanErr(args ...string) (string, error) {
	cmd := exec.Command("podman", podmanArgs(args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// runFlags are the flags of every `podman run`: the local image only, the host's
// network (the test's NATS and PostgreSQL are on its loopback), the limits podman
// needs here.
func runFlags(extra ...string) []string {
	return append([]string{"run", "--pull", "never", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"}, extra...)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildImage assembles the build context of deploy/Dockerfile.prebuilt and builds it.
func buildImage(t *testing.T) {
	t.Helper()
	root := repoRoot(t)
	ctx := t.TempDir()
	rootfs := filepath.Join(ctx, "rootfs")
	for _, d := range []string{"usr/local/bin", "etc/ssl/certs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ctx, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=image-test",
		"-o", filepath.Join(rootfs, "usr/local/bin/flashpipe"), "./cmd/flashpipe")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the static binary: %v\n%s", err, out)
	}
	t.Logf("static binary built in %s", time.Since(start).Round(time.Millisecond))
	caFile := os.Getenv("SSL_CERT_FILE")
	if caFile == "" {
		caFile = "/etc/ssl/certs/ca-certificates.crt"
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("CA certificates for the image (set SSL_CERT_FILE or install ca-certificates): %v", err)
	}
	files := map[string]string{
		"etc/ssl/certs/ca-certificates.crt": string(ca),
		"etc/passwd":                        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n",
		"etc/group":                         "root:x:0:\nnonroot:x:65532:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	podman(t, "build", "--pull=never", "-f", filepath.Join(root, "deploy/Dockerfile.prebuilt"), "-t", imageTag, ctx)
	if os.Getenv("FLASHPIPE_IMAGE_TEST_KEEP") == "" {
		t.Cleanup(func() { _, _ = podmanErr("rmi", "-f", imageTag) })
	}
	t.Logf("image built in %s", time.Since(start).Round(time.Millisecond))
}

func TestImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman not found: apt-get install -y podman runc (see docs/deploy.md)")
	}
	buildImage(t)
	cfg := podman(t, "image", "inspect", "--format", "{{.Size}} {{.Config.User}} {{json .Config.Entrypoint}} {{.Config.WorkingDir}}", imageTag)
	fields := strings.Fields(cfg)
	if len(fields) != 4 || fields[1] != "65532:65532" || fields[2] != `["flashpipe"]` || fields[3] != "/data" {
		t.Fatalf("image config: %q, want user 65532:65532, entrypoint [\"flashpipe\"], workdir /data", cfg)
	}
	size, _ := strconv.ParseInt(fields[0], 10, 64)
	t.Logf("image %s: %.1f MB", imageTag, float64(size)/1e6)

	t.Run("run", testImageRun)
	t.Run("services", testImageServices)
}

// writable returns a new directory the image's user (65532) can write to.
func writable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// `flashpipe run` in the container, with no network: the embedded NATS, the simulator
// and SQLite in the mounted volume; the TSV has the 1,000 items in order.
func testImageRun(t *testing.T) {
	data := writable(t)
	examples := filepath.Join(repoRoot(t), "examples")
	start := time.Now()
	out := podman(t, runFlags("--rm", "--network", "none", "--read-only",
		"-v", examples+":/in:ro", "-v", data+":/data",
		imageTag, "run", "/in/vocabulary_1000.csv", "-o", "/data/cards.tsv", "--json", "--quiet")...)
	elapsed := time.Since(start)
	var sum struct {
		Items, OK, Failed, Cards int
		Simulated                bool
		ItemsPerSecond           float64 `json:"items_per_second"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, out)
	}
	if sum.Items != 1000 || sum.OK != 1000 || sum.Failed != 0 || !sum.Simulated {
		t.Fatalf("summary: %+v", sum)
	}
	t.Logf("flashpipe run in the container: 1,000 items in %s (container start to exit; %.0f items/s inside)", elapsed.Round(time.Millisecond), sum.ItemsPerSecond)
	checkTSV(t, filepath.Join(data, "cards.tsv"), sum.Cards)
	if _, err := os.Stat(filepath.Join(data, ".flashpipe", "flashpipe.db")); err != nil {
		t.Fatalf("the SQLite database is not in the volume: %v", err)
	}
}

// checkTSV checks the flashcards TSV: the header, cards numbered 1..N, and the 1,000
// items of the example in ascending position.
func checkTSV(t *testing.T, path string, cards int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != "position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level" {
		t.Fatalf("header: %q", lines[0])
	}
	if cards > 0 && len(lines)-1 != cards {
		t.Fatalf("%d cards in the TSV, the summary says %d", len(lines)-1, cards)
	}
	items, last := 0, 0
	for i, line := range lines[1:] {
		f := strings.Split(line, "\t")
		if len(f) != 9 || f[0] != strconv.Itoa(i+1) {
			t.Fatalf("line %d: %q", i+2, line)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil || n < last {
			t.Fatalf("line %d: term_number %q after %d", i+2, f[2], last)
		}
		if n != last {
			items++
			last = n
		}
	}
	if items != 1000 {
		t.Fatalf("%d items in the TSV, want 1000", items)
	}
}

type container struct {
	name string
	url  string // its health endpoint's base URL, if any
}

// testImageServices runs the services from the image against NATS and PostgreSQL on
// the host and submits the 1,000-item batch from the image.
func testImageServices(t *testing.T) {
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	natsURL := srv.ClientURL()
	dbURL := pgtest.URL(t)
	prefix := natstest.UniquePrefix(t)
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ports := freeport.List(t, 5)
	simURL := fmt.Sprintf("http://127.0.0.1:%d/api/v1", ports[4])

	// migrate: a one-shot that must succeed before the sink starts.
	out := podman(t, runFlags("--rm", "--network", "host", "-e", "FLASHPIPE_POSTGRES_URL="+dbURL, imageTag, "migrate")...)
	if !strings.Contains(out, "migrations applied") {
		t.Fatalf("migrate: %s", out)
	}

	env := []string{"-e", "FLASHPIPE_NATS_URL=" + natsURL, "-e", "FLASHPIPE_PREFIX=" + prefix, "-e", "FLASHPIPE_LOG_FORMAT=json"}
	var started []container
	t.Cleanup(func() {
		for _, c := range started {
			if t.Failed() {
				logs, _ := podmanErr("logs", "--tail", "30", c.name)
				t.Logf("logs of %s:\n%s", c.name, logs)
			}
			_, _ = podmanErr("rm", "-f", "-t", "5", c.name)
		}
	})
	start := func(name string, port int, args ...string) container {
		c := container{name: "fp-" + name + "-" + suffix}
		flags := []string{"-d", "--name", c.name, "--network", "host", "--read-only"}
		if port != 0 {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			c.url = "http://" + addr
			flags = append(flags, "-e", "FLASHPIPE_METRICS_ADDR="+addr,
				"--health-cmd", `["flashpipe","healthcheck","--url","`+c.url+`/readyz"]`, "--health-interval", "0")
		}
		flags = append(append(flags, env...), imageTag)
		podman(t, runFlags(append(flags, args...)...)...)
		started = append(started, c)
		return c
	}
	rpm := cmp.Or(os.Getenv("FLASHPIPE_IMAGE_TEST_RPM"), "0")
	timer := time.Now()
	start("simulator", 0, "simulate-api", "--addr", fmt.Sprintf("127.0.0.1:%d", ports[4]))
	services := []container{
		start("sink", ports[0], "sink", "--postgres-url", dbURL),
		start("sequencer", ports[1], "sequencer"),
		start("processor-1", ports[2], "processor", "--api-base-url", simURL, "--rate-limit-rpm", rpm),
		start("processor-2", ports[3], "processor", "--api-base-url", simURL, "--rate-limit-rpm", rpm),
	}
	for _, c := range services {
		natstest.Eventually(t, 60*time.Second, func() bool {
			resp, err := http.Get(c.url + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, "%s never ready", c.name)
		// The container's own healthcheck: `flashpipe healthcheck` inside the image.
		if out, err := podmanErr("healthcheck", "run", c.name); err != nil {
			t.Fatalf("healthcheck of %s: %v %s", c.name, err, out)
		}
	}
	t.Logf("services started and ready in %s", time.Since(timer).Round(time.Millisecond))

	data := writable(t)
	examples := filepath.Join(repoRoot(t), "examples")
	timer = time.Now()
	out = podman(t, runFlags(append(append([]string{"--rm", "--network", "host", "-v", examples + ":/in:ro", "-v", data + ":/data"}, env...),
		imageTag, "submit", "/in/vocabulary_1000.csv", "--wait", "-o", "/data/cards.tsv", "--json", "--quiet")...)...)
	elapsed := time.Since(timer)
	var sum struct {
		BatchID   string `json:"batch_id"`
		Items, OK int
		Cards     int
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("submit summary: %v\n%s", err, out)
	}
	if sum.Items != 1000 || sum.OK != 1000 {
		t.Fatalf("submit: %+v", sum)
	}
	t.Logf("submit --wait from the image: 1,000 items through 2 processor containers (RATE_LIMIT_RPM=%s) in %s", rpm, elapsed.Round(time.Millisecond))
	checkTSV(t, filepath.Join(data, "cards.tsv"), sum.Cards)

	// Stored by the sink container, complete and in order.
	ctx := context.Background()
	st, err := postgres.Open(ctx, dbURL, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var status flashpipe.BatchStatus
	natstest.Eventually(t, 60*time.Second, func() bool {
		status, err = st.Batch(ctx, sum.BatchID)
		return err == nil && status.State == flashpipe.BatchComplete
	}, "batch %s not stored complete: %+v %v", sum.BatchID, &status, err)
	if status.Done != 1000 || status.OK != 1000 {
		t.Fatalf("stored: %+v", status)
	}
	seq, last := 0, int64(0)
	err = st.Results(ctx, sum.BatchID, flashpipe.ResultFilter{}, func(r flashpipe.Result) error {
		seq++
		if r.Seq != seq || r.Position <= last {
			return fmt.Errorf("result %d: seq %d position %d after %d", seq, r.Seq, r.Position, last)
		}
		last = r.Position
		return nil
	})
	if err != nil || seq != 1000 {
		t.Fatalf("stored results: %d, %v", seq, err)
	}
}
