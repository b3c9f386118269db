package ratelimit_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/ratelimit"
)

// The replicas benchmark's limit: the provider allowing 10,000 requests a
// minute, all of it used (Buffer 1): 166.7 requests per second.
const (
	replicasRPM    = 10000
	replicasPerSec = replicasRPM / 60.0
)

// cpuTime is the process's user plus system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplicas runs 4, 16 and 100 saturating replicas (each its own Limiter on
// its own NATS connection, 4 callers each) on one 10,000 RPM limit for 20 s (after 2 s
// of warm-up) and
// reports the share of the budget they were granted (%budget), the compare-and-set
// conflicts per second (conflicts/s), the leases (KV writes) per second (leases/s)
// and the CPU of the whole process, the embedded NATS server included, in cores
// (cpu-cores). It fails if the budget is exceeded over any interval by more than one
// Window's worth:
//
//	go test -run '^$' -bench Replicas -benchtime 1x -timeout 10m ./internal/ratelimit/
func BenchmarkReplicas(b *testing.B) {
	for _, n := range []int{4, 16, 100} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			r := newRig(b)
			var ls []*ratelimit.Limiter
			for range n {
				ls = append(ls, r.limiter(b, ratelimit.Config{RPM: replicasRPM, Buffer: 1}))
			}
			// Warm up: the first Waits of every replica at the same instant race for
			// the schedule, which is not the steady state measured.
			run(b, ls, 4, 2*time.Second)
			for b.Loop() {
				cpu0 := cpuTime(b)
				var conflicts0, leases0 int64
				for _, l := range ls {
					st := l.Stats()
					conflicts0 += st.Conflicts
					leases0 += st.Leases
				}
				const d = 20 * time.Second
				g, start, end := run(b, ls, 4, d)
				cpu := cpuTime(b) - cpu0
				var conflicts, leases int64
				for _, l := range ls {
					st := l.Stats()
					conflicts += st.Conflicts
					leases += st.Leases
				}
				b.ReportMetric(100*utilisation(b, g, start, end, replicasPerSec, 0.95), "%budget")
				b.ReportMetric(float64(conflicts-conflicts0)/d.Seconds(), "conflicts/s")
				b.ReportMetric(float64(leases-leases0)/d.Seconds(), "leases/s")
				b.ReportMetric(cpu.Seconds()/d.Seconds(), "cpu-cores")
				checkBound(b, g.sorted(), replicasPerSec, ratelimit.DefaultWindow, 2)
			}
		})
	}
}
