package app_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// outsideProgram is a program in another module that runs a batch on the embedded
// stack with nothing but the public packages: the root package and app. It must
// compile (no internal package needed to configure or submit) and run.
const outsideProgram = `package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := app.StackConfig{DataDir: os.Args[1]}
	cfg.NATS.Port = -1
	cfg.Processor.RateLimit.RPM = -1
	cfg.Sim.Latency = time.Millisecond
	st, err := app.StartStack(ctx, cfg)
	if err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	defer st.Stop()
	items := app.SliceItems([]flashpipe.Item{
		{Position: 1, Term: "사과", Type: "vocabulary"},
		{Position: 2, Term: "바다", Type: "vocabulary"},
	})
	sum, err := st.RunBatch(ctx, app.BatchRun{Batch: app.Batch{ID: "outside", Source: "outside", Items: items}})
	if err != nil {
		fmt.Println("run:", err)
		os.Exit(1)
	}
	fmt.Printf("ok=%d failed=%d\n", sum.OK, sum.Failed)
}
`

func TestUsableFromOutsideTheModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program in another module")
	}
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(here))
	dir := t.TempDir()
	gomod := "module example.com/upstream\n\ngo 1.26\n\nrequire github.com/flashpipe/flashpipe v0.0.0\n\nreplace github.com/flashpipe/flashpipe => " + root + "\n"
	must(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(outsideProgram), 0o644))

	tidy := exec.Command("go", "mod", "tidy")
	tidy.Dir = dir
	tidy.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := tidy.CombinedOutput(); err != nil {
		t.Fatalf("go mod tidy in a module outside: %v\n%s", err, out)
	}
	run := exec.Command("go", "run", ".", filepath.Join(dir, "data"))
	run.Dir = dir
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("a program outside the module using app: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ok=2 failed=0") {
		t.Fatalf("outside program printed %q, want ok=2 failed=0", out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
