package backoff_test

import (
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/backoff"
)

func TestDelayGrowsThenCapsWithinJitter(t *testing.T) {
	t.Parallel()
	base, max := 100*time.Millisecond, 2*time.Second
	for attempt, nominal := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: 1600 * time.Millisecond, 6: max, 40: max, 1000: max} {
		for range 200 {
			if d := backoff.Delay(attempt, base, max); d < nominal/2 || d > nominal {
				t.Fatalf("attempt %d: %s, want within [%s, %s]", attempt, d, nominal/2, nominal)
			}
		}
	}
	if d := backoff.Delay(3, 0, max); d != 0 {
		t.Fatalf("zero base: %s", d)
	}
}
