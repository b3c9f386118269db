// Package service is the lifecycle the pipeline's services share: at start, the
// streams they need (created if missing, never changed: see contract.EnsureStreams)
// and their durable consumer; while they run, a Feed that hands them the consumer's
// messages one at a time, blocking the client while they are busy; on shutdown, a
// drain that stops fetching and lets the work in hand finish.
//
// A Feed never drops a message: the client fetches at most Config.Pull messages
// ahead, each waits in the client's callback until a worker takes it, and a message
// still waiting when the feed stops is released (nak) for redelivery. (A bounded
// channel iterator can overflow after a reconnect; Consume with a blocking callback
// cannot, and recovers from lost heartbeats and reconnects by itself.)
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// ErrConsumerGone is returned by a service whose consumer stopped while it was
// running (deleted by an operator, say).
var ErrConsumerGone = errors.New("the consumer stopped (was it deleted?)")

// OpenConsumer ensures the contract's streams and creates the durable consumer cfg
// describes on stream, or updates it to cfg: a service owns its consumer's settings.
func OpenConsumer(ctx context.Context, js jetstream.JetStream, c *contract.Contract, stream string, cfg jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	if err := c.EnsureStreams(ctx, js, log); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return cons, nil
}

// Config configures a Feed.
type Config struct {
	// Pull is how many messages the client fetches ahead (at least 1).
	Pull int
	// What names the messages in logs ("items", "events").
	What   string
	Logger *slog.Logger
}

// Feed hands a consumer's messages to a service through C.
type Feed struct {
	// C delivers the messages; it is closed once the consumer has stopped (after
	// Drain or Stop, or if the consumer went away).
	C <-chan jetstream.Msg

	cc       jetstream.ConsumeContext
	stop     chan struct{}
	stopOnce sync.Once
	closed   chan struct{}
}

// Subscribe starts consuming cons into a Feed.
func Subscribe(cons jetstream.Consumer, cfg Config) (*Feed, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := make(chan jetstream.Msg)
	f := &Feed{C: c, stop: make(chan struct{}), closed: make(chan struct{})}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		select {
		case c <- msg:
		case <-f.stop:
			_ = msg.Nak() // stopping: let another replica have it now
		}
	}, jetstream.PullMaxMessages(max(cfg.Pull, 1)), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		cfg.Logger.Warn("consume "+cfg.What, "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", cfg.What, err)
	}
	f.cc = cc
	go func() {
		<-cc.Closed()
		close(c)
		close(f.closed)
	}()
	return f, nil
}

// Drain stops fetching: the messages already fetched are still handed out on C, which
// closes once they all are.
func (f *Feed) Drain() { f.cc.Drain() }

// Stop stops at once: a message fetched but not yet handed out is released for
// redelivery, and C closes. Safe to call more than once and after Drain.
func (f *Feed) Stop() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.cc.Stop()
}

// Closed is closed once the consumer has stopped and C is closed.
func (f *Feed) Closed() <-chan struct{} { return f.closed }
