package chaos

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// service is one flashpipe service run as a child process: started, killed with
// SIGKILL and started again with the same arguments. Its stdout and stderr (JSON logs)
// go to one file in the test's temporary directory, appended across restarts; the tail
// of it is shown when the test fails. A process that exits without being killed is an
// error of the test (a service must not give up on a fault).
type service struct {
	t       *testing.T
	name    string
	args    []string
	env     []string
	logPath string

	mu         sync.Mutex
	cur        *child
	starts     int
	logOffset  int64    // size of the log file when the current process started
	unexpected []string // exits nobody asked for
}

// child is one run of a service's process.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has been reaped
	killed bool          // set (under service.mu) before the test kills it
	err    error
}

func newService(t *testing.T, tag, name string, env []string, args ...string) *service {
	t.Helper()
	s := &service{t: t, name: name, args: args, env: env, logPath: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("--- %s: last lines of %s (%d starts)\n%s", s.name, s.logPath, s.starts, tailFile(s.logPath, 40))
		}
		keepLog(t, tag, s.logPath)
	})
	return s
}

// start starts a new process of the service.
func (s *service) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		select {
		case <-s.cur.done:
		default:
			s.t.Fatalf("%s: start while a process is running", s.name)
		}
	}
	f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	if fi, err := f.Stat(); err == nil {
		s.logOffset = fi.Size()
	}
	s.starts++
	fmt.Fprintf(f, "=== chaos: %s start #%d at %s\n", s.name, s.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(binary, s.args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = f, f
	// The child dies with the test process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("%s: start: %v", s.name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	s.cur = c
	n := s.starts
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		c.err = err
		if !c.killed {
			s.unexpected = append(s.unexpected, fmt.Sprintf("%s process #%d (pid %d) exited on its own at %s: %v",
				s.name, n, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), err))
		}
		s.mu.Unlock()
		close(c.done)
	}()
}

// kill sends SIGKILL to the running process and waits until it is reaped. It returns
// when the kill was sent.
func (s *service) kill() time.Time {
	s.t.Helper()
	s.mu.Lock()
	c := s.cur
	if c == nil {
		s.mu.Unlock()
		s.t.Fatalf("%s: kill before start", s.name)
	}
	c.killed = true
	s.mu.Unlock()
	at := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("%s: process %d not reaped 30 s after SIGKILL", s.name, c.cmd.Process.Pid)
	}
	return at
}

// stop kills the running process, if any (cleanup).
func (s *service) stop() {
	s.mu.Lock()
	c := s.cur
	if c != nil {
		c.killed = true
	}
	s.mu.Unlock()
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
	}
}

// checkAlive fails the test for every exit of the service nobody asked for.
func (s *service) checkAlive() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.unexpected {
		s.t.Errorf("%s", u)
	}
	s.unexpected = nil
}

// failIfExited fails the test at once if the current process has exited.
func (s *service) failIfExited() {
	s.t.Helper()
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	select {
	case <-c.done:
		s.t.Fatalf("%s exited on its own: %v\n--- last lines of its log:\n%s", s.name, c.err, tailFile(s.logPath, 15))
	default:
	}
}

// waitLog waits until the current process's log holds substr.
func (s *service) waitLog(substr string, within time.Duration) {
	s.t.Helper()
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	waitFor(s.t, within, func() bool {
		select {
		case <-c.done:
			s.t.Fatalf("%s exited before logging %q: %v\n%s", s.name, substr, c.err, tailFile(s.logPath, 20))
		default:
		}
		return s.logged(substr)
	}, "%s to log %q", s.name, substr)
}

// logged reports whether the current process's log holds substr.
func (s *service) logged(substr string) bool {
	s.mu.Lock()
	off := s.logOffset
	s.mu.Unlock()
	b, err := os.ReadFile(s.logPath)
	return err == nil && int64(len(b)) > off && bytes.Contains(b[off:], []byte(substr))
}

// envKeepLogs names a directory to copy every log of every scenario into.
const envKeepLogs = "CHAOS_KEEP_LOGS"

// keepLog copies a log file into $CHAOS_KEEP_LOGS, if set, named after the test and
// tag (unique to the test run).
func keepLog(t *testing.T, tag, path string) {
	dir := os.Getenv(envKeepLogs)
	if dir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + tag + "-" + filepath.Base(path)
		err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	if err != nil {
		t.Logf("keep log %s: %v", path, err)
	}
}

// tailFile returns the last n lines of a file, each cut to a readable length.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 600 {
			lines[i] = l[:600] + " ..."
		}
	}
	return strings.Join(lines, "\n")
}

// childEnv is the test's environment without flashpipe settings, API keys or
// database URLs, plus JSON logs and an API key for the simulator.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FLASHPIPE_") || strings.HasPrefix(kv, "OPENROUTER_") || strings.HasPrefix(kv, "DATABASE_URL=") ||
			strings.HasPrefix(kv, "CONCURRENT_MAX=") || strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "RETRY_MAX_ATTEMPTS=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "FLASHPIPE_LOG_FORMAT=json", "OPENROUTER_API_KEY=chaos-test-key")
}

// waitFor polls cond every few milliseconds until it holds, failing the test after
// within with what it waited for.
func waitFor(t *testing.T, within time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: "+format, append([]any{within}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
