package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// errDisconnected is the error of a KV operation not tried because the connection is
// down (trying would wait in the reconnect buffer for OpTimeout).
var errDisconnected = errors.New("ratelimit: not connected to NATS")

// throttleState is the value of "<key>.throttle".
type throttleState struct {
	// Until is the end of the cooldown: no replica sends a request before it.
	Until time.Time `json:"until,omitzero"`
	// Factor is the rate factor as of Decreased (0 or 1: full rate).
	Factor float64 `json:"factor,omitempty"`
	// Decreased is when Factor was set; the factor recovers from then on.
	Decreased time.Time `json:"decreased,omitzero"`
}

func (s throttleState) equal(o throttleState) bool {
	return s.Until.Equal(o.Until) && s.Factor == o.Factor && s.Decreased.Equal(o.Decreased)
}

// factorAt is the rate factor at now: Factor plus RecoverStep for every whole
// recoverEvery since Decreased, at most 1.
func (s throttleState) factorAt(now time.Time, recoverEvery time.Duration) float64 {
	if s.Factor <= 0 || s.Factor >= 1 || s.Decreased.IsZero() {
		return 1
	}
	steps := max(0, int64(now.Sub(s.Decreased)/recoverEvery))
	f := s.Factor + float64(steps)*RecoverStep
	if f > 1-1e-9 {
		return 1
	}
	return f
}

// throttled returns the state after a 429 at now asking for a cooldown until until,
// and whether it differs. The factor drops only if no cooldown was active: one drop per
// burst of 429s.
func (s throttleState) throttled(now, until time.Time, cfg Config) (throttleState, bool) {
	next := s
	if !now.Before(s.Until) {
		next.Factor = max(cfg.MinRateFactor, s.factorAt(now, cfg.RecoverEvery)*DecreaseFactor)
		next.Decreased = now
	}
	if until.After(next.Until) {
		next.Until = until
	}
	return next, !next.equal(s)
}

// minute is token counts in one-second buckets, oldest first: the value of
// "<key>.tokens" and the local views of it.
type minute struct {
	B []bucket `json:"b"`
}

type bucket struct {
	Sec int64 `json:"s"` // Unix second
	N   int64 `json:"n"` // tokens
}

// span is how many one-second buckets count as the last minute: 61, so a bucket leaves
// only when all of it is more than a minute old.
const span = 61

