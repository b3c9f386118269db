package ratelimit

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// The leaser: takes requests from the shared schedule for queued callers (see the
// package doc, "The request budget").

// interval is the spacing of requests at factor f.
func (l *Limiter) interval(f float64) time.Duration {
	return time.Duration(math.Ceil(float64(time.Second) / (l.perSec * f)))
}

// chunk is the most requests of a lease granted together at factor f.
func (l *Limiter) chunk(f float64) int {
	return max(1, int(l.perSec*f*l.cfg.Window.Seconds()/ChunkDivisor))
}

// maxLease is the most requests one lease takes at factor f: one Window's worth.
func (l *Limiter) maxLease(f float64) int {
	return max(1, int(l.perSec*f*l.cfg.Window.Seconds()))
}

// linger is how long a saturated replica waits for more callers before it leases, so
// that it leases for them together: the time of one chunk.
func (l *Limiter) linger() time.Duration { return l.cfg.Window / ChunkDivisor }

// hold is how long after its slot a leased request may still be granted.
func (l *Limiter) hold(interval time.Duration) time.Duration {
	return max(0, l.cfg.Window/2-interval)
}

func (l *Limiter) leaser() {
	defer l.wg.Done()
	lingered := false
	for !l.closed() {
		now := l.now()
		l.mu.Lock()
		l.distributeLocked(now)
		waiting := len(l.queue)
		need := waiting - l.heldLocked()
		gate := l.gateLocked(now)
		next := l.nextActiveLocked()
		fallback := l.fallback
		factor := l.throttle.factorAt(now, l.cfg.RecoverEvery)
		schedEnd, contended := l.schedEnd, l.contended
		l.mu.Unlock()
		switch {
		case waiting == 0:
			select {
			case <-l.done:
			case <-l.kick:
			case <-l.changed:
			}
		case gate.After(now):
			// A new caller re-checks too: with a test clock, time may have jumped.
			l.sleep(gate.Sub(now), l.kick)
		case !fallback && !l.nc.IsConnected():
			l.enterFallback(errDisconnected)
		case fallback:
			l.fallbackStep(now, factor)
		case need > 0:
			// Saturated (the schedule's end is beyond what may be granted now): a lease
			// taken now starts at that end anyway, so wait a chunk's time for more
			// callers and lease for all of them at once. Likewise when the last lease
			// collided with other replicas': fewer, larger leases collide less.
			saturated := schedEnd.Sub(now) > l.lookLead+l.linger()
			if !lingered && need < l.chunk(factor) && (saturated || contended) {
				lingered = true
				l.sleep(l.linger(), nil)
				continue
			}
			lingered = false
			l.leaseStep(need, factor)
		default: // every caller waiting has a leased request that is not due yet
			l.sleep(next.Sub(now), l.kick)
		}
	}
}

// sleep waits d, or until the state changes, a signal on also, or Close. It reports
// whether the whole d passed.
func (l *Limiter) sleep(d time.Duration, also chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.changed:
	case <-also: // nil: never
	case <-l.done:
	}
	return false
}

