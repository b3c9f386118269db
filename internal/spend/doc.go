// Package spend keeps the money side of the API calls: what each model costs (Prices,
// from the API's model list, cached, overridable) and the spend caps every processor
// replica shares (Ledger, in a NATS key-value bucket).
//
// # The rule: reserve the worst case, settle the reported cost
//
// Before each paid API call a replica reserves the call's worst case on every account
// that has a cap (the batch's, set by the manifest's max_cost or `flashpipe cap set
// --batch`, and the current period's, set by --spend-cap-usd or `flashpipe cap set
// --period`): prompt tokens at most the request's bytes (plus a per-message overhead and
// the schema), plus max_tokens, at the model's price (see WorstCase). A reservation is
// granted only if
//
//	spent + held + worst case <= cap
//
// where spent is what was settled (plus what lapsed, below) and held the sum of the
// reservations not yet settled. After the call the replica settles the reservation to
// the cost the API reported (usage.cost) and releases the rest. Each account is one key;
// every change is a compare-and-set on the key's revision, retried a bounded number of
// times with jitter, so replicas never grant the same money twice. A call's actual cost
// is at most its worst case, so the sum of settled costs never exceeds a cap. (The one
// exception is an API that charges more than max_tokens allows, which is logged.)
//
// # The expiry rule: a lapsed reservation is charged, never released
//
// A reservation carries a deadline (Config.HoldTTL after it was granted); its replica
// makes the call with a context that ends before the deadline (Reservation.Deadline).
// A reservation still held after its deadline belongs to a replica that died or lost
// NATS: whoever next writes the account moves it from held to spent at its full worst
// case, because its request may have reached the API and been billed, and nobody can
// know what it cost. So the budget is never stuck in "held" for ever, and an expired
// reservation never lets another call spend money that might already be spent. If the
// replica was alive after all and settles late, its real cost replaces the worst case
// (which can only lower what is spent). Outcomes whose cost is unknown (a timeout, a
// broken connection, an unreadable answer) are settled at the worst case too; an API
// error status (4xx, 5xx) is settled at zero, since the API does not bill refusals.
//
// # Paused, not failed
//
// A reservation refused by a cap returns a *CapError (errors.Is ErrCapReached) and
// marks the account paused. The processor makes no call and sets the item aside here
// (SetAside: its ready message), then acknowledges it, so that the held item takes
// no slot of the processors' consumer and other batches run; the scheduler
// dispatches none of a paused batch (Held) and publishes its set-aside items again
// once it is no longer paused (Requeue). Raising the cap (SetBatchCap, SetPeriodCap)
// clears the pause.
//
// # Using it
//
//	book, _ := spend.NewPriceBook(llmClient, spend.PriceConfig{})   // one per process
//	ledger, _ := spend.New(ctx, js, c, spend.Config{Holder: replicaID})
//	worst := spend.WorstCase(req, book.Sync(ctx, req.Model))       // book.Batch for a provider batch
//	r, err := ledger.Reserve(ctx, batchID, worst)                    // ledger.ReserveFor(ctx, id, usd, ttl) for long work
//	if errors.Is(err, spend.ErrCapReached) { /* hold the item: pay nothing */ }
//	... make the call with a context that ends by r.Deadline() ...
//	r.Settle(ctx, resp.Usage.Cost)                                   // r.Amount() when the outcome is unknown, 0 when no call was made
//
// Ledger, PriceBook and Reservation are safe for concurrent use (a Reservation is
// settled once).
package spend
