package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/backoff"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Stage names as they appear in failures.
const (
	Stage1 = "stage1"
	Stage2 = "stage2"
)

// errRequeue marks an outcome that is no verdict on the item (the cache could not be
// read, the replica is shutting down): the item goes back for redelivery.
var errRequeue = errors.New("no verdict, requeue the item")

// Process runs one item through both stages and returns its one result, ok or failed.
// It returns an error (wrapping errRequeue, errRelease or ctx's error) only when no
// verdict was reached; the item must then be redelivered. deliveries counts the
// deliveries that spent attempts (crashes and requeues, not releases).
func (p *Processor) Process(ctx context.Context, wi flashpipe.WorkItem, deliveries int) (*flashpipe.Result, error) {
	res := &flashpipe.Result{
		BatchID:    wi.BatchID,
		Seq:        wi.Seq,
		Generation: wi.Generation,
		Item:       wi.Item,
		Attempts:   deliveries,
	}
	if deliveries > p.cfg.MaxDeliveries {
		p.fail(res, Stage1, fmt.Errorf("delivered %d times without a result (processors crashed or timed out on it)", deliveries), flashpipe.Permanent)
		return res, nil
	}
	st := p.cfg.Stages
	budget := p.cfg.MaxAttempts
	analysis, err := runStageMode(ctx, p, stageSpec[*flashpipe.Analysis]{
		name: Stage1, n: 1, batch: wi.BatchID, model: st.Model1, budget: budget,
		key: stages.Stage1Key(st, wi.Item),
		req: func() llm.Request { return stages.Stage1Request(st, wi.Item) },
		parse: func(content string) (*flashpipe.Analysis, error) {
			return stages.ParseStage1(content, wi.Item)
		},
		reuse: func(a *flashpipe.Analysis) *flashpipe.Analysis { a.TermNumber = wi.Position; return a },
	}, &res.Usage)
	if err != nil {
		return p.verdict(ctx, res, Stage1, err)
	}
	cards, err := runStageMode(ctx, p, stageSpec[[]flashpipe.Card]{
		name: Stage2, n: 2, batch: wi.BatchID, model: st.Model2, budget: budget,
		key: stages.Stage2Key(st, wi.Item, analysis),
		req: func() llm.Request { return stages.Stage2Request(st, wi.Item, analysis) },
		parse: func(content string) ([]flashpipe.Card, error) {
			return stages.ParseStage2(content, wi.Item, analysis)
		},
		reuse: func(cards []flashpipe.Card) []flashpipe.Card {
			stages.StampCards(cards, wi.Item, analysis)
			return cards
		},
	}, &res.Usage)
	if err != nil {
		return p.verdict(ctx, res, Stage2, err)
	}
	res.Status = flashpipe.StatusOK
	res.Analysis = analysis
	res.Cards = cards
	res.ProcessedAt = time.Now().UTC()
	return res, nil
}

// verdict turns a stage's error into a failed result, or into no verdict: a transient
// failure of the API (not a bad answer) that outlasted this delivery's attempts sends
// the item back for a later delivery, with a growing delay, until its deliveries run
// out; only then does it fail.
func (p *Processor) verdict(ctx context.Context, res *flashpipe.Result, stage string, err error) (*flashpipe.Result, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(err, errRelease) && res.Usage.BreakerTrips > 0 {
		return nil, &releaseError{trips: res.Usage.BreakerTrips}
	}
	if errors.Is(err, errRequeue) || errors.Is(err, errRelease) || errors.Is(err, errCapped) {
		return nil, err
	}
	if flashpipe.ClassOf(err) == flashpipe.Transient && !errors.Is(err, stages.ErrInvalidAnswer) && res.Attempts < p.cfg.MaxDeliveries {
		return nil, &requeueError{delay: p.requeueDelay(res.Attempts), err: err, trips: res.Usage.BreakerTrips}
	}
	p.fail(res, stage, err, flashpipe.ClassOf(err))
	return res, nil
}

