// Package scheduler decides which item the processors work on next, so that they
// share their capacity fairly between the batches that have work waiting: between
// tenants first (round robin, weighted), then between a tenant's batches (a higher
// priority first, round robin among equals). A small batch submitted behind a large
// one waits for the number of active batches, not for the work that arrived before it.
//
// The scheduler takes every generation of every batch by its manifest (a durable
// consumer of the manifests), checks it (flashpipe.Manifest.Validate and the batch id
// registry: a contradicting manifest is refused and recorded), and keeps one entry per
// generation still being dispatched in a key-value bucket (SCHEDULE): its tenant,
// priority and cursor. It reads the items of the generations it dispatches from the
// items stream by subject, checks each (its subject, headers and body agree, its seq
// is the manifest's, its position follows the previous item's, its term is a term) and
// publishes it to the ready stream, which the processors consume through one durable
// consumer whose MaxAckPending caps the items in flight across all replicas, as
// before. It keeps only a window of items in the ready stream ahead of the
// processors, so the order it chooses is the order they work in.
//
// Refusals cost no API call and never hold a batch up for good: an item that cannot be
// valid gets a failed result that holds its place, with the reason (an item whose term
// is empty, or whose body contradicts its subject), an item the manifest does not
// count or that has no manifest is refused (recorded in the refused-messages stream,
// found by an audit of the items stream's headers), and an item that is never
// published gets a failed result after Config.ItemDeadline, so its batch completes
// with the reason instead of waiting for ever.
//
// One replica leads at a time (a lease); the others wait to take over. State that
// matters lives in the bucket, so a new leader resumes where the old one stopped: an
// item dispatched twice after a failover is a duplicate the ready stream drops (its
// message id), or a free cache hit for a processor.
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/lease"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/registry"
	"github.com/flashpipe/flashpipe/internal/sequencer"
)

// Defaults for Config.
const (
	DefaultDurable       = "scheduler"
	DefaultAuditDurable  = "scheduler-audit"
	DefaultPrefetch      = 32
	DefaultMaxPrefetched = 4096
	DefaultMinWindow     = 32
	DefaultItemDeadline  = 15 * time.Minute
	DefaultOrphanGrace   = 30 * time.Second
	// DefaultLeaseTTL is the sequencers': the lease lives in their bucket, whose TTL
	// is the lease's.
	DefaultLeaseTTL      = sequencer.DefaultLeaseTTL
	DefaultFlushInterval = 250 * time.Millisecond
	DefaultPollInterval  = 10 * time.Millisecond
	// LeaseKey is the scheduler's lease in the sequencers' lease bucket (no batch id
	// starts with '_').
	LeaseKey = "_scheduler"
)

