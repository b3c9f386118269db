//go:build race

// Package race tells tests whether the race detector is on: it slows code by 2 to 20
// times, so a test that also checks a rate or a latency (besides its correctness
// assertions) skips that check under it.
package race

// Enabled is true when the binary was built with -race.
const Enabled = true
