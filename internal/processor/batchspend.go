package processor

import (
	"context"
	"errors"
	"time"

	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// Spend caps in batch mode. Before a provider batch is submitted, the worst case of
// its requests at the batch price (spend.WorstCase at PriceBook.Batch: the sync price
// times the batch rate) is reserved, once per flashpipe batch it serves, on that
// batch's cap and the period's. The requests of a batch whose cap would be passed are
// left out (their claims released: their items stay held, nothing paid, and ask again
// after BatchConfig.Wait and ClaimGrace, so a raised cap lets them go). When the
// provider batch ends, the replica that reserved settles each reservation to the
// costs its results report (usage.cost per result; nothing for a request without
// one). A provider batch runs for hours, longer than a reservation lives: a lapsed
// reservation is charged at its worst case until the settlement replaces it with the
// real cost, and if the reserving replica died (or another applied the results
// first) it stays charged at the worst case: the caps can be reached early, never
// passed.

// batchPrices is the price of model in a provider batch.
func (p *Processor) batchPrices(ctx context.Context, model string) spend.Prices {
	if p.cfg.Prices == nil {
		return spend.Prices{PromptPerM: spend.DefaultPricePromptPerM, CompletionPerM: spend.DefaultPriceCompletionPerM}.Scaled(spend.DefaultBatchRate)
	}
	return p.cfg.Prices.Batch(ctx, model)
}

// reserveBatch reserves the worst case of reqs (owners[i] is the flashpipe batch of
// reqs[i]) and returns the requests it may send and their owners; the others' claims
// are released. The reservations are kept for settle.
func (b *batchMode) reserveBatch(ctx context.Context, rec *ProviderBatch, reqs []batchapi.Request, owners []string) ([]batchapi.Request, []string) {
	if b.p.cfg.Spend == nil {
		return reqs, owners
	}
	prices := b.p.batchPrices(ctx, rec.Model)
	worst := map[string]float64{}
	for i, r := range reqs {
		worst[owners[i]] += spend.WorstCase(r.Body, prices)
	}
	holds := map[string]*spend.Reservation{}
	refused := map[string]bool{}
	for batch, usd := range worst {
		r, err := b.p.cfg.Spend.Reserve(ctx, batch, usd)
		if err != nil {
			refused[batch] = true
			if errors.Is(err, spend.ErrCapReached) {
				b.log.Info("requests held by a spend cap; not sent", "batch", batch, "key", rec.Key, "worst_usd", usd, "err", err)
			} else {
				b.log.Warn("spend ledger unavailable; requests not sent", "batch", batch, "key", rec.Key, "err", err)
			}
			continue
		}
		holds[batch] = r
	}
	if len(refused) == 0 {
		b.keepHolds(rec.Key, holds)
		return reqs, owners
	}
	var keptReqs []batchapi.Request
	var keptOwners []string
	for i, r := range reqs {
		if !refused[owners[i]] {
			keptReqs, keptOwners = append(keptReqs, r), append(keptOwners, owners[i])
			continue
		}
		b.releaseClaimOf(ctx, rec, r.CustomID)
	}
	b.keepHolds(rec.Key, holds)
	return keptReqs, keptOwners
}

func (b *batchMode) keepHolds(key string, holds map[string]*spend.Reservation) {
	if len(holds) == 0 {
		return
	}
	b.mu.Lock()
	b.holds[key] = holds
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

// settle settles the reservations this replica made for the provider batch key to
// the costs its results reported, by flashpipe batch.
func (b *batchMode) settle(ctx context.Context, key string, costs map[string]float64) {
	b.mu.Lock()
	holds := b.holds[key]
	delete(b.holds, key)
	b.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for batch, r := range holds {
		if err := r.Settle(sctx, costs[batch]); err != nil {
			b.log.Warn("spend not settled: the reservation stays charged at its worst case", "batch", batch, "key", key, "err", err)
		}
	}
}