// Config configures a scheduler replica.
type Config struct {
	// Durable names the manifest consumer (DefaultDurable); AuditDurable the
	// headers-only consumer of the items stream that finds items with no manifest or
	// beyond it (DefaultAuditDurable).
	Durable, AuditDurable string
	// ProcessorDurable is the processors' consumer of the ready stream, whose
	// MaxAckPending sizes the window (processor.DefaultDurable).
	ProcessorDurable string
	// Window is how many items wait in the ready stream ahead of the processors (zero:
	// twice the processors' MaxAckPending, at least DefaultMinWindow). A small window
	// makes the fair order the processing order; too small starves the processors.
	Window int
	// Prefetch is how many items of one generation are read from the items stream at
	// once (DefaultPrefetch); MaxPrefetched bounds the items held across generations
	// (DefaultMaxPrefetched).
	Prefetch, MaxPrefetched int
	// ItemDeadline is how long a generation waits for its next item to be published
	// before that item fails with "never published" (DefaultItemDeadline).
	ItemDeadline time.Duration
	// OrphanGrace is how long an item whose batch has no manifest waits for one before
	// it is refused (DefaultOrphanGrace): a manifest published just after its items is
	// no error.
	OrphanGrace time.Duration
	// TenantWeights gives a tenant more than its share: a tenant of weight 3 gets three
	// items for every one of a tenant of weight 1 (default weight 1).
	TenantWeights map[string]int
	// TenantRates caps a tenant's dispatch rate in items per second (none by default),
	// e.g. its share of the API's rate limit (two calls per item).
	TenantRates map[string]float64
	// TenantConcurrency caps a tenant's items in the ready stream, that is waiting for
	// a processor or held by one (none by default): its share of the processors'
	// concurrency. The count is read from the ready stream at least every
	// PollInterval while a tenant is at its cap.
	TenantConcurrency map[string]int
	// LeaseTTL is how soon another replica takes over from a leader that stopped
	// renewing (DefaultLeaseTTL). It must be the sequencers' lease TTL: both live in
	// one bucket, whose TTL is the lease's (app.NewSequencer sets it so).
	LeaseTTL time.Duration
	// FlushInterval is how often the cursors are written to the bucket
	// (DefaultFlushInterval); PollInterval how often a full window is checked again
	// (DefaultPollInterval).
	FlushInterval, PollInterval time.Duration
	// Metrics records Prometheus metrics (nil: none); Refusals records refusals (nil:
	// without a metric).
	Metrics  *Metrics
	Refusals *refusal.Recorder
	ID       string
	Logger   *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.AuditDurable = cmp.Or(c.AuditDurable, DefaultAuditDurable)
	c.ProcessorDurable = cmp.Or(c.ProcessorDurable, processor.DefaultDurable)
	c.Prefetch = cmp.Or(c.Prefetch, DefaultPrefetch)
	c.MaxPrefetched = cmp.Or(c.MaxPrefetched, DefaultMaxPrefetched)
	c.ItemDeadline = cmp.Or(c.ItemDeadline, DefaultItemDeadline)
	c.OrphanGrace = cmp.Or(c.OrphanGrace, DefaultOrphanGrace)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	c.FlushInterval = cmp.Or(c.FlushInterval, DefaultFlushInterval)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.ID = cmp.Or(c.ID, nuid.Next())
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Window < 0:
		return fmt.Errorf("scheduler: Config.Window must not be negative, got %d", c.Window)
	case c.Prefetch < 1 || c.Prefetch > 256:
		return fmt.Errorf("scheduler: Config.Prefetch must be 1 to 256, got %d", c.Prefetch)
	case c.MaxPrefetched < c.Prefetch:
		return fmt.Errorf("scheduler: Config.MaxPrefetched (%d) must be at least Config.Prefetch (%d)", c.MaxPrefetched, c.Prefetch)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("scheduler: Config.LeaseTTL must be at least 1s, got %s", c.LeaseTTL)
	}
	for t, w := range c.TenantWeights {
		if w < 1 {
			return fmt.Errorf("scheduler: Config.TenantWeights[%q] must be at least 1, got %d", t, w)
		}
	}
	for t, r := range c.TenantRates {
		if r <= 0 {
			return fmt.Errorf("scheduler: Config.TenantRates[%q] must be positive, got %g", t, r)
		}
	}
	for t, n := range c.TenantConcurrency {
		if n < 1 {
			return fmt.Errorf("scheduler: Config.TenantConcurrency[%q] must be at least 1, got %d", t, n)
		}
	}
	return nil
}

// Scheduler is one scheduler replica: it leads (dispatches) while it holds the lease.
type Scheduler struct {
	js       jetstream.JetStream
	c        *contract.Contract
	cfg      Config
	log      *slog.Logger
	refusals *refusal.Recorder
}

// New returns a scheduler replica.
func New(js jetstream.JetStream, c *contract.Contract, cfg Config) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || c == nil {
		return nil, errors.New("scheduler: JetStream and contract are required")
	}
	log := cfg.Logger.With("component", "scheduler", "replica", cfg.ID)
	ref := cfg.Refusals
	if ref == nil {
		ref = refusal.New(js, c, "scheduler", log, nil)
	}
	return &Scheduler{js: js, c: c, cfg: cfg, log: log, refusals: ref}, nil
}

// BucketConfig is the configuration of the scheduler's bucket: one entry per
// generation being dispatched, kept until it is (no TTL).
func BucketConfig(c *contract.Contract) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.ScheduleBucket(),
		Description: "flashpipe: the generations the scheduler is dispatching, with their tenant, priority and cursor",
		History:     1,
		Storage:     c.StorageType(),
		Replicas:    c.Config().Replicas,
	}
}

// Run campaigns for the lead until ctx ends: while it holds the lease it dispatches
// (see the package documentation); when it loses it, it stops at once and campaigns
// again. It returns nil when ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.c.EnsureStreams(ctx, s.js, s.log); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	kv, err := contract.OpenKeyValue(ctx, s.js, BucketConfig(s.c), s.log)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	leases, err := lease.Open(ctx, s.js, sequencer.LeaseBucket(s.c, s.cfg.LeaseTTL), s.cfg.ID, s.log)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	reg, err := registry.Open(ctx, s.js, s.c)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.log.Info("scheduler started")
	for ctx.Err() == nil {
		le, err := leases.Acquire(ctx, LeaseKey)
		if err != nil {
			wait := s.cfg.LeaseTTL / 2
			var held *lease.HeldError
			if errors.As(err, &held) {
				wait = min(wait, held.Left+100*time.Millisecond)
			} else if ctx.Err() == nil {
				s.log.Warn("scheduler lease", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		s.log.Info("leading the scheduling")
		s.cfg.Metrics.lead(true)
		err = s.lead(ctx, le, kv, reg)
		s.cfg.Metrics.lead(false)
		le.Release(context.WithoutCancel(ctx))
		if ctx.Err() == nil {
			s.log.Warn("stepped down from the scheduling; campaigning again", "err", err)
		}
	}
	return nil
}
