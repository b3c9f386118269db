package main

import (
	"bytes"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/internal/testutil/tcpproxy"
)

// child is the built binary running as a service, its stderr kept.
type child struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startChild starts `flashpipe args...`; it is killed when the test ends.
func startChild(t *testing.T, name string, args ...string) *child {
	t.Helper()
	c := &child{t: t, name: name, done: make(chan error, 1)}
	c.cmd = exec.Command(binary, args...)
	c.cmd.Env = cleanEnv()
	c.cmd.Stderr, c.cmd.Stdout = c, c
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// waitLog waits until the child's log holds want.
func (c *child) waitLog(want string, within time.Duration) {
	c.t.Helper()
	natstest.Eventually(c.t, within, func() bool { return strings.Contains(c.log(), want) },
		"%s never logged %q; its log:\n%s", c.name, want, c.log())
}

// A sink and a processor started before NATS and Postgres are reachable wait for
// them, saying so, and then work; with --fail-fast they exit at once instead.
func TestServicesStartedBeforeTheirDependencies(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{})
	natsProxy := tcpproxy.StartCut(t, strings.TrimPrefix(p.URL, "nats://"))
	pgURL, pgAddr := pgtest.Through(t, p.PostgresURL, "")
	pgProxy := tcpproxy.StartCut(t, pgAddr)
	pgURL, _ = pgtest.Through(t, pgURL, pgProxy.Addr())
	natsURL := "nats://" + natsProxy.Addr()
	common := []string{"--nats-url", natsURL, "--prefix", p.Contract.Prefix(), "--log-format", "json"}

	start := time.Now()
	failFast := exec.Command(binary, append([]string{"sink", "--postgres-url", pgURL, "--fail-fast"}, common...)...)
	failFast.Env = cleanEnv()
	out, err := failFast.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "could not reach the database") || time.Since(start) > 30*time.Second {
		t.Fatalf("sink --fail-fast before Postgres: %v after %s, output:\n%s", err, time.Since(start), out)
	}

	sink := startChild(t, "sink", append([]string{"sink", "--postgres-url", pgURL, "--auto-migrate"}, common...)...)
	proc := startChild(t, "processor", append([]string{"processor", "--api-base-url", p.APIURL, "--api-key", apptest.APIKey,
		"--rate-limit-rpm", "0"}, common...)...)
	sink.waitLog(`"msg":"waiting for the database"`, 30*time.Second)
	proc.waitLog(`"msg":"waiting for NATS at nats://`+natsProxy.Addr(), 30*time.Second)

	pgProxy.Restore()
	sink.waitLog(`"msg":"waiting for NATS at nats://`+natsProxy.Addr(), 30*time.Second)
	natsProxy.Restore()
	sink.waitLog(`"msg":"sink started"`, 30*time.Second)
	proc.waitLog(`"msg":"processor started"`, 30*time.Second)

	p.StartSequencer(sequencer.Config{})
	items := loadItems(t, "../../examples/test_5_words.csv")
	p.Submit("late", items)
	st := p.WaitStored("late", 0, time.Minute)
	if st.OK != len(items) {
		t.Fatalf("status %+v", st)
	}
	checkStored(t, p.Results("late"), items, 3)
	for _, c := range []*child{sink, proc} {
		select {
		case err := <-c.done:
			t.Fatalf("%s exited: %v\n%s", c.name, err, c.log())
		default:
		}
	}
}
