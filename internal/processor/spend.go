package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// DefaultCapDelay is how long an item held by a spend cap waits before it is
// delivered again (and the cap looked at again).
const DefaultCapDelay = 5 * time.Second

// SpendLedger is the spend ledger as the processor uses it (internal/spend.Ledger):
// Reserve holds a call's worst case under the caps, or returns an error wrapping
// spend.ErrCapReached; SetAside records an item a cap holds, for the scheduler to
// dispatch again once the cap allows.
type SpendLedger interface {
	Reserve(ctx context.Context, batchID string, usd float64) (*spend.Reservation, error)
	SetAside(ctx context.Context, batch string, seq, generation int, subject string, header nats.Header, data []byte) error
}

// hold takes an item a spend cap refused off the consumer: set aside in the ledger,
// then acknowledged, so that it holds none of the consumer's MaxAckPending slots
// while its batch is paused (the scheduler dispatches it again once the cap allows).
// If it cannot be set aside, it is sent back after CapDelay, its delivery not counted.
func (p *Processor) hold(ctx context.Context, msg jetstream.Msg, wi flashpipe.WorkItem) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if p.cfg.Spend != nil {
		err := p.cfg.Spend.SetAside(sctx, wi.BatchID, wi.Seq, wi.Generation, msg.Subject(), msg.Headers(), msg.Data())
		if err == nil {
			if err := msg.Ack(); err != nil {
				p.log.Warn("ack a held item; it comes back and is set aside again", "batch", wi.BatchID, "position", wi.Position, "err", err)
			}
			return
		}
		p.log.Warn("held item not set aside; sent back instead", "batch", wi.BatchID, "position", wi.Position, "err", err)
	}
	p.recordRelease(ctx, wi)
	_ = msg.NakWithDelay(p.cfg.CapDelay)
}

// errCapped marks an item held by a spend cap: no call is made, the delivery does
// not count, and the item comes back after CapDelay.
var errCapped = errors.New("held by a spend cap")

// reserve holds the worst case of req under the spend caps (nil when there is no
// ledger). A cap reached returns an error wrapping errCapped; a ledger that cannot be
// written, one wrapping errRequeue: the call is not made without its reservation.
func (p *Processor) reserve(ctx context.Context, batchID string, req llm.Request) (*spend.Reservation, error) {
	if p.cfg.Spend == nil {
		return nil, nil
	}
	worst := spend.WorstCase(req, p.prices(ctx, req.Model))
	r, err := p.cfg.Spend.Reserve(ctx, batchID, worst)
	switch {
	case errors.Is(err, spend.ErrCapReached):
		return nil, fmt.Errorf("%w: %w", errCapped, err)
	case err != nil:
		return nil, fmt.Errorf("%w: spend ledger: %w", errRequeue, err)
	}
	return r, nil
}

// prices returns what the model costs through the sync API.
func (p *Processor) prices(ctx context.Context, model string) spend.Prices {
	if p.cfg.Prices == nil {
		return spend.Prices{PromptPerM: spend.DefaultPricePromptPerM, CompletionPerM: spend.DefaultPriceCompletionPerM}
	}
	return p.cfg.Prices.Sync(ctx, model)
}

// settle records what the call cost on its reservation: the cost the API reported
// (or its tokens at the model's price when it reports no cost); nothing when no call
// was made (an open breaker) or the API refused it with an error status; the whole
// worst case when the outcome is unknown (a timeout, a broken connection, an
// unreadable answer, no usage reported), since the API may have billed it.
func (p *Processor) settle(ctx context.Context, r *spend.Reservation, model string, resp *llm.Response, err error) {
	if r == nil {
		return
	}
	cost := r.Amount()
	var ae *llm.APIError
	switch {
	case resp != nil && resp.Usage.Cost > 0:
		cost = resp.Usage.Cost
	case resp != nil && resp.Usage.PromptTokens+resp.Usage.CompletionTokens > 0:
		cost = p.prices(ctx, model).Cost(resp.Usage.PromptTokens, resp.Usage.CompletionTokens)
	case resp == nil && errors.Is(err, errRelease):
		cost = 0
	case resp == nil && errors.As(err, &ae) && ae.Status >= 400:
		cost = 0
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := r.Settle(sctx, cost); serr != nil {
		p.log.Warn("spend not settled: the reservation lapses and is charged at its worst case", "reserved_usd", r.Amount(), "cost_usd", cost, "err", serr)
	}
}