// requeueError sends an item back for a later delivery after delay. trips are the
// breaker openings the delivery caused, kept in the ledger for the item's result.
type requeueError struct {
	delay time.Duration
	err   error
	trips int
}

func (e *requeueError) Error() string {
	return fmt.Sprintf("requeued for %s: %v", e.delay.Round(time.Millisecond), e.err)
}
func (e *requeueError) Unwrap() []error { return []error{errRequeue, e.err} }

// requeueDelay grows with the deliveries so far: BackoffBase * 2^(d+2), capped at
// RequeueBackoffMax, with jitter.
func (p *Processor) requeueDelay(deliveries int) time.Duration {
	return backoff.Delay(deliveries+3, p.cfg.BackoffBase, p.cfg.RequeueBackoffMax)
}

func (p *Processor) fail(res *flashpipe.Result, stage string, err error, class flashpipe.ErrorClass) {
	next := flashpipe.NextRetry
	var ae *llm.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == 400:
		next = flashpipe.NextFixInput
	case errors.As(err, &ae) && (ae.Status == 402 || ae.Status == 413):
		next = flashpipe.NextRaiseLimit
	case errors.Is(err, llm.ErrAccount):
		next = flashpipe.NextCheckKey
	}
	res.Status = flashpipe.StatusFailed
	res.Failure = &flashpipe.Failure{Stage: stage, Reason: p.cfg.Redactor.Redact(err.Error()), Class: class, NextStep: next}
	res.ProcessedAt = time.Now().UTC()
	p.log.Warn("item failed", "batch", res.BatchID, "position", res.Position, "stage", stage, "class", class, "err", res.Failure.Reason)
}

// stageSpec describes one stage of one item.
type stageSpec[T any] struct {
	name   string
	n      int
	batch  string // the batch whose caps pay for the calls
	model  string
	budget int // API attempts this stage may make
	key    string
	req    func() llm.Request
	parse  func(content string) (T, error)
	// reuse adapts an answer made for another item with the same key (a cache hit)
	// to this one: its position-dependent parts.
	reuse func(T) T
}

// runStage returns the stage's answer from the cache, or pays for it (once per key in
// this replica, however many items ask at the same time) and caches it.
func runStage[T any](ctx context.Context, p *Processor, s stageSpec[T], usage *flashpipe.Usage) (T, error) {
	var zero T
	if p.cache == nil {
		return attempts(ctx, p, s, usage)
	}
	var (
		spent flashpipe.Usage
		fresh T
	)
	entry, hit, err := p.cache.Do(ctx, cache.Key(s.n, s.model, s.key), func() (cache.Entry, error) {
		v, err := attempts(ctx, p, s, &spent)
		if err != nil {
			return cache.Entry{}, err
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return cache.Entry{}, flashpipe.AsPermanent(fmt.Errorf("encode %s answer: %w", s.name, err))
		}
		fresh = v
		return cache.Entry{Stage: s.n, Model: s.model, Value: raw, Usage: spent}, nil
	})
	p.metrics.lookup(s.name, hit)
	if hit {
		usage.CacheHits++
	} else {
		usage.CacheMisses++
		*usage = usage.Add(spent)
	}
	switch {
	case errors.Is(err, cache.ErrUnavailable):
		// The cache could not be read: retry the item later rather than pay again.
		return zero, fmt.Errorf("%w: %w", errRequeue, err)
	case err != nil:
		return zero, err
	case !hit:
		return fresh, nil
	}
	var v T
	if err := json.Unmarshal(entry.Value, &v); err != nil {
		return zero, fmt.Errorf("%w: decode cached %s answer: %w", errRequeue, s.name, err)
	}
	return s.reuse(v), nil
}

