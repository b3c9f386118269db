package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// SpendAccount is what a batch, or the current period, spent against its cap.
type SpendAccount struct {
	// BatchID names the batch; empty for the period account.
	BatchID string `json:"batch_id,omitempty"`
	// Capped is false for a batch without a cap (the other fields are then zero).
	Capped bool `json:"capped"`
	// CapUSD is the cap; CapBy who set it: manifest (max_cost), command, flag.
	CapUSD float64 `json:"cap_usd"`
	CapBy  string  `json:"cap_by,omitempty"`
	// SpentUSD is what counts against the cap: SettledUSD (the cost the API reported)
	// plus LapsedUSD (the worst case of calls whose processor died before it settled)
	// plus BeforeCapUSD (what a batch that ran without a cap had spent when its first
	// cap was set).
	SpentUSD     float64 `json:"spent_usd"`
	SettledUSD   float64 `json:"settled_usd"`
	LapsedUSD    float64 `json:"lapsed_usd"`
	BeforeCapUSD float64 `json:"before_cap_usd,omitempty"`
	// HeldUSD is reserved by calls in flight (their worst case).
	HeldUSD float64 `json:"held_usd"`
	Calls   int64   `json:"calls"`
	// Paused is set when a call was refused by the cap (the batch's items wait,
	// unpaid, for a higher cap); PausedSince says since when, NeedUSD what it needed.
	Paused      bool      `json:"paused"`
	PausedSince time.Time `json:"paused_since,omitzero"`
	NeedUSD     float64   `json:"need_usd,omitempty"`
	// ItemsHeld counts the batch's items set aside by a cap, waiting for it to rise.
	ItemsHeld int `json:"items_held,omitempty"`
	// Period, PeriodStart and PeriodEnd describe the period account.
	Period      time.Duration `json:"period,omitempty"`
	PeriodStart time.Time     `json:"period_start,omitzero"`
	PeriodEnd   time.Time     `json:"period_end,omitzero"`
	Updated     time.Time     `json:"updated,omitzero"`
}

func accountOf(batchID string, a spend.Account) SpendAccount {
	out := SpendAccount{
		BatchID: batchID, Capped: a.Capped, CapUSD: a.Cap.USD(), CapBy: a.CapBy,
		SpentUSD: a.Spent().USD(), SettledUSD: a.Settled.USD(), LapsedUSD: a.Lapsed.USD(), BeforeCapUSD: a.Before.USD(), HeldUSD: a.Held().USD(),
		Calls: a.Calls, Paused: a.Paused(), PeriodStart: a.Start, PeriodEnd: a.End, Updated: a.Updated,
	}
	if a.Blocked != nil {
		out.PausedSince, out.NeedUSD = a.Blocked.Since, a.Blocked.Need.USD()
	}
	return out
}

// Reason says, for people, why the account holds its batch's items, and how to go on
// (empty when it is not paused).
func (a SpendAccount) Reason() string {
	if !a.Paused {
		return ""
	}
	need := ""
	if a.NeedUSD > 0 {
		need = fmt.Sprintf(" (the next call needs up to $%.4f)", a.NeedUSD)
	}
	if a.BatchID != "" {
		return fmt.Sprintf("paused: spend cap $%.2f reached, spent $%.4f%s; raise with flashpipe cap set --batch %s --max-cost N",
			a.CapUSD, a.SpentUSD, need, a.BatchID)
	}
	return fmt.Sprintf("paused: period spend cap $%.2f reached (until %s), spent $%.4f%s; raise with flashpipe cap set --period --max-cost N",
		a.CapUSD, a.PeriodEnd.Local().Format(time.DateTime), a.SpentUSD, need)
}

