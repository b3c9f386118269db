package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The live replica count, for the share a replica spends while NATS is unreachable
// (see the package doc, "When NATS is unreachable").
//
// Every replica puts "<key>.<id>" into the replicas bucket every HeartbeatTTL/3; the
// bucket's MaxAge is HeartbeatTTL, so the key of a replica that stopped disappears
// within HeartbeatTTL. After each heartbeat the replica counts the keys of its limit
// (one stream info request with a subject filter) and keeps the count. A replica that
// began heartbeating less than joinGrace ago may not be counted by the others yet: it
// spends nothing in a fallback.

// refreshEvery is how often a replica heartbeats and recounts.
func (l *Limiter) refreshEvery() time.Duration { return l.cfg.HeartbeatTTL / 3 }

// joinGrace is how long after its first heartbeat every other replica has recounted
// at least once (two refresh periods: one, plus slack for a late tick).
func (l *Limiter) joinGrace() time.Duration { return 2 * l.refreshEvery() }

// heartbeat announces this replica and recounts the live replicas of its limit.
func (l *Limiter) heartbeat(parent context.Context) error {
	if !l.nc.IsConnected() {
		return errDisconnected
	}
	ctx, cancel := context.WithTimeout(parent, l.cfg.OpTimeout)
	defer cancel()
	now := l.now()
	if _, err := l.hb.Put(ctx, l.keyHeartbeat, strconv.AppendInt(nil, now.UnixNano(), 10)); err != nil {
		return fmt.Errorf("ratelimit: heartbeat: %w", err)
	}
	st, err := l.js.Stream(ctx, "KV_"+l.hbCfg.Bucket)
	if err != nil {
		return fmt.Errorf("ratelimit: count replicas: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$KV."+l.hbCfg.Bucket+"."+l.cfg.Key+".*"))
	if err != nil {
		return fmt.Errorf("ratelimit: count replicas: %w", err)
	}
	n := max(1, len(info.State.Subjects)) // at least this replica, which just wrote
	l.mu.Lock()
	if l.countedSince.IsZero() {
		l.countedSince = now
	}
	old := l.replicas
	l.replicas = n
	l.mu.Unlock()
	if n != old {
		l.log.Debug("live replicas", "replicas", n, "was", old)
	}
	return nil
}

// divisorLocked is how many replicas the budget is split over in a fallback: the live
// count last seen, at least Config.AssumedReplicas.
func (l *Limiter) divisorLocked() int {
	return max(1, l.replicas, l.cfg.AssumedReplicas)
}

// shareLocked is this replica's fraction of the budget in a fallback at now:
// 1/divisor, or 0 while it may be too new to be counted by every other replica (unless
// Config.AssumedReplicas vouches for the count).
func (l *Limiter) shareLocked(now time.Time) float64 {
	young := l.countedSince.IsZero() || now.Sub(l.countedSince) < l.joinGrace()
	if young && l.cfg.AssumedReplicas == 0 {
		return 0
	}
	return 1 / float64(l.divisorLocked())
}
