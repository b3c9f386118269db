package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// services are the long-running flashpipe services: each serves /metrics, /healthz and
// /readyz on its metrics address and runs behind a healthcheck or probes.
var services = []string{"processor", "sequencer", "sink"}

// commonEnv is what every flashpipe container of a file may be given even when its own
// command ignores it (compose anchors, a ConfigMap shared by all): settings every
// service knows.
func commonEnv(t *testing.T, name string) bool {
	t.Helper()
	for _, s := range services {
		if !flashpipeCLI(t).env[s][name] {
			return false
		}
	}
	return true
}

// goRuntimeEnv are environment variables of the Go runtime, not of flashpipe.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true}

// flashpipeHelp is what `flashpipe COMMAND --help` says each command accepts.
type flashpipeHelp struct {
	env   map[string]map[string]bool // command -> environment variable names
	flags map[string]map[string]bool // command -> --flag names
}

var (
	cliOnce   sync.Once
	cliResult flashpipeHelp
	cliErr    string
)

var (
	envInHelp  = regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)
	flagInHelp = regexp.MustCompile(`(?m)^\s+(?:-[a-z], )?(--[a-z0-9-]+)`)
)

// flashpipeCLI builds the flashpipe binary once and reads the help of every command
// the deployment files run, so a test can check the files use the real names.
func flashpipeCLI(t *testing.T) flashpipeHelp {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flashpipe-deploy-*")
		if err != nil {
			cliErr = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "flashpipe")
		build := exec.Command("go", "build", "-o", bin, "./cmd/flashpipe")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			cliErr = "build flashpipe: " + err.Error() + "\n" + string(out)
			return
		}
		cliResult = flashpipeHelp{env: map[string]map[string]bool{}, flags: map[string]map[string]bool{}}
		for _, cmd := range []string{"processor", "sequencer", "sink", "api", "migrate", "simulate-api", "submit", "healthcheck", "run", "dev"} {
			var out bytes.Buffer
			c := exec.Command(bin, cmd, "--help")
			c.Stdout, c.Stderr = &out, &out
			if err := c.Run(); err != nil {
				cliErr = "flashpipe " + cmd + " --help: " + err.Error() + "\n" + out.String()
				return
			}
			env, flags := map[string]bool{}, map[string]bool{}
			for _, m := range envInHelp.FindAllStringSubmatch(out.String(), -1) {
				env[m[1]] = true
			}
			for _, m := range flagInHelp.FindAllStringSubmatch(out.String(), -1) {
				flags[m[1]] = true
			}
			cliResult.env[cmd], cliResult.flags[cmd] = env, flags
		}
	})
	if cliErr != "" {
		t.Fatal(cliErr)
	}
	return cliResult
}

// checkArgs checks that args (a container's command) name a flashpipe command and only
// flags that command has.
func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no flashpipe command", where)
		return
	}
	flags, ok := flashpipeCLI(t).flags[args[0]]
	if !ok {
		t.Errorf("%s: %q is not a flashpipe command the deployment files are expected to run", where, args[0])
		return
	}
	for _, a := range args[1:] {
		if name, _, _ := strings.Cut(a, "="); strings.HasPrefix(name, "--") && !flags[name] {
			t.Errorf("%s: flashpipe %s has no flag %s", where, args[0], name)
		}
	}
}

// checkEnv checks that every variable given to a container running command is one
// flashpipe reads there (or a setting all services share, or the Go runtime's).
func checkEnv(t *testing.T, where, command string, names []string) {
	t.Helper()
	known := flashpipeCLI(t).env[command]
	for _, name := range names {
		if !known[name] && !goRuntimeEnv[name] && !commonEnv(t, name) {
			t.Errorf("%s: flashpipe %s reads no environment variable %s", where, command, name)
		}
	}
}

// metricNames returns the names of the metrics the services register.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	rec := &descRecorder{names: map[string]bool{}}
	processor.NewMetrics(rec)
	sequencer.NewMetrics(rec)
	sink.NewMetrics(rec)
	scheduler.NewMetrics(rec)
	refusal.New(nil, nil, "", nil, rec)
	if len(rec.names) == 0 {
		t.Fatal("no metric registered")
	}
	return rec.names
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// descRecorder is a prometheus.Registerer that records the names of what is
// registered (a Registry gathers only metrics that have values).
type descRecorder struct{ names map[string]bool }

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *descRecorder) Unregister(prometheus.Collector) bool { return false }

// natsExporterMetrics are the prometheus-nats-exporter metrics (-jsz=all -prefix=nats)
// the rules may use.
var natsExporterMetrics = map[string]bool{
	"nats_consumer_num_pending": true, "nats_consumer_num_ack_pending": true,
	"nats_consumer_num_redelivered": true, "nats_consumer_num_waiting": true,
	"nats_stream_total_messages": true, "nats_stream_total_bytes": true,
}

// knownMetric reports whether a metric name used in a query exists: a flashpipe metric
// (with a histogram's suffixes), an exporter's, or Prometheus's own up.
func knownMetric(code map[string]bool, name string) bool {
	if code[name] || natsExporterMetrics[name] || name == "up" {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && code[base] {
			return true
		}
	}
	return false
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
