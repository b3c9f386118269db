// Package sink writes each batch's ordered events to a Store: the batch row, one row
// per item and one row per card.
//
// Ack rule: messages are acknowledged only after the transaction holding them commits.
// A failed write is retried (with backoff) and nothing is acked until it succeeds, so a
// crash or a database outage loses nothing; a redelivery is harmless because Store.Apply
// is idempotent and keyed by (batch, position).
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
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
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
	// Metrics records Prometheus metrics (nil: none).
	Metrics *Metrics
	Logger  *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.Linger = cmp.Or(c.Linger, DefaultLinger)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.BackoffBase = cmp.Or(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
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
	js    jetstream.JetStream
	c     *contract.Contract
	store flashpipe.Store
	cfg   Config
	log   *slog.Logger
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
	return &Sink{js: js, c: c, store: store, cfg: cfg, log: cfg.Logger.With("component", "sink")}, nil
}

// Run writes events until ctx is cancelled; the write in progress is finished and
// acknowledged before Run returns.
func (s *Sink) Run(ctx context.Context) error {
	if err := s.c.EnsureStreams(ctx, s.js); err != nil {
		return err
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.c.OrderedStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		Description:   "flashpipe sink: ordered events to the store",
		FilterSubject: s.c.AllOrdered(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: 4 * s.cfg.BatchSize,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("sink: create consumer: %w", err)
	}
	return s.consume(ctx, cons)
}

// Replay applies every event of one batch from the ordered stream to the store, for
// rebuilding a store (after a restore, or into an empty database). It returns the
// number of events applied.
func (s *Sink) Replay(ctx context.Context, batchID string) (int, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return 0, err
	}
	oc, err := s.js.OrderedConsumer(ctx, s.c.OrderedStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.c.OrderedSubject(batchID)},
	})
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", batchID, err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", batchID, err)
	}
	total := int(info.NumPending)
	if total == 0 {
		keep := "ever"
		if d := s.c.Config().MaxAge; d > 0 {
			keep = d.String()
		}
		return 0, fmt.Errorf("replay %s: no events in the ordered stream (never submitted, or older than it keeps events, %s: --stream-max-age): %w",
			batchID, keep, flashpipe.ErrNotFound)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(s.cfg.BatchSize), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", batchID, err)
	}
	defer it.Stop()
	applied := 0
	events := make([]flashpipe.Event, 0, s.cfg.BatchSize)
	for applied < total {
		events = events[:0]
		for len(events) < s.cfg.BatchSize && applied+len(events) < total {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return applied, fmt.Errorf("replay %s: %w", batchID, err)
			}
			ev, err := contract.DecodeEvent(msg.Headers(), msg.Data())
			if err != nil {
				return applied, fmt.Errorf("replay %s: event %d: %w", batchID, applied+len(events)+1, err)
			}
			events = append(events, ev)
		}
		if err := s.apply(ctx, events); err != nil {
			return applied, err
		}
		applied += len(events)
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
	// Consume hands messages to a callback that passes them on to the reader, blocking
	// while the reader is busy: nothing is dropped (a bounded channel iterator can
	// overflow after a reconnect), and Consume recovers from lost heartbeats itself.
	in := make(chan jetstream.Msg)
	stopped := make(chan struct{})
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		select {
		case in <- msg:
		case <-stopped:
		}
	}, jetstream.PullMaxMessages(2*s.cfg.BatchSize), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.log.Warn("consume events", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("sink: consume: %w", err)
	}
	s.log.Info("sink started", "batch_size", s.cfg.BatchSize)
	defer close(stopped)
	defer cc.Stop()

	groups := make(chan group, 1)
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		defer close(groups)
		for {
			g, ok := s.read(readCtx, in)
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
	return nil
}

// read collects the next group: it waits for one event, then takes what arrives within
// Linger, up to BatchSize. ok is false once ctx ends.
func (s *Sink) read(ctx context.Context, in <-chan jetstream.Msg) (g group, ok bool) {
	var msg jetstream.Msg
	select {
	case msg = <-in:
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
		case msg = <-in:
		case <-linger.C:
			return g, true
		case <-ctx.Done():
			return g, true // write what we have
		}
	}
}

// isolate handles a group the store refused for good (a constraint the data breaks):
// it writes the events one by one, so one bad event does not hold back the others,
// and terminates the ones the store refuses, logging each. A terminated event stays
// in the ordered stream: once its cause is fixed, `flashpipe replay` writes it. The
// messages of the events written are returned for the caller to ack.
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
			s.log.Error("event refused by the store and dropped from the sink (still in the ordered stream: replay it once fixed)",
				"batch", ev.BatchID(), "kind", ev.Kind, "err", err)
			s.cfg.Metrics.refuse()
			_ = g.msgs[i].TermWithReason("refused by the store: " + err.Error())
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
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
		start := time.Now()
		err := s.store.Apply(wctx, events)
		s.cfg.Metrics.write(len(events), time.Since(start), err)
		cancel()
		if err == nil {
			return nil
		}
		if flashpipe.IsPermanent(err) {
			return fmt.Errorf("sink: write %d events: %w", len(events), err)
		}
		d := min(s.cfg.BackoffBase<<min(attempt-1, 16), s.cfg.BackoffMax)
		d = d/2 + rand.N(d/2+1)
		s.log.Warn("write failed; retrying", "events", len(events), "attempt", attempt, "wait", d, "err", err)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
