// Package processor is the stage that turns work items into results: it consumes the
// ready stream (the items the scheduler dispatches, in fair order between batches and
// tenants, each checked) through one durable pull consumer shared by every replica, runs each
// item through stage 1 (nuance analysis) and stage 2 (flashcards) against an
// OpenAI-compatible API, and publishes exactly one result per item, ok or failed.
//
// Ack rule: an item is acknowledged only after its result's publish is acknowledged by
// JetStream, or, for an item a spend cap holds, after it is set aside in the spend
// ledger (from where the scheduler dispatches it again). A crash before that redelivers the item; the result's Nats-Msg-Id (batch,
// position, generation) makes a second publish a no-op, and downstream stages are
// idempotent, so a redelivery never makes a second row.
//
// Concurrency: the consumer's MaxAckPending (Config.ConcurrentMax) caps the items in
// flight across all replicas; Config.Workers caps each replica. Items are processed in
// any order; the sequencer restores order.
package processor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/service"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Defaults for Config.
const (
	DefaultDurable       = "processor"
	DefaultConcurrentMax = 50
	DefaultAckWait       = 60 * time.Second
	DefaultMaxDeliveries = 10
	DefaultDrainTimeout  = 30 * time.Second
	DefaultMaxAttempts   = 3
	DefaultBackoffBase   = 250 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	DefaultProbeInterval = 30 * time.Second
	DefaultRequeueDelay  = 2 * time.Second
	// DefaultBreakerThreshold consecutive outage failures open the circuit breaker for
	// DefaultBreakerTimeout.
	DefaultBreakerThreshold  = 5
	DefaultBreakerTimeout    = 30 * time.Second
	DefaultRequeueBackoffMax = 2 * time.Minute
)

// Completer is the LLM API as the processor uses it. Complete makes one attempt and
// returns errors classified by flashpipe.ClassOf.
type Completer interface {
	Complete(ctx context.Context, req llm.Request) (*llm.Response, error)
}

// RateLimiter is the API rate limit shared by all replicas (internal/ratelimit). Wait
// blocks until one request may be sent; Observe reports the tokens a request used;
// Throttled reports a 429 and the wait it asked for.
type RateLimiter interface {
	Wait(ctx context.Context) error
	Observe(tokens int)
	Throttled(retryAfter time.Duration, reset time.Time)
}

// AnswerCache is the answer cache as the processor uses it (internal/cache.Cache).
type AnswerCache interface {
	Do(ctx context.Context, key string, fn func() (cache.Entry, error)) (cache.Entry, bool, error)
}

