package processor

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// gate pauses a replica's API calls after an account-level error (bad key, no
// credits): retrying other items could only fail the same way, and failing them would
// burn through the batch. While paused, workers take no new items and the items in
// hand wait (kept alive by progress acks, their attempts unspent). Every probe
// interval one waiting call goes through as a probe; its success resumes everything.
type gate struct {
	probeEvery time.Duration
	log        *slog.Logger
	metrics    *Metrics

	mu      sync.Mutex
	paused  bool
	reason  error
	resumed chan struct{} // closed when the pause ends
	probe   chan struct{} // one token per probe interval while paused
	stop    chan struct{}
}

func newGate(probeEvery time.Duration, log *slog.Logger, m *Metrics) *gate {
	return &gate{probeEvery: probeEvery, log: log, metrics: m}
}

// pause closes the gate (if open) with the reason the API gave.
func (g *gate) pause(reason error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused {
		return
	}
	g.paused, g.reason = true, reason
	g.metrics.setPaused(true)
	g.resumed, g.probe, g.stop = make(chan struct{}), make(chan struct{}), make(chan struct{})
	g.log.Error("API account error: this processor takes no new items until it is fixed; items in hand wait, nothing fails",
		"reason", reason.Error(), "probe_every", g.probeEvery)
	go g.probes(g.probe, g.stop)
}

func (g *gate) probes(probe, stop chan struct{}) {
	t := time.NewTicker(g.probeEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			select {
			case probe <- struct{}{}:
			case <-stop:
				return
			}
		case <-stop:
			return
		}
	}
}

// resume opens the gate.
func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused {
		return
	}
	g.paused = false
	g.metrics.setPaused(false)
	close(g.stop)
	close(g.resumed)
	g.log.Info("API account error resolved: processing resumes")
}

// state returns the channels to wait on while paused, or ok when open.
func (g *gate) state() (resumed, probe chan struct{}, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.resumed, g.probe, !g.paused
}

// waitOpen blocks until the gate is open (for fetching new items).
func (g *gate) waitOpen(ctx context.Context) error {
	resumed, _, ok := g.state()
	if ok {
		return nil
	}
	select {
	case <-resumed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitCall blocks a call until the gate is open or the call is chosen as a probe.
func (g *gate) waitCall(ctx context.Context) error {
	resumed, probe, ok := g.state()
	if ok {
		return nil
	}
	select {
	case <-resumed:
	case <-probe:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
