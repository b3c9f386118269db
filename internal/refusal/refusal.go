// Package refusal records the messages a door refuses: bad input published by any
// client (a manifest that contradicts itself or the batch id registry, an item with no
// manifest or beyond its count, a body that disagrees with its subject or headers).
// Each refusal is kept in the refused-messages stream with the original message and
// the reason, where an operator and the upstream see it (`flashpipe status`, the
// stream itself), counted in a metric and logged. A refusal costs no API call and
// never holds up other batches. Safe for concurrent use.
package refusal

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// Codes name the kind of refusal (the metric's label; the reason says the details).
const (
	InvalidManifest = "invalid_manifest"
	BatchConflict   = "batch_conflict"
	NoManifest      = "no_manifest"
	NotInManifest   = "not_in_manifest"
	Mismatch        = "mismatch"
	Undecodable     = "undecodable"
	PositionOrder   = "position_order"
	NeverPublished  = "never_published"
)

// Recorder records refusals.
type Recorder struct {
	js     jetstream.JetStream
	c      *contract.Contract
	by     string
	log    *slog.Logger
	metric *prometheus.CounterVec
}

// New returns a recorder for the service named by; reg, when set, registers the
// flashpipe_refused_total metric (shared by the services of one process).
func New(js jetstream.JetStream, c *contract.Contract, by string, log *slog.Logger, reg prometheus.Registerer) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{js: js, c: c, by: by, log: log}
	if reg != nil {
		m := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_refused_total",
			Help: "Messages refused at a door (kept in the refused-messages stream with the reason), by the service that kept the refusal and code; a message two services refuse counts once.",
		}, []string{"by", "code"})
		if err := reg.Register(m); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				m = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
		r.metric = m
	}
	return r
}

// Refuse keeps a refusal (code is one of the codes above) in the refused-messages
// stream; the caller acknowledges the refused message only once it returns nil.
func (r *Recorder) Refuse(ctx context.Context, code string, ref contract.Refusal) error {
	ref.By = r.by
	ref.Reason = code + ": " + ref.Reason
	ack, err := r.js.PublishMsg(ctx, r.c.RefusedMsg(ref))
	if err != nil {
		return fmt.Errorf("record refusal of %s: %w", ref.Subject, err)
	}
	if ack.Duplicate {
		// Already kept: another service refused the same message first (the scheduler
		// and the sequencer both check a manifest), or this one again after a
		// redelivery. It is counted once, where it was kept.
		r.log.Debug("message refused, already recorded", "code", code, "subject", ref.Subject, "batch", ref.BatchID)
		return nil
	}
	if r.metric != nil {
		r.metric.WithLabelValues(r.by, code).Inc()
	}
	r.log.Warn("message refused", "code", code, "subject", ref.Subject, "batch", ref.BatchID, "reason", ref.Reason)
	return nil
}
