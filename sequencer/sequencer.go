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
// receives a batch's manifest takes the batch's lease (a key in a KV bucket that
// expires Config.LeaseTTL after its last renewal) and owns the batch while it renews
// it, keeping the manifest unacknowledged with progress acks. Two replicas never hold
// one lease; a replica that fails to renew stops at once. The manifest is acked only
// after the completion event is stored; on shutdown the lease is released and the
// manifest naked so another replica takes the batch over at once; after a crash the
// lease expires and JetStream redelivers the manifest, both within LeaseTTL.
//
// Memory: per batch, at most Config.Window out-of-order results are held; results
// further ahead are dropped and read back from the results stream (the durable buffer)
// when their turn comes, so memory does not grow with batch size.
package sequencer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// Defaults for Config.
const (
	DefaultDurable      = "sequencer"
	DefaultWindow       = 512
	DefaultMaxBatches   = 16
	DefaultLeaseTTL     = 30 * time.Second
	DefaultPollInterval = 2 * time.Second
	DefaultMaxRun       = 256
	DefaultAtomicMinRun = 64
	DefaultIdleRelease  = 2 * time.Minute
)

// Config configures a sequencer replica.
type Config struct {
	// Durable names the manifest consumer the replicas share.
	Durable string
	// Window is how many out-of-order results a batch holds in memory.
	Window int
	// MaxBatches is how many batches this replica sequences at once.
	MaxBatches int
	// LeaseTTL is how long a replica's hold on a batch lasts without renewal: after a
	// crash, another replica takes the batch over within LeaseTTL.
	LeaseTTL time.Duration
	// PollInterval is how often a waiting batch re-checks the results stream, a safety
	// net behind the push of new results.
	PollInterval time.Duration
	// MaxRun is the most events appended in one atomic batch (server limit: 1000).
	MaxRun int
	// AtomicMinRun is the shortest run appended as an atomic batch; shorter runs are
	// appended one by one, which is faster for them.
	AtomicMinRun int
	// IdleRelease hands a batch back (releasing its slot) after this long without
	// progress, e.g. a batch whose items were never published; it is taken up again
	// later, so a stuck batch cannot hold a slot for good.
	IdleRelease time.Duration
	// OneByOne appends events one at a time even where the server takes atomic
	// batches (slower; the same guarantees).
	OneByOne bool
	// Metrics records Prometheus metrics (nil: none).
	Metrics *Metrics
	// ID names this replica in logs.
	ID     string
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.MaxBatches = cmp.Or(c.MaxBatches, DefaultMaxBatches)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.MaxRun = cmp.Or(c.MaxRun, DefaultMaxRun)
	c.AtomicMinRun = cmp.Or(c.AtomicMinRun, DefaultAtomicMinRun)
	c.IdleRelease = cmp.Or(c.IdleRelease, DefaultIdleRelease)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Window < 1:
		return fmt.Errorf("sequencer: Config.Window must be at least 1, got %d", c.Window)
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
	js  jetstream.JetStream
	c   *contract.Contract
	cfg Config
	log *slog.Logger

	// atomic is true when the ordered stream takes atomic batch publishes.
	atomic bool
	leases *leases

	mu     sync.Mutex
	active map[string]bool // batch ids this replica is sequencing
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
	log := cfg.Logger.With("component", "sequencer")
	if cfg.ID != "" {
		log = log.With("replica", cfg.ID)
	}
	return &Sequencer{js: js, c: c, cfg: cfg, log: log, active: map[string]bool{}}, nil
}

