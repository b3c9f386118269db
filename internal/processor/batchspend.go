package processor

import (
	"context"
	"errors"
	"time"

	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// Spend caps in batch mode. Before a provider batch is submitted, the worst case of
// its requests at the batch price (spend.WorstCase at PriceBook.Batch: the sync price
// times the batch rate) is reserved, once per flashpipe batch it serves, on that
// batch's cap and the period's; when the whole does not fit, request by request, as
// many as fit. The requests left out have their claims released: their items stay
// held, nothing paid, and ask again after BatchConfig.Wait and ClaimGrace, so a raised
// cap lets them go. When the provider batch ends, the replica that reserved settles
// each reservation to the costs its results report (usage.cost per result, or its
// tokens at the batch price when it reports no cost; nothing for a request without
// a result). A provider batch runs for hours: its reservations live BatchHoldTTL (the
// 24-hour window and a margin; spend.Ledger.ReserveFor), held against the caps all
// that time. The replica that applies the results writes each request's cost into
// the record; a reserving replica that finds the record final (another applied it)
// settles its reservations to them. If the reserving replica died, its reservations
// stay held until they lapse, then are charged at their worst case: the caps can be
// reached early, never passed.

// batchPrices is the price of model in a provider batch.
func (p *Processor) batchPrices(ctx context.Context, model string) spend.Prices {
	if p.cfg.Prices == nil {
		return spend.Prices{PromptPerM: spend.DefaultPricePromptPerM, CompletionPerM: spend.DefaultPriceCompletionPerM}.Scaled(spend.DefaultBatchRate)
	}
	return p.cfg.Prices.Batch(ctx, model)
}

// BatchHoldTTL is how long a provider batch's reservation lives unsettled: the
// providers' 24-hour completion window and an hour of margin.
const BatchHoldTTL = 25 * time.Hour

// longReserver is a ledger that reserves for long work (internal/spend.Ledger).
type longReserver interface {
	ReserveFor(ctx context.Context, batchID string, usd float64, ttl time.Duration) (*spend.Reservation, error)
}

// reserveLong reserves usd on the batch for BatchHoldTTL (Config.Spend's own TTL when
// the ledger cannot reserve for longer).
func (b *batchMode) reserveLong(ctx context.Context, batch string, usd float64) (*spend.Reservation, error) {
	if lr, ok := b.p.cfg.Spend.(longReserver); ok {
		return lr.ReserveFor(ctx, batch, usd, BatchHoldTTL)
	}
	return b.p.cfg.Spend.Reserve(ctx, batch, usd)
}

// pauseReporter is a ledger that tells which batches a spend cap pauses
// (internal/spend.Ledger).
type pauseReporter interface {
	Held(ctx context.Context, batches []string) (map[string]bool, error)
}

// paused reports whether a spend cap (the batch's or the period's) pauses batch; false
// when the ledger cannot tell.
func (b *batchMode) paused(ctx context.Context, batch string) bool {
	pr, ok := b.p.cfg.Spend.(pauseReporter)
	if !ok || batch == "" {
		return false
	}
	held, err := pr.Held(ctx, []string{batch})
	return err == nil && held[batch]
}

// heldSpend is one reservation and the requests (custom_ids) it covers.
type heldSpend struct {
	r   *spend.Reservation
	ids []string
}

// reserveBatch reserves the worst case of reqs (owners[i] is the flashpipe batch of
// reqs[i]), once per flashpipe batch; when that is refused by a cap, request by
// request, as many as fit. It returns the requests it may send and their owners; the
// others' claims are released. The reservations are kept for settle.
func (b *batchMode) reserveBatch(ctx context.Context, rec *ProviderBatch, reqs []batchapi.Request, owners []string) ([]batchapi.Request, []string) {
	if b.p.cfg.Spend == nil {
		return reqs, owners
	}
	prices := b.p.batchPrices(ctx, rec.Model)
	byOwner := map[string][]int{}
	var order []string
	for i := range reqs {
		if _, ok := byOwner[owners[i]]; !ok {
			order = append(order, owners[i])
		}
		byOwner[owners[i]] = append(byOwner[owners[i]], i)
	}
	var holds []heldSpend
	keep := make([]bool, len(reqs))
	for _, batch := range order {
		idx := byOwner[batch]
		worst, ids := 0.0, make([]string, len(idx))
		for j, i := range idx {
			worst += spend.WorstCase(reqs[i].Body, prices)
			ids[j] = reqs[i].CustomID
		}
		r, err := b.reserveLong(ctx, batch, worst)
		if err == nil {
			holds = append(holds, heldSpend{r: r, ids: ids})
			for _, i := range idx {
				keep[i] = true
			}
			continue
		}
		if !errors.Is(err, spend.ErrCapReached) {
			b.log.Warn("spend ledger unavailable; requests not sent", "batch", batch, "key", rec.Key, "err", err)
			continue
		}
		// The whole does not fit: as many requests as do, one reservation each.
		sent := 0
		for _, i := range idx {
			r, err := b.reserveLong(ctx, batch, spend.WorstCase(reqs[i].Body, prices))
			if err != nil {
				break
			}
			holds = append(holds, heldSpend{r: r, ids: []string{reqs[i].CustomID}})
			keep[i] = true
			sent++
		}
		b.log.Info("requests held by a spend cap; not sent", "batch", batch, "key", rec.Key, "held", len(idx)-sent, "sent", sent)
	}
	b.keepHolds(rec.Key, holds)
	var keptReqs []batchapi.Request
	var keptOwners []string
	for i, r := range reqs {
		if keep[i] {
			keptReqs, keptOwners = append(keptReqs, r), append(keptOwners, owners[i])
			continue
		}
		b.releaseClaimOf(ctx, rec, r.CustomID)
	}
	return keptReqs, keptOwners
}

func (b *batchMode) keepHolds(key string, holds []heldSpend) {
	if len(holds) == 0 {
		return
	}
	b.mu.Lock()
	b.holds[key] = append(b.holds[key], holds...) // a recovery's resubmission adds to them
	b.mu.Unlock()
}

// releaseClaimOf deletes the claim of the request with customID in rec.
func (b *batchMode) releaseClaimOf(ctx context.Context, rec *ProviderBatch, customID string) {
	for _, h := range rec.Claims {
		c, rev, err := b.store.getClaim(ctx, h)
		if err == nil && c != nil && c.Batch == rec.Key && batchapi.CustomID(rec.Key, c.Index) == customID {
			_ = b.store.deleteClaim(ctx, h, rev)
			return
		}
	}
}

// resultCost is what one request of a provider batch of model cost: the cost its
// result reports (OpenRouter's usage.cost), or its tokens at the batch price when it
// reports none (OpenAI's batch output carries token counts only).
func (b *batchMode) resultCost(ctx context.Context, model string, u llm.Usage) float64 {
	if u.Cost > 0 || u.PromptTokens+u.CompletionTokens == 0 {
		return u.Cost
	}
	return b.p.batchPrices(ctx, model).Cost(u.PromptTokens, u.CompletionTokens)
}

// settle settles the reservations this replica made for the provider batch key to
// the costs its results reported (costs by custom_id; a request without a result
// cost nothing). It does nothing when this replica holds none for key.
func (b *batchMode) settle(ctx context.Context, key string, costs map[string]float64) {
	b.mu.Lock()
	holds := b.holds[key]
	delete(b.holds, key)
	b.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, h := range holds {
		cost := 0.0
		for _, id := range h.ids {
			cost += costs[id]
		}
		if err := h.r.Settle(sctx, cost); err != nil {
			b.log.Warn("spend not settled: the reservation stays charged at its worst case", "key", key, "err", err)
		}
	}
}