// Config configures a processor replica.
type Config struct {
	// Durable is the name of the pull consumer all replicas share.
	Durable string
	// ConcurrentMax caps items in flight across all replicas (the consumer's
	// MaxAckPending). 1 means strictly sequential processing.
	ConcurrentMax int
	// Workers caps items in flight in this replica (default ConcurrentMax).
	Workers int
	// AckWait is how long JetStream waits for an ack before redelivering; the
	// processor extends it with progress acks while it works on an item.
	AckWait time.Duration
	// MaxDeliveries is how many deliveries an item gets before it fails for good:
	// a delivery ends without a verdict when its processor crashes, or when the API
	// kept failing transiently through MaxAttempts attempts (the item is then sent
	// back with a growing delay). Deliveries that end without a verdict through no
	// fault of the item (an open breaker, an unreadable cache, a shutdown) do not count.
	MaxDeliveries int
	// DrainTimeout bounds how long Run waits for in-flight items on shutdown.
	DrainTimeout time.Duration
	// MaxAttempts is the number of API attempts per stage and delivery for transient
	// errors (an invalid answer fails the item after MaxAttempts).
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff between attempts.
	BackoffBase, BackoffMax time.Duration
	// ProbeInterval is how often a replica paused by an account error (bad key, no
	// credits) tries one call to see whether it was fixed.
	ProbeInterval time.Duration
	// RequeueDelay is how long an item waits before redelivery when no verdict could
	// be reached (the cache could not be read).
	RequeueDelay time.Duration
	// RequeueBackoffMax caps the delay before an item whose API calls kept failing
	// transiently is delivered again.
	RequeueBackoffMax time.Duration
	// BreakerThreshold consecutive outage failures (network errors, timeouts, 5xx)
	// open the circuit breaker; BreakerTimeout later one call probes the API.
	BreakerThreshold int
	BreakerTimeout   time.Duration
	// Batch configures batch mode (batchmode.go): the provider's batch API, the
	// replica's default API mode, the gathering size and wait.
	Batch BatchConfig
	// Stages configures models, prompts and limits of the two stages.
	Stages stages.Config
	// Limiter paces the API calls under the shared rate limit (nil: no limit).
	Limiter RateLimiter
	// Metrics records Prometheus metrics (nil: none).
	Metrics *Metrics
	// Spend reserves each API call's worst case under the spend caps shared by every
	// replica, and settles it to the reported cost (nil: no caps). An item whose call a
	// cap refuses is held, unpaid: set aside in the ledger and acknowledged (the
	// scheduler dispatches it again once the cap allows), or if it cannot be set aside,
	// sent back after CapDelay, its delivery not counted.
	Spend SpendLedger
	// Prices prices the calls for the caps (nil: the default prices).
	Prices *spend.PriceBook
	// CapDelay is how long an item held by a spend cap waits (DefaultCapDelay).
	CapDelay time.Duration
	// Redactor removes secrets (the API key, NATS tokens and passwords) and their
	// fragments from failure reasons before they are published (nil: none; the LLM
	// client already redacts its own key from its errors).
	Redactor *secret.Redactor
	// ID names this replica in logs and results.
	ID     string
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.ConcurrentMax = cmp.Or(c.ConcurrentMax, DefaultConcurrentMax)
	c.Workers = cmp.Or(c.Workers, c.ConcurrentMax)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, DefaultMaxDeliveries)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, DefaultMaxAttempts)
	c.BackoffBase = cmp.Or(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultProbeInterval)
	c.RequeueDelay = cmp.Or(c.RequeueDelay, DefaultRequeueDelay)
	c.RequeueBackoffMax = cmp.Or(c.RequeueBackoffMax, DefaultRequeueBackoffMax)
	c.BreakerThreshold = cmp.Or(c.BreakerThreshold, DefaultBreakerThreshold)
	c.BreakerTimeout = cmp.Or(c.BreakerTimeout, DefaultBreakerTimeout)
	c.Batch = c.Batch.withDefaults()
	c.CapDelay = cmp.Or(c.CapDelay, DefaultCapDelay)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.ConcurrentMax < 1:
		return fmt.Errorf("processor: Config.ConcurrentMax must be at least 1, got %d", c.ConcurrentMax)
	case c.Workers < 1:
		return fmt.Errorf("processor: Config.Workers must be at least 1, got %d", c.Workers)
	case c.AckWait < time.Second:
		return fmt.Errorf("processor: Config.AckWait must be at least 1s, got %s", c.AckWait)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("processor: Config.MaxDeliveries must be at least 1, got %d", c.MaxDeliveries)
	case c.MaxAttempts < 1:
		return fmt.Errorf("processor: Config.MaxAttempts must be at least 1, got %d", c.MaxAttempts)
	case c.ProbeInterval <= 0:
		return fmt.Errorf("processor: Config.ProbeInterval must be positive")
	case c.BreakerThreshold < 1:
		return fmt.Errorf("processor: Config.BreakerThreshold must be at least 1, got %d", c.BreakerThreshold)
	case c.BreakerTimeout < 100*time.Millisecond:
		return fmt.Errorf("processor: Config.BreakerTimeout must be at least 100ms, got %s", c.BreakerTimeout)
	}
	return c.Batch.validate()
}

// Processor is one processor replica. Run it with Run; it is not reusable after Run
// returns.
type Processor struct {
	js      jetstream.JetStream
	c       *contract.Contract
	api     Completer
	cache   AnswerCache
	cfg     Config
	log     *slog.Logger
	gate    *gate
	breaker *breaker
	ledger  *ledger
	metrics *Metrics
	// batch is batch mode's machinery, nil without a batch API.
	batch       *batchMode
	noBatchOnce sync.Once
}

