package wire

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs op b.N times and reports cpu-ns/op (this machine may be shared).
func loop(b *testing.B, op func()) {
	b.Helper()
	cpu0 := cpuTime()
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

var sinkBool bool

func BenchmarkSkipString(b *testing.B) {
	s := AppendString(nil, strings.Repeat("You are a Korean lexicographer and memory coach.\n- \"term\" (string): the term. ", 60))
	b.SetBytes(int64(len(s)))
	var d Decoder
	loop(b, func() {
		d.Reset(s)
		sinkBool = d.Skip()
	})
}

func BenchmarkStringBytes(b *testing.B) {
	s := AppendString(nil, strings.Repeat("You are a Korean lexicographer and memory coach.\n- \"term\" (string): the term. ", 60))
	b.SetBytes(int64(len(s)))
	var d Decoder
	loop(b, func() {
		d.Reset(s)
		_, _, sinkBool = d.StringBytes()
	})
}

func BenchmarkAppendString(b *testing.B) {
	s := strings.Repeat("You are a Korean lexicographer and memory coach.\n- \"term\" (string): the term. ", 60)
	b.SetBytes(int64(len(s)))
	buf := make([]byte, 0, 8192)
	loop(b, func() {
		buf = AppendString(buf[:0], s)
	})
}

// Many escapes and no quote until the end: each byte must be looked at once.
func BenchmarkSkipStringNewlines(b *testing.B) {
	s := AppendString(nil, strings.Repeat("a line of prompt text without any quote characters\n", 100))
	b.SetBytes(int64(len(s)))
	var d Decoder
	loop(b, func() {
		d.Reset(s)
		sinkBool = d.Skip()
	})
}