func (m *minute) add(sec, n int64) {
	i, found := slices.BinarySearchFunc(m.B, sec, func(b bucket, s int64) int { return compare(b.Sec, s) })
	if found {
		m.B[i].N += n
		return
	}
	m.B = slices.Insert(m.B, i, bucket{Sec: sec, N: n})
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// prune drops the buckets outside the minute ending at second now.
func (m *minute) prune(now int64) {
	i := 0
	for i < len(m.B) && m.B[i].Sec <= now-span {
		i++
	}
	if i > 0 {
		m.B = append(m.B[:0], m.B[i:]...)
	}
}

// merged returns m plus o, in a new minute.
func (m minute) merged(o minute) minute {
	out := minute{B: slices.Clone(m.B)}
	for _, b := range o.B {
		out.add(b.Sec, b.N)
	}
	return out
}

// subtract removes o's counts from m (what was flushed), dropping empty buckets.
func (m *minute) subtract(o minute) {
	for _, b := range o.B {
		m.add(b.Sec, -b.N)
	}
	m.B = slices.DeleteFunc(m.B, func(b bucket) bool { return b.N <= 0 })
}

// sum is the tokens of the minute ending at second now.
func (m minute) sum(now int64) int64 {
	var n int64
	for _, b := range m.B {
		if b.Sec > now-span {
			n += b.N
		}
	}
	return n
}

// openAt returns when the tokens of the last minute fall below limit (a time not
// after now if they already are).
func (m minute) openAt(now int64, limit float64) time.Time {
	sum := m.sum(now)
	if float64(sum) < limit {
		return time.Time{}
	}
	for _, b := range m.B {
		if b.Sec <= now-span {
			continue
		}
		sum -= b.N
		if float64(sum) < limit {
			return time.Unix(b.Sec+span, 0)
		}
	}
	return time.Unix(now+span, 0)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// cas runs one compare-and-set of key: read, let next compute the new value (nil:
// nothing to write), write with the revision read. A conflict (another writer won) is
// counted and retried after a random pause that grows with the attempts, so that
// writers racing for the key spread out instead of racing again. It returns the value
// and revision it wrote or found.
func (l *Limiter) cas(parent context.Context, key string, next func(cur []byte) []byte) (val []byte, rev uint64, err error) {
	for attempt := range maxCAS {
		if attempt > 0 && !l.pause(attempt) {
			return nil, 0, ErrClosed
		}
		if !l.nc.IsConnected() {
			return nil, 0, errDisconnected
		}
		ctx, cancel := context.WithTimeout(parent, l.cfg.OpTimeout)
		began := time.Now()
		var cur []byte
		rev = 0
		e, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			cancel()
			return nil, 0, fmt.Errorf("ratelimit: read %s: %w", key, err)
		default:
			cur, rev = e.Value(), e.Revision()
		}
		val = next(cur)
		if val == nil {
			cancel()
			return cur, rev, nil
		}
		var wrote uint64
		if rev == 0 {
			wrote, err = l.kv.Create(ctx, key, val)
		} else {
			wrote, err = l.kv.Update(ctx, key, val, rev)
		}
		cancel()
		l.timeAttempt(time.Since(began))
		switch {
		case isConflict(err):
			l.st.conflicts.Add(1)
			continue
		case err != nil:
			return nil, 0, fmt.Errorf("ratelimit: write %s: %w", key, err)
		}
		return val, wrote, nil
	}
	return nil, 0, errTooManyConflicts
}

// pause sleeps before the attempt-th retry of a compare-and-set: a random time up to
// u·2^(attempt-1), u the longer of casPause and the recent duration of one attempt (a
// loaded server widens the window in which writers collide), at most casPauseMax. It
// reports false if the Limiter closed.
func (l *Limiter) pause(attempt int) bool {
	u := max(casPause, time.Duration(l.casTime.Load()))
	d := min(u<<min(attempt-1, 10), casPauseMax)
	t := time.NewTimer(rand.N(d) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

var errTooManyConflicts = errors.New("ratelimit: too many concurrent writers")

// timeAttempt folds the duration of a compare-and-set attempt into the moving average
// pause uses (weight 1/8; racing updates may drop one, which does not matter).
func (l *Limiter) timeAttempt(d time.Duration) {
	old := l.casTime.Load()
	l.casTime.Store(old + (int64(d)-old)/8)
}

// shareThrottle records a 429's cooldown (and maybe a lower factor) in the bucket.
func (l *Limiter) shareThrottle(until time.Time) error {
	var st throttleState
	_, rev, err := l.cas(l.ctx, l.keyThrottle, func(cur []byte) []byte {
		st = decodeThrottle(cur)
		next, changed := st.throttled(l.now(), until, l.cfg)
		if !changed {
			return nil
		}
		st = next
		data, _ := json.Marshal(next) // plain fields: cannot fail
		return data
	})
	if err != nil {
		return err
	}
	l.applyThrottle(st, rev)
	return nil
}

func decodeThrottle(data []byte) throttleState {
	var st throttleState
	if len(data) > 0 {
		_ = json.Unmarshal(data, &st) // unreadable: no cooldown, full rate
	}
	return st
}

// applyThrottle takes a state read from the bucket (rev 0: deleted or fresh).
func (l *Limiter) applyThrottle(st throttleState, rev uint64) {
	now := l.now()
	l.mu.Lock()
	if rev != 0 && rev <= l.throttleRev {
		l.mu.Unlock()
		return
	}
	old := l.throttle.factorAt(now, l.cfg.RecoverEvery)
	l.throttle, l.throttleRev = st, rev
	f := st.factorAt(now, l.cfg.RecoverEvery)
	started := l.extendCooldownLocked(st.Until, now)
	l.loggedFactor = f
	l.mu.Unlock()
	if started {
		l.log.Warn("API rate limit hit: cooling down", "until", st.Until)
	}
	l.logFactor(old, f)
	signal(l.changed)
}

// flushTokens merges the tokens observed here into the shared minute.
func (l *Limiter) flushTokens(ctx context.Context) {
	l.mu.Lock()
	if l.fallback || len(l.pending.B) == 0 {
		l.mu.Unlock()
		return
	}
	snap := minute{B: slices.Clone(l.pending.B)}
	l.mu.Unlock()
	var m minute
	_, rev, err := l.cas(ctx, l.keyTokens, func(cur []byte) []byte {
		m = minute{}
		if len(cur) > 0 {
			_ = json.Unmarshal(cur, &m) // unreadable: start afresh
		}
		m = m.merged(snap)
		m.prune(l.now().Unix())
		data, _ := json.Marshal(m)
		return data
	})
	if err != nil {
		if !l.closed() && !errors.Is(err, errTooManyConflicts) { // contended: next tick
			l.enterFallback(err)
		}
		return
	}
	l.mu.Lock()
	l.pending.subtract(snap)
	if rev > l.sharedRev {
		l.shared, l.sharedRev = m, rev
	}
	l.mu.Unlock()
	signal(l.changed)
}

func (l *Limiter) applyTokens(m minute, rev uint64) {
	l.mu.Lock()
	if rev != 0 && rev <= l.sharedRev {
		l.mu.Unlock()
		return
	}
	m.prune(l.now().Unix())
	l.shared, l.sharedRev = m, rev
	l.mu.Unlock()
	signal(l.changed)
}

// watchers are the replica's watches of the shared keys.
type watchers struct {
	throttle, tokens jetstream.KeyWatcher
}

func (w *watchers) stop() {
	if w == nil {
		return
	}
	for _, kw := range []jetstream.KeyWatcher{w.throttle, w.tokens} {
		if kw == nil {
			continue
		}
		_ = kw.Stop()
		// Drain until the watcher closes its channel: its delivery goroutine may be
		// blocked handing us an update.
		t := time.NewTimer(time.Second)
		for open := true; open; {
			select {
			case _, open = <-kw.Updates():
			case <-t.C:
				open = false
			}
		}
		t.Stop()
	}
}

// watch starts the watches and applies the current values. Revisions start afresh:
// the bucket may be a new one.
func (l *Limiter) watch(ctx context.Context) (*watchers, error) {
	l.mu.Lock()
	l.throttleRev, l.sharedRev = 0, 0
	l.mu.Unlock()
	ws := &watchers{}
	var err error
	// The watches live until stopped: l.ctx, not ctx, which only bounds the start.
	if ws.throttle, err = l.kv.Watch(l.ctx, l.keyThrottle); err != nil {
		return nil, err
	}
	if l.perMin > 0 {
		if ws.tokens, err = l.kv.Watch(l.ctx, l.keyTokens); err != nil {
			ws.stop()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	for _, kw := range []jetstream.KeyWatcher{ws.throttle, ws.tokens} {
		if kw == nil {
			continue
		}
		for initial := true; initial; {
			select {
			case e, ok := <-kw.Updates():
				switch {
				case !ok:
					ws.stop()
					return nil, errors.New("watch ended")
				case e == nil:
					initial = false
				default:
					l.apply(e)
				}
			case <-ctx.Done():
				ws.stop()
				return nil, fmt.Errorf("initial values: %w", ctx.Err())
			}
		}
	}
	return ws, nil
}

func (l *Limiter) apply(e jetstream.KeyValueEntry) {
	var data []byte
	if e.Operation() == jetstream.KeyValuePut {
		data = e.Value()
	}
	switch e.Key() {
	case l.keyThrottle:
		l.applyThrottle(decodeThrottle(data), e.Revision())
	case l.keyTokens:
		var m minute
		if len(data) > 0 {
			_ = json.Unmarshal(data, &m)
		}
		l.applyTokens(m, e.Revision())
	}
}

// control applies watched changes, flushes observed tokens, heartbeats, probes NATS
// while in the fallback and logs the factor's recovery.
func (l *Limiter) control(ws *watchers) {
	defer l.wg.Done()
	probe := time.NewTicker(ProbeInterval)
	defer probe.Stop()
	beat := time.NewTicker(l.refreshEvery())
	defer beat.Stop()
	var flush <-chan time.Time
	if l.perMin > 0 {
		t := time.NewTicker(FlushInterval)
		defer t.Stop()
		flush = t.C
	}
	for {
		var thr, tok <-chan jetstream.KeyValueEntry
		if ws != nil {
			thr = ws.throttle.Updates()
			if ws.tokens != nil {
				tok = ws.tokens.Updates()
			}
		}
		select {
		case <-l.done:
			ws.stop()
			l.finalFlush()
			return
		case e, ok := <-thr:
			l.onUpdate(&ws, e, ok)
		case e, ok := <-tok:
			l.onUpdate(&ws, e, ok)
		case <-flush:
			l.flushTokens(l.ctx)
		case <-beat.C:
			l.mu.Lock()
			fallback := l.fallback
			l.mu.Unlock()
			if fallback { // the count stays as last read; recover heartbeats again
				continue
			}
			if err := l.heartbeat(l.ctx); err != nil && !l.closed() {
				l.enterFallback(err)
			}
		case <-probe.C:
			l.mu.Lock()
			fallback := l.fallback
			l.mu.Unlock()
			if fallback || ws == nil {
				ws = l.recover(ws)
			}
			l.logRecovery()
		}
	}
}

func (l *Limiter) onUpdate(ws **watchers, e jetstream.KeyValueEntry, ok bool) {
	if !ok { // the watch ended: restart it at the next probe
		(*ws).stop()
		*ws = nil
		l.log.Warn("watch of the shared limit ended; restarting it")
		return
	}
	if e != nil {
		l.apply(e)
	}
}

// recover re-creates the bucket if needed and restarts the watches; on success it
// leaves the fallback.
func (l *Limiter) recover(old *watchers) *watchers {
	old.stop()
	if !l.nc.IsConnected() {
		return nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.OpTimeout)
	defer cancel()
	if _, _, err := contract.EnsureKeyValue(ctx, l.js, l.bucketCfg); err != nil {
		l.st.errors.Add(1)
		l.log.Debug("rate limit bucket still unreachable", "err", err)
		return nil
	}
	if _, _, err := contract.EnsureKeyValue(ctx, l.js, l.hbCfg); err != nil {
		l.st.errors.Add(1)
		l.log.Debug("replicas bucket still unreachable", "err", err)
		return nil
	}
	ws, err := l.watch(ctx)
	if err != nil {
		l.st.errors.Add(1)
		l.log.Debug("rate limit watch failed", "err", err)
		return nil
	}
	// After a fallback, counted again from now: others may have dropped this replica
	// from their count meanwhile.
	l.mu.Lock()
	if l.fallback {
		l.countedSince = time.Time{}
	}
	l.mu.Unlock()
	if err := l.heartbeat(ctx); err != nil {
		l.st.errors.Add(1)
		ws.stop()
		l.log.Debug("heartbeat failed", "err", err)
		return nil
	}
	l.mu.Lock()
	was := l.fallback
	l.fallback = false
	l.mu.Unlock()
	if was {
		l.log.Info("NATS reachable again: sharing the rate limit again")
		signal(l.changed)
	}
	return ws
}

// logRecovery logs the factor's recovery steps (computed, never written).
func (l *Limiter) logRecovery() {
	now := l.now()
	l.mu.Lock()
	f := l.throttle.factorAt(now, l.cfg.RecoverEvery)
	old := l.loggedFactor
	l.loggedFactor = f
	l.mu.Unlock()
	if f > old {
		l.logFactor(old, f)
		signal(l.changed)
	}
}

// finalFlush shares the tokens still pending when the Limiter closes.
func (l *Limiter) finalFlush() {
	if l.perMin == 0 {
		return
	}
	l.mu.Lock()
	pending := len(l.pending.B) > 0 && !l.fallback
	l.mu.Unlock()
	if !pending || !l.nc.IsConnected() {
		return
	}
	// l.ctx is cancelled by now: flush under a context of its own.
	l.flushTokens(context.Background())
}
