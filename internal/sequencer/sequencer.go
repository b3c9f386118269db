// Package sequencer restores each batch's order. It takes batches by their manifest,
// reads the batch's results as they arrive in any order, and appends them to the
// batch's ordered subject as soon as every lower position has been appended (stream
// resequencing), framed by the generation's manifest and completion events.
//
// Durable state: the ordered subject itself. The last event on <prefix>.ordered.<batch>
// is the cursor, so a restarted sequencer neither re-emits nor skips. Every append
// carries the expected last sequence of that subject: an append that would follow
// anything but the event the sequencer last saw is refused by JetStream, so two
// sequencers racing on one batch (a lease handed over while the old owner still runs)
// can never interleave, duplicate or reorder events.
//
// Ownership: the replicas share one durable consumer of the manifests; a replica that
// receives a batch's manifest checks it (flashpipe.Manifest.Validate and the batch id
// registry: a manifest published by any client that contradicts either is refused,
// recorded in the refused-messages stream, and never sequenced), takes the batch's
// lease and owns the batch while it renews it, keeping the manifest unacknowledged
// with progress acks. The manifest is acked only after the completion event is
// stored; on shutdown the lease is released and the manifest naked so another replica
// takes the batch over at once; after a crash the lease expires and JetStream
// redelivers the manifest, both within LeaseTTL.
//
// Results: one long-lived reader per replica follows the results stream (all
// batches) and routes each result to the batch this replica owns, if any; a batch
// looks up in the stream (by subject) what arrived before it was taken or what did not
// fit its buffer. No consumer is created per batch, so thousands of batches, many of
// them small, cost no server resources beyond their leases. A result whose subject,
// headers and body disagree is refused and never appended.
//
// Memory: per batch at most Config.Window out-of-order results, and across batches at
// most Config.MaxBuffered; results beyond are dropped and read back from the results
// stream (the durable buffer) when their turn comes, so memory does not grow with the
// batch size nor with the number of batches.
package sequencer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/lease"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/registry"
	"github.com/flashpipe/flashpipe/internal/service"
)

// Defaults for Config.
const (
	DefaultDurable      = "sequencer"
	DefaultWindow       = 512
	DefaultMaxBuffered  = 16384
	DefaultMaxBatches   = 1000
	DefaultLeaseTTL     = 30 * time.Second
	DefaultPollInterval = 2 * time.Second
	DefaultMaxRun       = 256
	DefaultAtomicMinRun = 64
	DefaultIdleRelease  = 2 * time.Minute
)

// Config configures a sequencer replica.
type Config struct {
	// Durable names the manifest consumer the replicas share (DefaultDurable).
	Durable string
	// Window is how many out-of-order results a batch holds in memory (DefaultWindow).
	Window int
	// MaxBuffered is how many out-of-order results all batches hold together
	// (DefaultMaxBuffered).
	MaxBuffered int
	// MaxBatches is how many batches this replica sequences at once
	// (DefaultMaxBatches); further manifests wait in the consumer for a free slot.
	MaxBatches int
	// LeaseTTL is how long a replica's hold on a batch lasts without renewal: after a
	// crash, another replica takes the batch over within LeaseTTL (DefaultLeaseTTL).
	LeaseTTL time.Duration
	// PollInterval is how often a waiting batch re-checks the results stream, a safety
	// net behind the routed results (DefaultPollInterval).
	PollInterval time.Duration
	// MaxRun is the most events appended in one atomic batch (server limit: 1000).
	MaxRun int
	// AtomicMinRun is the shortest run appended as an atomic batch; shorter runs are
	// appended one by one, which is faster for them.
	AtomicMinRun int
	// IdleRelease hands a batch back (releasing its lease and slot) after this long
	// without progress, e.g. a batch whose items were never published; it is taken up
	// again later (DefaultIdleRelease).
	IdleRelease time.Duration
	// OneByOne appends events one at a time even where the server takes atomic
	// batches (slower; the same guarantees).
	OneByOne bool
	// Metrics records Prometheus metrics (nil: none).
	Metrics *Metrics
	// Refusals records refused manifests and results (nil: recorded without a metric).
	Refusals *refusal.Recorder
	// ID names this replica in logs.
	ID     string
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.MaxBuffered = cmp.Or(c.MaxBuffered, DefaultMaxBuffered)
	c.MaxBatches = cmp.Or(c.MaxBatches, DefaultMaxBatches)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.MaxRun = cmp.Or(c.MaxRun, DefaultMaxRun)
	c.AtomicMinRun = cmp.Or(c.AtomicMinRun, DefaultAtomicMinRun)
	c.IdleRelease = cmp.Or(c.IdleRelease, DefaultIdleRelease)
	c.ID = cmp.Or(c.ID, nuid.Next())
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Window < 1:
		return fmt.Errorf("sequencer: Config.Window must be at least 1, got %d", c.Window)
	case c.MaxBuffered < 1:
		return fmt.Errorf("sequencer: Config.MaxBuffered must be at least 1, got %d", c.MaxBuffered)
	case c.MaxBatches < 1:
		return fmt.Errorf("sequencer: Config.MaxBatches must be at least 1, got %d", c.MaxBatches)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("sequencer: Config.LeaseTTL must be at least 1s, got %s", c.LeaseTTL)
	case c.PollInterval <= 0:
		return fmt.Errorf("sequencer: Config.PollInterval must be positive")
	case c.MaxRun < 2 || c.MaxRun > 1000:
		return fmt.Errorf("sequencer: Config.MaxRun must be 2 to 1000, got %d", c.MaxRun)
	case c.AtomicMinRun < 2:
		return fmt.Errorf("sequencer: Config.AtomicMinRun must be at least 2, got %d", c.AtomicMinRun)
	}
	return nil
}

