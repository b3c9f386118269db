package stages_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/stages"
)

// The machines this runs on are shared: besides ns/op (wall clock), each benchmark
// reports cpu-ns/op, the process's CPU time per operation, which other processes do
// not inflate.

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs op b.N times and reports cpu-ns/op.
func loop(b *testing.B, op func()) {
	b.Helper()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func BenchmarkParseStage1(b *testing.B) {
	content := readTestdata(b, "stage1_answer.json")
	b.SetBytes(int64(len(content)))
	loop(b, func() {
		if _, err := stages.ParseStage1(content, item); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkParseStage1Fenced(b *testing.B) {
	content := "Here it is:\n```json\n" + readTestdata(b, "stage1_answer.json") + "\n```\nDone."
	loop(b, func() {
		if _, err := stages.ParseStage1(content, item); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkParseStage2(b *testing.B) {
	content := readTestdata(b, "stage2_answer.json")
	a := parsedAnalysis(b)
	b.SetBytes(int64(len(content)))
	loop(b, func() {
		if _, err := stages.ParseStage2(content, item, a); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkStage1Request(b *testing.B) {
	cfg := stages.DefaultConfig()
	loop(b, func() {
		stages.Stage1Request(cfg, item)
	})
}

func BenchmarkStage2Request(b *testing.B) {
	cfg := stages.DefaultConfig()
	a := parsedAnalysis(b)
	loop(b, func() {
		stages.Stage2Request(cfg, item, a)
	})
}

func BenchmarkStage2Key(b *testing.B) {
	cfg := stages.DefaultConfig()
	a := parsedAnalysis(b)
	loop(b, func() {
		stages.Stage2Key(cfg, item, a)
	})
}

func BenchmarkDecodeInputStage2(b *testing.B) {
	user := stages.Stage2Request(stages.DefaultConfig(), item, parsedAnalysis(b)).Messages[1].Content
	loop(b, func() {
		if _, err := stages.DecodeInput(user); err != nil {
			b.Fatal(err)
		}
	})
}