// New returns a processor replica. answers may be nil (no cache: every item pays).
func New(js jetstream.JetStream, c *contract.Contract, api Completer, answers AnswerCache, cfg Config) (*Processor, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || c == nil || api == nil {
		return nil, errors.New("processor: JetStream, contract and API client are required")
	}
	log := cfg.Logger.With("component", "processor")
	if cfg.ID != "" {
		log = log.With("replica", cfg.ID)
	}
	return &Processor{
		js: js, c: c, api: api, cache: answers, cfg: cfg, log: log, metrics: cfg.Metrics,
		gate:    newGate(cfg.ProbeInterval, log, cfg.Metrics),
		breaker: newBreaker(cfg.BreakerThreshold, cfg.BreakerTimeout, log, cfg.Metrics),
	}, nil
}

// ConsumerConfig is the durable consumer the replicas share.
func (p *Processor) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       p.cfg.Durable,
		Description:   "flashpipe processors: one shared pull consumer",
		FilterSubject: p.c.AllReady(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.cfg.AckWait,
		MaxAckPending: p.cfg.ConcurrentMax,
		// Unlimited deliveries: the processor itself gives up after MaxDeliveries and
		// publishes a failed result, so no item is ever dropped by the server.
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Run consumes items until ctx is cancelled, then stops fetching, finishes the items in
// hand (up to DrainTimeout) and returns. Items it could not finish are released for
// redelivery.
func (p *Processor) Run(ctx context.Context) (err error) {
	cons, err := service.OpenConsumer(ctx, p.js, p.c, p.c.ReadyStream(), p.ConsumerConfig(), p.log)
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	if p.ledger, err = openLedger(ctx, p.js, p.c, p.log); err != nil {
		return err
	}
	// Work outlives ctx by up to DrainTimeout so in-flight items can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	if p.cfg.Batch.Provider != nil {
		if p.batch, err = newBatchMode(ctx, p); err != nil {
			if p.cfg.Batch.Mode == ModeBatch {
				return err
			}
			// Batch mode only on request: without it, batch-mode batches run in sync
			// mode (itemMode says so).
			p.log.Error("batch mode unavailable; batches asking for it will run in sync mode", "err", err)
			p.batch, err = nil, nil
		}
	}
	if p.batch != nil {
		var bwg sync.WaitGroup
		defer bwg.Wait()
		defer cancelWork()
		bwg.Go(func() { p.batch.run(work) })
	}
	feed, err := service.Subscribe(cons, service.Config{Pull: p.cfg.Workers, What: "items", Logger: p.log})
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	defer feed.Stop()
	p.log.Info("processor started", "workers", p.cfg.Workers, "concurrent_max", p.cfg.ConcurrentMax)
	stopDrain := context.AfterFunc(ctx, func() {
		feed.Drain()
		time.AfterFunc(p.cfg.DrainTimeout, func() { feed.Stop(); cancelWork() })
	})
	defer stopDrain()

	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() {
			for {
				// An account error or an open circuit breaker: take no new items (on
				// shutdown these return at once and the drained items are finished).
				if p.gate.waitOpen(ctx) == nil {
					_ = p.breaker.waitNotOpen(ctx)
				}
				msg, ok := <-feed.C
				if !ok {
					return
				}
				p.handle(work, msg)
			}
		})
	}
	wg.Wait()
	p.log.Info("processor stopped")
	if ctx.Err() == nil {
		return fmt.Errorf("processor: items: %w", service.ErrConsumerGone)
	}
	return nil
}