// Sequencer is one sequencer replica.
type Sequencer struct {
	js       jetstream.JetStream
	c        *contract.Contract
	cfg      Config
	log      *slog.Logger
	refusals *refusal.Recorder

	// atomic is true when the ordered stream takes atomic batch publishes.
	atomic   bool
	leases   *lease.Leases
	registry registry.Registry
	// buffered counts the out-of-order results all batches hold.
	buffered atomic.Int64

	mu     sync.Mutex
	active map[string]bool   // "batch/generation" this replica is sequencing
	routes map[string]*inbox // batch id → the running generation's inbox
}

// New returns a sequencer replica.
func New(js jetstream.JetStream, c *contract.Contract, cfg Config) (*Sequencer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || c == nil {
		return nil, errors.New("sequencer: JetStream and contract are required")
	}
	log := cfg.Logger.With("component", "sequencer", "replica", cfg.ID)
	ref := cfg.Refusals
	if ref == nil {
		ref = refusal.New(js, c, "sequencer", log, nil)
	}
	return &Sequencer{js: js, c: c, cfg: cfg, log: log, refusals: ref,
		active: map[string]bool{}, routes: map[string]*inbox{}}, nil
}

// Run sequences batches until ctx is cancelled; then it hands the batches it holds
// back (nak) and returns once their goroutines have stopped.
func (s *Sequencer) Run(ctx context.Context) error {
	cons, err := service.OpenConsumer(ctx, s.js, s.c, s.c.BatchesStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		Description:   "flashpipe sequencers: one manifest = one batch to sequence",
		FilterSubject: s.c.AllManifests(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.LeaseTTL,
		MaxDeliver:    -1,
		MaxAckPending: max(10000, 2*s.cfg.MaxBatches),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}, s.log)
	if err != nil {
		return fmt.Errorf("sequencer: %w", err)
	}
	results, err := s.js.Stream(ctx, s.c.ResultsStream())
	if err != nil {
		return fmt.Errorf("sequencer: results stream: %w", err)
	}
	ordered, err := s.js.Stream(ctx, s.c.OrderedStream())
	if err != nil {
		return fmt.Errorf("sequencer: ordered stream: %w", err)
	}
	s.atomic = ordered.CachedInfo().Config.AllowAtomicPublish && !s.cfg.OneByOne
	if s.leases, err = lease.Open(ctx, s.js, LeaseBucket(s.c, s.cfg.LeaseTTL), s.cfg.ID, s.log); err != nil {
		return fmt.Errorf("sequencer: %w", err)
	}
	if s.registry, err = registry.Open(ctx, s.js, s.c); err != nil {
		return fmt.Errorf("sequencer: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	wg.Go(func() { s.readResults(rctx) })

	// Each manifest goes to the callback, which waits for a free slot and starts the
	// batch: while all slots are busy it blocks, so manifests wait in the consumer.
	slots := make(chan struct{}, s.cfg.MaxBatches)
	feed, err := service.Subscribe(cons, service.Config{Pull: 64, What: "manifests", Logger: s.log})
	if err != nil {
		return fmt.Errorf("sequencer: %w", err)
	}
	defer feed.Stop()
	s.log.Info("sequencer started", "window", s.cfg.Window, "max_batches", s.cfg.MaxBatches, "atomic_appends", s.atomic)
	for {
		var msg jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-feed.C:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("sequencer: manifests: %w", service.ErrConsumerGone)
			}
			msg = m
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			_ = msg.Nak()
			return nil
		}
		wg.Go(func() {
			defer func() { <-slots }()
			s.own(ctx, results, msg)
		})
	}
}

