// Package sink writes each batch's ordered events to a Store: the batch row, one row
// per item and one row per card.
//
// Ack rule: messages are acknowledged only after the transaction holding them commits.
// A write that fails because of the environment (the database unreachable, read-only
// or full, a permission revoked, a table missing during a restore) is retried with
// backoff until it succeeds, however long that takes: the sink says it is blocked, and
// why, in its logs, its metrics and its beacon (shown by `flashpipe status`), and acks
// nothing meanwhile, so nothing is lost. Only an event the store refuses for a reason in
// its own data is set aside: kept in the store's dead letters with the reason (see
// flashpipe.DeadLetter), then terminated on the stream, so that it can be replayed
// after the ordered stream has dropped it, and its batch reads blocked, not running.
// A redelivery is harmless because Store.Apply is idempotent and keyed by (batch,
// position).
//
// Ordering: the sink reads the ordered stream in order and writes many events per
// transaction. Store.Apply does not depend on the order of events across transactions
// (a batch counts as complete only once all its results are stored), so several sink
// replicas may share the consumer.
package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/backoff"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/service"
	"github.com/flashpipe/flashpipe/internal/store"
)

// Defaults for Config.
const (
	DefaultDurable      = "sink"
	DefaultBatchSize    = 500
	DefaultLinger       = 20 * time.Millisecond
	DefaultAckWait      = 60 * time.Second
	DefaultBackoffBase  = 100 * time.Millisecond
	DefaultBackoffMax   = 5 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	// DefaultBlockedLogEvery is how often a blocked sink repeats its error in the log.
	DefaultBlockedLogEvery = 30 * time.Second
)

// Config configures a sink replica.
type Config struct {
	// Durable names the consumer the sink replicas share.
	Durable string
	// BatchSize is the most events written in one transaction.
	BatchSize int
	// Linger is how long the sink waits for more events before writing a partial batch.
	Linger time.Duration
	// AckWait is how long JetStream waits for the sink's ack before redelivering.
	AckWait time.Duration
	// BackoffBase and BackoffMax shape the retry of failed writes.
	BackoffBase, BackoffMax time.Duration
	// WriteTimeout bounds one write transaction.
	WriteTimeout time.Duration
	// BlockedLogEvery is how often a blocked sink repeats its error in the log
	// (DefaultBlockedLogEvery).
	BlockedLogEvery time.Duration
	// Metrics records Prometheus metrics (nil: none).
	Metrics *Metrics
	// Beacon, when set, tells `flashpipe status` while the sink is blocked, and why.
	// The caller runs it.
	Beacon *beacon.Beacon
	// ID names this replica in logs.
	ID     string
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.Linger = cmp.Or(c.Linger, DefaultLinger)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.BackoffBase = cmp.Or(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.BlockedLogEvery = cmp.Or(c.BlockedLogEvery, DefaultBlockedLogEvery)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.BatchSize < 1:
		return fmt.Errorf("sink: Config.BatchSize must be at least 1, got %d", c.BatchSize)
	case c.Linger < 0:
		return fmt.Errorf("sink: Config.Linger must not be negative")
	case c.AckWait < time.Second:
		return fmt.Errorf("sink: Config.AckWait must be at least 1s, got %s", c.AckWait)
	}
	return nil
}

// Sink is one sink replica.
type Sink struct {
	js     jetstream.JetStream
	c      *contract.Contract
	store  flashpipe.Store
	cfg    Config
	log    *slog.Logger
	beacon *beacon.Beacon // nil: none
}

// New returns a sink replica writing to store.
func New(js jetstream.JetStream, c *contract.Contract, store flashpipe.Store, cfg Config) (*Sink, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || c == nil || store == nil {
		return nil, errors.New("sink: JetStream, contract and store are required")
	}
	log := cfg.Logger.With("component", "sink")
	if cfg.ID != "" {
		log = log.With("replica", cfg.ID)
	}
	return &Sink{js: js, c: c, store: store, cfg: cfg, log: log, beacon: cfg.Beacon}, nil
}

