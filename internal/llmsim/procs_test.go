package llmsim_test

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// cpuTime is the CPU time (user + system) this process has used so far: client and
// simulator together, the number that matters on a shared machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRates reports the wall-clock rate and the CPU time per operation; on a busy
// machine the second is the stable one (2 cores / cpu-µs/op is the rate on two free
// cores).
func reportRates(b *testing.B, unit string, start time.Time, cpu0 time.Duration) {
	b.Helper()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/wall.Seconds(), unit+"/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
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