// own sequences the batch of one manifest delivery while holding it.
func (s *Sequencer) own(ctx context.Context, results jetstream.Stream, msg jetstream.Msg) {
	m, ok := s.admit(ctx, msg)
	if !ok {
		return
	}
	claim := fmt.Sprintf("%s/%d", m.BatchID, m.Generation)
	s.cfg.Metrics.batch(1)
	defer s.cfg.Metrics.batch(-1)
	if !s.claim(claim) {
		// A stale redelivery of a generation this replica is already sequencing (the
		// running goroutine renews and acks the same message), or the next generation
		// of a batch still in hand here: try again shortly.
		_ = msg.NakWithDelay(s.cfg.PollInterval)
		return
	}
	defer s.unclaim(claim)
	log := s.log.With("batch", m.BatchID, "generation", m.Generation)

	le, err := s.leases.Acquire(ctx, m.BatchID)
	if err != nil {
		// Another replica holds the batch: come back when its lease would expire
		// unrenewed (a dead owner is replaced then).
		delay := s.cfg.PollInterval
		var held *lease.HeldError
		if errors.As(err, &held) {
			delay = held.Left + 100*time.Millisecond
		} else {
			log.Warn("lease", "err", err)
		}
		_ = msg.NakWithDelay(delay)
		return
	}
	bctx, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	stopRenew := s.renew(bctx, msg, le, lost)
	err = s.sequence(bctx, results, m)
	stopRenew()
	switch {
	case err == nil:
		if err := msg.DoubleAck(context.WithoutCancel(ctx)); err != nil {
			log.Warn("ack manifest", "err", err)
		}
		le.Release(context.WithoutCancel(ctx))
	case ctx.Err() != nil:
		le.Release(context.WithoutCancel(ctx))
		_ = msg.Nak() // hand over at once
	case context.Cause(bctx) != nil && bctx.Err() != nil:
		log.Warn("lease lost: another sequencer takes the batch over", "err", context.Cause(bctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	case errors.Is(err, errPreviousGeneration):
		log.Info("waiting for the previous generation to complete")
		le.Release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	case errors.Is(err, errIdle):
		log.Warn("batch idle: handed back, taken up again later", "err", err)
		le.Release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.IdleRelease)
	default:
		log.Error("sequencing failed; will retry", "err", err)
		le.Release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	}
}

// admit decodes and checks a manifest: one that cannot be decoded, contradicts itself
// or the batch id registry is refused (recorded, then acked: it is never sequenced).
// ok is false when the caller has nothing more to do.
func (s *Sequencer) admit(ctx context.Context, msg jetstream.Msg) (flashpipe.Manifest, bool) {
	m, err := contract.DecodeManifest(msg.Headers(), msg.Data())
	code := refusal.Undecodable
	if err == nil {
		err = m.Validate()
		code = refusal.InvalidManifest
		if err == nil && s.c.ManifestSubject(m.BatchID) != msg.Subject() {
			err = fmt.Errorf("batch_id %q: its subject is %s", m.BatchID, msg.Subject())
		}
	}
	if err == nil {
		err = s.registry.Admit(ctx, m)
		code = refusal.BatchConflict
		if err != nil && !errors.Is(err, flashpipe.ErrBatchConflict) {
			s.log.Warn("batch id registry unreachable; manifest retried", "batch", m.BatchID, "err", err)
			_ = msg.NakWithDelay(s.cfg.PollInterval)
			return m, false
		}
	}
	if err == nil {
		return m, true
	}
	md, _ := msg.Metadata()
	id := msg.Subject()
	if md != nil {
		id = fmt.Sprintf("%s:%d", s.c.BatchesStream(), md.Sequence.Stream)
	}
	if rerr := s.refusals.Refuse(ctx, code, contract.Refusal{BatchID: m.BatchID, Subject: msg.Subject(),
		Header: msg.Headers(), Data: msg.Data(), Reason: "manifest refused: " + err.Error(), ID: id}); rerr != nil {
		s.log.Warn("refusal not recorded; manifest retried", "err", rerr)
		_ = msg.NakWithDelay(s.cfg.PollInterval)
		return m, false
	}
	_ = msg.Ack()
	return m, false
}

func (s *Sequencer) claim(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[key] {
		return false
	}
	s.active[key] = true
	return true
}

func (s *Sequencer) unclaim(key string) {
	s.mu.Lock()
	delete(s.active, key)
	s.mu.Unlock()
}

// renew keeps the manifest from being redelivered and the lease alive; when the lease
// cannot be renewed it calls lost, which stops the sequencing of the batch. The
// returned stop function returns once the renewals have stopped.
func (s *Sequencer) renew(ctx context.Context, msg jetstream.Msg, le *lease.Lease, lost context.CancelCauseFunc) func() {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
				if err := le.Renew(ctx); err != nil && ctx.Err() == nil {
					lost(err)
					return
				}
			case <-done:
				return
			}
		}
	}()
	// Stopping waits for the goroutine: the lease's revision it writes is read next by
	// Release, on the caller's goroutine.
	return func() { t.Stop(); close(done); <-exited }
}

var errPreviousGeneration = errors.New("previous generation not complete")