// attempts makes up to s.budget API attempts for one stage: transient errors
// (including answers that fail validation) are retried with exponential backoff and
// jitter, honouring Retry-After; permanent errors end the stage at once. An account
// error pauses the replica (see gate) and the attempt is made again once it resumes,
// and an open circuit breaker releases the item (errRelease): neither counts against
// the item.
func attempts[T any](ctx context.Context, p *Processor, s stageSpec[T], usage *flashpipe.Usage) (T, error) {
	var zero T
	req := s.req()
	for attempt := 1; ; {
		if err := p.gate.waitCall(ctx); err != nil {
			return zero, err
		}
		if l := p.cfg.Limiter; l != nil {
			start := time.Now()
			if err := l.Wait(ctx); err != nil {
				return zero, fmt.Errorf("%w: rate limiter: %w", errRequeue, err)
			}
			countWait(usage, time.Since(start))
		}
		hold, err := p.reserve(ctx, s.batch, req)
		if err != nil {
			return zero, err
		}
		callCtx, cancelCall := ctx, context.CancelFunc(func() {})
		if hold != nil {
			// The call ends before its reservation could lapse.
			callCtx, cancelCall = context.WithDeadline(ctx, hold.Deadline())
		}
		resp, err := p.breaker.call(func() (*llm.Response, error) { return p.api.Complete(callCtx, req) }, &usage.BreakerTrips)
		cancelCall()
		p.settle(ctx, hold, s.model, resp, err)
		if errors.Is(err, errRelease) {
			return zero, err
		}
		p.observe(resp, err)
		countCall(usage, s.n, resp)
		throttled := isThrottled(err)
		if throttled {
			usage.Throttled++
		}
		p.metrics.call(s.name, outcome(err))
		if errors.Is(err, llm.ErrAccount) && ctx.Err() == nil {
			p.gate.pause(err)
			continue
		}
		p.gate.resume()
		if err == nil {
			var v T
			if v, err = s.parse(resp.Content); err == nil {
				return v, nil
			}
		}
		if ctx.Err() != nil || flashpipe.IsPermanent(err) || attempt >= s.budget {
			if attempt > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return zero, err
		}
		wait := p.backoff(attempt, flashpipe.RetryAfterOf(err))
		p.log.Debug("retrying stage", "stage", s.name, "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(wait):
		}
		if throttled {
			countWait(usage, wait)
		}
		usage.Retries++
		attempt++
	}
}

// observe tells the rate limiter what a call used, and about a 429: every replica
// then pauses until the API's Retry-After or X-RateLimit-Reset.
func (p *Processor) observe(resp *llm.Response, err error) {
	l := p.cfg.Limiter
	if l == nil {
		return
	}
	if resp != nil {
		l.Observe(int(resp.Usage.PromptTokens + resp.Usage.CompletionTokens))
	}
	var ae *llm.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
		l.Throttled(ae.RetryAfter, ae.RateLimit.Reset)
	}
}

// isThrottled reports whether err is the API's 429.
func isThrottled(err error) bool {
	var ae *llm.APIError
	return errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests
}

// minRateLimitWait is the shortest wait for the rate limit that Usage counts: a
// limiter that lets a call through at once still takes a few microseconds.
const minRateLimitWait = time.Millisecond

// countWait adds a wait for the rate limit (or for a 429's Retry-After) to u.
func countWait(u *flashpipe.Usage, d time.Duration) {
	if d >= minRateLimitWait {
		u.RateLimitWaits++
		u.RateLimitWaitMS += d.Milliseconds()
	}
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case flashpipe.IsPermanent(err):
		return "permanent"
	}
	return "transient"
}

func countCall(u *flashpipe.Usage, stage int, resp *llm.Response) {
	if stage == 1 {
		u.Stage1Calls++
	} else {
		u.Stage2Calls++
	}
	if resp != nil {
		u.PromptTokens += resp.Usage.PromptTokens
		u.CompletionTokens += resp.Usage.CompletionTokens
		u.Cost += resp.Usage.Cost
	}
}

// backoff returns the wait before attempt+1: the source's Retry-After when given (capped
// at BackoffMax), else exponential from BackoffBase with jitter.
func (p *Processor) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, p.cfg.BackoffMax)
	}
	return backoff.Delay(attempt, p.cfg.BackoffBase, p.cfg.BackoffMax)
}
