// Package backoff computes the waits between retries, one way for the whole project:
// exponential from a base, capped, with jitter so that replicas failing together do
// not retry together.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns the wait before retry number attempt (1 for the first retry):
// base * 2^(attempt-1), capped at max, then jittered to a uniform value in [d/2, d]
// ("equal jitter": never less than half the nominal wait, so a storm of failures is
// still slowed down). Safe for concurrent use.
func Delay(attempt int, base, max time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base << min(attempt-1, 30)
	if d <= 0 || d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}
