package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// binary is the flashpipe binary every scenario runs as child processes, built once.
var binary string

const (
	binDirPrefix = "flashpipe-chaos-bin-"
	ownerFile    = "owner.pid"
)

func TestMain(m *testing.M) {
	// A test process that was killed leaves its binary directory: remove those.
	removeStaleBinDirs()
	dir, err := os.MkdirTemp("", binDirPrefix+"*")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "flashpipe")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/flashpipe")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: build flashpipe: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// removeStaleBinDirs deletes binary directories left by test processes that are gone.
func removeStaleBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = os.RemoveAll(d)
	}
}