// Run writes events until ctx is cancelled; the write in progress is finished and
// acknowledged before Run returns.
func (s *Sink) Run(ctx context.Context) error {
	cons, err := service.OpenConsumer(ctx, s.js, s.c, s.c.OrderedStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		Description:   "flashpipe sink: ordered events to the store",
		FilterSubject: s.c.AllOrdered(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: 4 * s.cfg.BatchSize,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}, s.log)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return s.consume(ctx, cons)
}

// Replay applies every event of one batch from the ordered stream to the store, for
// rebuilding a store (after a restore, or into an empty database), in groups of
// BatchSize. It returns the number of events applied.
func (s *Sink) Replay(ctx context.Context, batchID string) (int, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return 0, err
	}
	applied := 0
	events := make([]flashpipe.Event, 0, s.cfg.BatchSize)
	flush := func() error {
		if err := s.apply(ctx, events); err != nil {
			return err
		}
		applied += len(events)
		events = events[:0]
		return nil
	}
	_, err := batchlog.Events(ctx, s.js, s.c, batchID, func(ev flashpipe.Event) error {
		if events = append(events, ev); len(events) == s.cfg.BatchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if errors.Is(err, flashpipe.ErrNotFound) && applied == 0 {
		keep := "ever"
		if d := s.c.Config().MaxAge; d > 0 {
			keep = d.String()
		}
		return 0, fmt.Errorf("replay %s: no events in the ordered stream (never submitted, or older than it keeps events, %s: --stream-max-age): %w",
			batchID, keep, flashpipe.ErrNotFound)
	}
	if err != nil {
		return applied, fmt.Errorf("replay %s: %w", batchID, err)
	}
	return applied, nil
}

// group is what one transaction writes: the events and the messages to ack after.
type group struct {
	msgs   []jetstream.Msg
	events []flashpipe.Event
}

// consume reads and decodes the next group while the previous one is being written:
// the two halves run in parallel, one group apart.
func (s *Sink) consume(ctx context.Context, cons jetstream.Consumer) error {
	feed, err := service.Subscribe(cons, service.Config{Pull: 2 * s.cfg.BatchSize, What: "events", Logger: s.log})
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	s.log.Info("sink started", "batch_size", s.cfg.BatchSize)
	defer feed.Stop()

	groups := make(chan group, 1)
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		defer close(groups)
		for {
			g, ok := s.read(readCtx, feed.C)
			if !ok {
				return
			}
			if len(g.events) > 0 {
				groups <- g
			}
		}
	}()
	for g := range groups {
		err := s.apply(ctx, g.events)
		if err != nil && ctx.Err() == nil && flashpipe.IsPermanent(err) {
			g.msgs, err = s.isolate(ctx, g, err)
		}
		if err != nil {
			stopRead()
			for range groups { // let the reader finish
			}
			if ctx.Err() != nil {
				s.log.Info("sink stopped; unwritten events will be redelivered", "events", len(g.events))
				return nil
			}
			return err
		}
		for _, m := range g.msgs {
			_ = m.Ack()
		}
	}
	s.log.Info("sink stopped")
	if ctx.Err() == nil {
		return fmt.Errorf("sink: events: %w", service.ErrConsumerGone)
	}
	return nil
}

// read collects the next group: it waits for one event, then takes what arrives within
// Linger, up to BatchSize. ok is false once ctx ends or in is closed.
func (s *Sink) read(ctx context.Context, in <-chan jetstream.Msg) (g group, ok bool) {
	var msg jetstream.Msg
	select {
	case msg, ok = <-in:
		if !ok {
			return g, false
		}
	case <-ctx.Done():
		return g, false
	}
	g.msgs = make([]jetstream.Msg, 0, s.cfg.BatchSize)
	g.events = make([]flashpipe.Event, 0, s.cfg.BatchSize)
	linger := time.NewTimer(s.cfg.Linger)
	defer linger.Stop()
	for {
		if ev, ok := s.decode(msg); ok {
			g.msgs, g.events = append(g.msgs, msg), append(g.events, ev)
		}
		if len(g.msgs) >= s.cfg.BatchSize {
			return g, true
		}
		select {
		case msg, ok = <-in:
			if !ok {
				return g, true // write what we have
			}
		case <-linger.C:
			return g, true
		case <-ctx.Done():
			return g, true // write what we have
		}
	}
}