// String renders the account for people.
func (a SpendAccount) String() string {
	s := fmt.Sprintf("spent $%.4f of $%.2f (%s)", a.SpentUSD, a.CapUSD, a.CapBy)
	if a.HeldUSD > 0 {
		s += fmt.Sprintf(", $%.4f held by calls in flight", a.HeldUSD)
	}
	if a.ItemsHeld > 0 {
		s += fmt.Sprintf(", %d items held", a.ItemsHeld)
	}
	if a.LapsedUSD > 0 {
		s += fmt.Sprintf(", of which $%.4f charged for calls whose processor stopped", a.LapsedUSD)
	}
	if a.BatchID == "" {
		s += fmt.Sprintf(", period %s to %s", a.PeriodStart.Local().Format(time.DateTime), a.PeriodEnd.Local().Format(time.DateTime))
	}
	if r := a.Reason(); r != "" {
		s += "; " + r
	}
	return s
}

// ledger opens the spend ledger (creating its bucket if no processor did yet: a cap
// must be recordable before the first batch runs).
func (c *Client) ledger(ctx context.Context) (*spend.Ledger, error) {
	return spend.New(ctx, c.js, c.c, spend.Config{Holder: "client", Logger: c.log})
}

// BatchSpend returns a batch's spend account; false when the batch has no cap.
func (c *Client) BatchSpend(ctx context.Context, batchID string) (SpendAccount, bool, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return SpendAccount{}, false, err
	}
	l, err := c.ledger(ctx)
	if err != nil {
		return SpendAccount{}, false, err
	}
	a, ok, err := l.Batch(ctx, batchID)
	if err != nil || !ok {
		return SpendAccount{}, false, err
	}
	out := accountOf(batchID, a)
	if out.ItemsHeld, err = l.HeldCount(ctx, batchID); err != nil {
		return out, true, err
	}
	return out, true, nil
}

// PeriodSpend returns the current period's spend account; false when no period cap
// is set.
func (c *Client) PeriodSpend(ctx context.Context) (SpendAccount, bool, error) {
	l, err := c.ledger(ctx)
	if err != nil {
		return SpendAccount{}, false, err
	}
	pc, a, ok, err := l.Period(ctx)
	if err != nil || !ok {
		return SpendAccount{}, false, err
	}
	out := accountOf("", a)
	out.Period = pc.Period
	return out, true, nil
}

// SetBatchCap sets a batch's spend cap to usd (the batch must exist). Raising it
// resumes a batch paused at its cap: its held items go through on their next
// delivery (within the processors' cap delay, 5 s by default).
func (c *Client) SetBatchCap(ctx context.Context, batchID string, usd float64) (SpendAccount, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return SpendAccount{}, err
	}
	if err := spend.ValidateCap(usd); err != nil {
		return SpendAccount{}, err
	}
	if _, err := c.Manifest(ctx, batchID); err != nil {
		if errors.Is(err, flashpipe.ErrNotFound) {
			return SpendAccount{}, fmt.Errorf("cap of batch %s: no such batch: %w", batchID, flashpipe.ErrNotFound)
		}
		return SpendAccount{}, err
	}
	l, err := c.ledger(ctx)
	if err != nil {
		return SpendAccount{}, err
	}
	before, err := batchlog.Spent(ctx, c.js, c.c, batchID)
	if err != nil {
		return SpendAccount{}, err
	}
	a, err := l.SetBatchCapAfter(ctx, batchID, spend.ByCommand, usd, before)
	if err != nil {
		return SpendAccount{}, err
	}
	c.log.Info("batch spend cap set", "batch", batchID, "cap_usd", usd, "spent_usd", a.Spent().USD())
	return accountOf(batchID, a), nil
}

// SetPeriodCap sets the overall spend cap: at most usd per period (0: keep the
// period set, else spend.DefaultPeriod), shared by every processor replica. It
// outlives the processors' --spend-cap-usd flag until set again.
func (c *Client) SetPeriodCap(ctx context.Context, usd float64, period time.Duration) (SpendAccount, error) {
	l, err := c.ledger(ctx)
	if err != nil {
		return SpendAccount{}, err
	}
	if _, err := l.SetPeriodCap(ctx, spend.ByCommand, usd, period); err != nil {
		return SpendAccount{}, err
	}
	c.log.Info("period spend cap set", "cap_usd", usd, "period", period)
	a, _, err := c.PeriodSpend(ctx)
	return a, err
}