// leaseStep leases requests for need waiting callers and holds them, in chunks, each
// granted from Window/2 before its last slot on.
func (l *Limiter) leaseStep(need int, factor float64) {
	interval := l.interval(factor)
	k := min(need, l.maxLease(factor))
	first, err := l.lease(k, interval)
	switch {
	case errors.Is(err, errTooManyConflicts):
		return // contended: try again
	case err != nil:
		if !l.closed() {
			l.enterFallback(err)
		}
		return
	}
	now := l.now()
	hold, c := l.hold(interval), l.chunk(factor)
	l.mu.Lock()
	for i := 0; i < k; i += c {
		n := min(c, k-i)
		slot := first.Add(time.Duration(i) * interval)
		last := slot.Add(time.Duration(n-1) * interval)
		l.held = append(l.held, batch{n: n, first: slot, from: last.Add(-l.lookLead), expiry: later(slot.Add(hold), now)})
	}
	l.distributeLocked(now)
	l.mu.Unlock()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lease takes k consecutive requests from the shared schedule and returns the first
// one's slot. The schedule's value is "<end> <written>" (Unix nanoseconds): its end,
// and the writer's clock when it wrote it, to tell a schedule far ahead because many
// requests are leased from one far ahead because the writer's clock is.
func (l *Limiter) lease(k int, interval time.Duration) (first time.Time, err error) {
	iv := int64(interval)
	var start int64
	conflicts := l.st.conflicts.Load()
	_, _, err = l.cas(l.ctx, l.keySched, func(cur []byte) []byte {
		now := l.now().UnixNano()
		end, wrote, ok := parseSchedule(cur)
		if !ok && cur != nil {
			l.log.Warn("unreadable schedule replaced", "value", string(cur))
		}
		start = max(end, now)
		if ahead := wrote - now; ahead > int64(l.cfg.Window)+iv {
			l.warnSkew(time.Duration(ahead))
			start = now
		}
		return formatSchedule(start+int64(k)*iv, now)
	})
	if err != nil {
		return time.Time{}, err
	}
	l.st.leases.Add(1)
	end := time.Unix(0, start+int64(k)*iv)
	l.mu.Lock()
	l.schedEnd = end
	l.contended = l.st.conflicts.Load() > conflicts
	l.mu.Unlock()
	return time.Unix(0, start), nil
}

// parseSchedule reads a schedule's value; one written before the writer's clock was
// stored ("<end>") has wrote 0.
func parseSchedule(v []byte) (end, wrote int64, ok bool) {
	e, w, two := bytes.Cut(v, []byte(" "))
	end, err := strconv.ParseInt(string(e), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if two {
		if wrote, err = strconv.ParseInt(string(w), 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return end, wrote, true
}

func formatSchedule(end, wrote int64) []byte {
	b := strconv.AppendInt(nil, end, 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, wrote, 10)
}

func (l *Limiter) warnSkew(ahead time.Duration) {
	now := time.Now().Unix()
	if last := l.skewLogged.Load(); now-last >= 60 && l.skewLogged.CompareAndSwap(last, now) {
		l.log.Warn("shared schedule was written by a clock far ahead of this replica's: clock skew? ignoring it",
			"ahead", ahead, "window", l.cfg.Window)
	}
}

// fallbackStep grants one request of the local share, or waits while there is none.
func (l *Limiter) fallbackStep(now time.Time, factor float64) {
	l.mu.Lock()
	share := rate.Limit(l.perSec * factor * l.shareLocked(now))
	fb := l.fb
	l.mu.Unlock()
	if share == 0 {
		l.sleep(ProbeInterval, nil)
		return
	}
	if fb.Limit() != share {
		fb.SetLimitAt(now, share)
	}
	r := fb.ReserveN(now, 1)
	if !r.OK() {
		l.sleep(time.Second, nil)
		return
	}
	if d := r.DelayFrom(now); d > 0 && !l.sleep(d, nil) {
		r.CancelAt(l.now())
		return
	}
	now = l.now()
	l.mu.Lock()
	if l.fallback {
		l.held = append(l.held, batch{n: 1, expiry: now})
		l.distributeLocked(now)
	}
	l.mu.Unlock()
}

// enterFallback switches to the local share after a failed KV operation. Requests
// leased from the shared schedule and not granted yet are dropped: every replica that
// lost NATS spends its share alone.
func (l *Limiter) enterFallback(err error) {
	l.st.errors.Add(1)
	now := l.now()
	l.mu.Lock()
	if l.fallback || l.closed() {
		l.mu.Unlock()
		return
	}
	l.fallback = true
	l.held = l.held[:0]
	factor := l.throttle.factorAt(now, l.cfg.RecoverEvery)
	share := l.shareLocked(now)
	replicas := l.divisorLocked()
	// Start with an empty bucket: the first request of the share comes after one
	// interval, not at once on every replica.
	l.fb = rate.NewLimiter(rate.Limit(l.perSec*factor*share), 1)
	l.fb.AllowN(now, 1)
	l.mu.Unlock()
	l.st.fallbacks.Add(1)
	l.log.Warn("NATS unreachable: using a local share of the rate limit until it is back",
		"err", err, "replicas", replicas, "share", round(share),
		"rpm_share", round(l.perSec*factor*share*60), "tpm_share", round(l.perMin*factor*share))
	signal(l.changed)
}