// handle processes one delivery: decode, process, publish the result, ack.
func (p *Processor) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		p.log.Error("item without metadata", "err", err)
		_ = msg.Term()
		return
	}
	wi, err := contract.DecodeItem(msg.Headers(), msg.Data())
	if err != nil {
		p.poison(ctx, msg, err)
		return
	}
	// Deliveries that were releases (open breaker) do not count as attempts; the
	// others (crashes, timeouts) do.
	deliveries := int(md.NumDelivered)
	if deliveries > 1 {
		released, err := p.ledger.releases(ctx, wi)
		if err != nil {
			p.log.Warn("release ledger unreadable; counting every delivery", "err", err)
		}
		deliveries = max(1, deliveries-released)
	}
	stopProgress := p.keepAlive(msg)
	p.metrics.inFlight(1)
	res, err := p.Process(withAPIMode(withBatchID(ctx, wi.BatchID), p.itemMode(msg.Headers())), wi, deliveries)
	p.metrics.inFlight(-1)
	stopProgress()
	var rq *requeueError
	switch {
	case errors.As(err, &rq):
		p.log.Info("API kept failing; item requeued", "batch", wi.BatchID, "position", wi.Position, "delay", rq.delay, "err", rq.err)
		_ = msg.NakWithDelay(rq.delay)
		return
	case errors.Is(err, errCapped):
		// Held by a spend cap: nothing was paid and nothing fails; the item is set
		// aside until the cap is raised.
		p.log.Info("item held: spend cap reached", "batch", wi.BatchID, "position", wi.Position, "err", err)
		p.hold(ctx, msg, wi)
		return
	case errors.Is(err, errRelease):
		p.recordRelease(ctx, wi)
		p.metrics.release()
		_ = msg.NakWithDelay(p.breaker.releaseDelay())
		return
	case errors.Is(err, errRequeue):
		// No verdict (the cache could not be read): the delivery does not count.
		p.log.Warn("no verdict; item requeued", "batch", wi.BatchID, "position", wi.Position, "err", err)
		p.recordRelease(ctx, wi)
		_ = msg.NakWithDelay(p.cfg.RequeueDelay)
		return
	case err != nil:
		// Shutting down: let another replica have it now; the delivery does not count.
		p.recordRelease(ctx, wi)
		_ = msg.Nak()
		return
	}
	p.publishAndAck(ctx, msg, res)
}

func (p *Processor) publishAndAck(ctx context.Context, msg jetstream.Msg, res *flashpipe.Result) {
	out, err := p.c.ResultMsg(res)
	if err == nil {
		_, err = p.js.PublishMsg(ctx, out, jetstream.WithMsgID(contract.MsgID(res.BatchID, res.Position, res.Generation)))
	}
	if err != nil {
		p.log.Warn("publish result; item will be redelivered", "batch", res.BatchID, "position", res.Position, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	p.metrics.item(string(res.Status))
	if err := msg.Ack(); err != nil {
		// The result is durable; a redelivery republishes it as a duplicate (no-op).
		p.log.Warn("ack item", "batch", res.BatchID, "position", res.Position, "err", err)
	}
}

// recordRelease notes in the ledger that this delivery ends without spending an
// attempt (breaker open, no verdict, shutdown). Best effort: if the ledger cannot be
// written, the delivery counts.
func (p *Processor) recordRelease(ctx context.Context, wi flashpipe.WorkItem) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := p.ledger.add(lctx, wi); err != nil {
		p.log.Warn("release not recorded; the delivery will count as an attempt", "batch", wi.BatchID, "position", wi.Position, "err", err)
	}
}

// poison handles an item message that cannot be decoded. The ready stream is written
// by the scheduler only, which checked and re-encoded every item, so this is no
// client's bad input but a bug or a corruption: the item gets a failed result under
// the seq its subject names (never a header alone), so its batch is not blocked.
func (p *Processor) poison(ctx context.Context, msg jetstream.Msg, cause error) {
	batch, seq, ok := p.c.SubjectKeys(msg.Subject())
	k, kerr := contract.KeysOf(msg.Headers())
	if !ok || kerr != nil || k.BatchID != batch || k.Seq != seq {
		p.log.Error("undecodable item message dropped", "subject", msg.Subject(), "err", cause)
		_ = msg.TermWithReason("undecodable item")
		return
	}
	p.log.Error("undecodable item message", "batch", batch, "seq", seq, "err", cause)
	res := &flashpipe.Result{
		BatchID: batch, Seq: seq, Generation: k.Generation,
		Item:   flashpipe.Item{Position: k.Position},
		Status: flashpipe.StatusFailed,
		Failure: &flashpipe.Failure{Stage: "input", Reason: p.cfg.Redactor.Redact("undecodable item message: " + cause.Error()),
			Class: flashpipe.Permanent, NextStep: flashpipe.NextFixInput},
		Attempts: 1, ProcessedAt: time.Now().UTC(),
	}
	p.publishAndAck(ctx, msg, res)
}

// keepAlive tells JetStream the item is still being worked on, so a slow API does not
// cause a redelivery while the processor is alive. It returns the stop function.
func (p *Processor) keepAlive(msg jetstream.Msg) func() {
	t := time.NewTicker(p.cfg.AckWait / 3)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-done:
				return
			}
		}
	}()
	// Stopping waits for the goroutine, so no progress ack follows the final ack.
	return func() { t.Stop(); close(done); <-exited }
}