// Run sequences batches until ctx is cancelled; then it hands the batches it holds
// back (nak) and returns once their goroutines have stopped.
func (s *Sequencer) Run(ctx context.Context) error {
	if err := s.c.EnsureStreams(ctx, s.js, s.log); err != nil {
		return err
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
	id := s.cfg.ID
	if id == "" {
		id = nuid.Next()
	}
	if s.leases, err = openLeases(ctx, s.js, s.c, s.cfg.LeaseTTL, id, s.log); err != nil {
		return err
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.c.BatchesStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		Description:   "flashpipe sequencers: one manifest = one batch to sequence",
		FilterSubject: s.c.AllManifests(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.LeaseTTL,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("sequencer: create consumer: %w", err)
	}
	// Each manifest goes to the callback, which waits for a free slot and starts the
	// batch; while all slots are busy it blocks, so at most one manifest waits in the
	// client. Consume recovers from lost heartbeats and reconnects by itself.
	slots := make(chan struct{}, s.cfg.MaxBatches)
	var wg sync.WaitGroup
	defer wg.Wait()
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		if ctx.Err() != nil {
			_ = msg.Nak()
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			_ = msg.Nak()
			return
		}
		wg.Go(func() {
			defer func() { <-slots }()
			s.own(ctx, results, msg)
		})
	}, jetstream.PullMaxMessages(1), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.log.Warn("consume manifests", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("sequencer: consume: %w", err)
	}
	s.log.Info("sequencer started", "window", s.cfg.Window, "max_batches", s.cfg.MaxBatches, "atomic_appends", s.atomic)
	select {
	case <-ctx.Done():
	case <-cc.Closed():
	}
	cc.Stop()
	if ctx.Err() == nil {
		return errors.New("sequencer: the manifest consumer stopped (was it deleted?)")
	}
	return nil
}

// own sequences the batch of one manifest delivery while holding it.
func (s *Sequencer) own(ctx context.Context, results jetstream.Stream, msg jetstream.Msg) {
	m, err := contract.DecodeManifest(msg.Headers(), msg.Data())
	if err != nil {
		s.log.Error("undecodable manifest dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("undecodable manifest")
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
	defer s.release(claim)
	md, _ := msg.Metadata()
	log := s.log.With("batch", m.BatchID, "generation", m.Generation)

	le, err := s.leases.acquire(ctx, m.BatchID)
	if err != nil {
		// Another replica holds the batch: come back when its lease would expire
		// unrenewed (a dead owner is replaced then).
		delay := s.cfg.PollInterval
		var held *heldError
		if errors.As(err, &held) {
			delay = held.left + 100*time.Millisecond
		} else {
			log.Warn("lease", "err", err)
		}
		_ = msg.NakWithDelay(delay)
		return
	}
	bctx, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	stopRenew := s.renew(bctx, msg, le, lost)
	err = s.sequence(bctx, results, m, md)
	stopRenew()
	switch {
	case err == nil:
		if err := msg.DoubleAck(context.WithoutCancel(ctx)); err != nil {
			log.Warn("ack manifest", "err", err)
		}
		le.release(context.WithoutCancel(ctx))
	case ctx.Err() != nil:
		le.release(context.WithoutCancel(ctx))
		_ = msg.Nak() // hand over at once
	case context.Cause(bctx) != nil && bctx.Err() != nil:
		log.Warn("lease lost: another sequencer takes the batch over", "err", context.Cause(bctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	case errors.Is(err, errPreviousGeneration):
		log.Info("waiting for the previous generation to complete")
		le.release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	case errors.Is(err, errIdle):
		log.Warn("batch idle: handed back, taken up again later", "err", err)
		le.release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.IdleRelease)
	default:
		log.Error("sequencing failed; will retry", "err", err)
		le.release(context.WithoutCancel(ctx))
		_ = msg.NakWithDelay(s.cfg.PollInterval)
	}
}

func (s *Sequencer) claim(batch string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[batch] {
		return false
	}
	s.active[batch] = true
	return true
}

func (s *Sequencer) release(batch string) {
	s.mu.Lock()
	delete(s.active, batch)
	s.mu.Unlock()
}

// renew keeps the manifest from being redelivered and the lease alive; when the lease
// cannot be renewed it calls lost, which stops the sequencing of the batch. The
// returned stop function returns once the renewals have stopped.
func (s *Sequencer) renew(ctx context.Context, msg jetstream.Msg, le *lease, lost context.CancelCauseFunc) func() {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
				if err := le.renew(ctx); err != nil && ctx.Err() == nil {
					lost(err)
					return
				}
			case <-done:
				return
			}
		}
	}()
	// Stopping waits for the goroutine: the lease's revision it writes is read next by
	// release, on the caller's goroutine.
	return func() { t.Stop(); close(done); <-exited }
}

// wanted reports which seq a generation emits at index i (0-based), and how many.
func wanted(m flashpipe.Manifest) (at func(i int) int, n int) {
	return m.Seq, m.Expected()
}

var errPreviousGeneration = errors.New("previous generation not complete")

// mustMetadata is a nil-safe accessor for the manifest's stream timestamp.
func startTime(md *jetstream.MsgMetadata) *time.Time {
	if md == nil || md.Timestamp.IsZero() {
		return nil
	}
	t := md.Timestamp.Add(-time.Second)
	return &t
}