// isolate handles a group the store refused for good (a constraint the data breaks):
// it writes the events one by one, so one bad event does not hold back the others, and
// sets aside each one the store refuses: kept in the store's dead letters with the
// reason (retried like any write until that succeeds), logged, counted, and only then
// terminated on the stream. `flashpipe deadletters replay` writes them once the cause
// is fixed. The messages of the events written are returned for the caller to ack.
func (s *Sink) isolate(ctx context.Context, g group, cause error) ([]jetstream.Msg, error) {
	s.log.Warn("the store refused a group; writing its events one by one", "events", len(g.events), "err", cause)
	kept := 0
	for i, ev := range g.events {
		err := s.apply(ctx, g.events[i:i+1])
		switch {
		case err == nil:
			g.msgs[kept] = g.msgs[i]
			kept++
		case flashpipe.IsPermanent(err) && ctx.Err() == nil:
			letter := flashpipe.DeadLetter{Event: ev, Reason: err.Error(), At: time.Now().UTC()}
			if err := s.write(ctx, func(wctx context.Context) error {
				return s.store.SetAside(wctx, []flashpipe.DeadLetter{letter})
			}, 1); err != nil {
				return nil, err
			}
			s.log.Error("event refused by the store: set aside as a dead letter (replay it with `flashpipe deadletters replay` once fixed)",
				"batch", ev.BatchID(), "kind", ev.Kind, "err", err)
			s.cfg.Metrics.refuse()
			_ = g.msgs[i].TermWithReason("set aside: " + err.Error())
		default:
			return nil, err
		}
	}
	return g.msgs[:kept], nil
}

// decode decodes one event; an undecodable message is terminated (it can never be
// written) and logged.
func (s *Sink) decode(msg jetstream.Msg) (flashpipe.Event, bool) {
	ev, err := contract.DecodeEvent(msg.Headers(), msg.Data())
	if err != nil {
		s.log.Error("undecodable event dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("undecodable event")
		return ev, false
	}
	return ev, true
}

// apply writes events, retrying failed writes with backoff until they succeed, a
// permanent error occurs or ctx ends. A write already under way when ctx ends is
// finished, so shutdown does not waste it.
func (s *Sink) apply(ctx context.Context, events []flashpipe.Event) error {
	return s.write(ctx, func(wctx context.Context) error { return s.store.Apply(wctx, events) }, len(events))
}

// write runs one store write, retrying it with backoff while it fails for any reason
// but a permanent one: while it fails the sink is blocked, and says so (an error in
// the log, repeated every BlockedLogEvery, the blocked metric, its beacon), until a
// write succeeds.
func (s *Sink) write(ctx context.Context, do func(context.Context) error, n int) error {
	var blockedSince, lastLog time.Time
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
		start := time.Now()
		err := do(wctx)
		s.cfg.Metrics.write(n, time.Since(start), err)
		cancel()
		if err == nil || flashpipe.IsPermanent(err) {
			if !blockedSince.IsZero() {
				s.log.Warn("sink unblocked: the store takes writes again", "blocked_for", time.Since(blockedSince).Round(time.Millisecond), "attempts", attempt)
				s.cfg.Metrics.unblock()
				s.beacon.Unblock(ctx)
			}
			if err != nil {
				return fmt.Errorf("sink: write %d events: %w", n, err)
			}
			return nil
		}
		d := backoff.Delay(attempt, s.cfg.BackoffBase, s.cfg.BackoffMax)
		cause := cmp.Or(store.CauseOf(err), store.CauseOther)
		switch {
		case blockedSince.IsZero():
			blockedSince, lastLog = time.Now(), time.Now()
			s.log.Error("sink blocked: the store refuses writes; retrying until it takes them (nothing is acked or lost meanwhile)",
				"cause", cause, "events", n, "err", err)
			s.cfg.Metrics.block(cause)
			s.beacon.Block(ctx, cause, err.Error())
		case time.Since(lastLog) >= s.cfg.BlockedLogEvery:
			lastLog = time.Now()
			s.log.Error("sink still blocked", "cause", cause, "for", time.Since(blockedSince).Round(time.Second), "attempts", attempt, "err", err)
			s.beacon.Block(ctx, cause, err.Error())
		default:
			s.log.Debug("write failed; retrying", "events", n, "attempt", attempt, "wait", d, "err", err)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
