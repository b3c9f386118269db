package spend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe/internal/llm"
)

// Defaults for the prices.
const (
	// DefaultPricePromptPerM and DefaultPriceCompletionPerM are USD per million tokens
	// (Claude Sonnet's list prices), used for a model the API's list does not name,
	// and when the list cannot be fetched.
	DefaultPricePromptPerM     = 3.0
	DefaultPriceCompletionPerM = 15.0
	// DefaultBatchRate is the fraction of the sync price a provider batch costs.
	DefaultBatchRate = 0.5
	// DefaultPricesRefresh is how long a fetched model list is used before it is
	// fetched again; DefaultPricesRetry how long after a failed fetch.
	DefaultPricesRefresh = 6 * time.Hour
	DefaultPricesRetry   = 5 * time.Minute
	// DefaultPricesTimeout bounds one fetch of the model list.
	DefaultPricesTimeout = 10 * time.Second
)

// Prices are what the API charges for a model, in USD per million tokens.
type Prices struct {
	PromptPerM, CompletionPerM float64
}

// Cost is what tokens cost at p, in USD.
func (p Prices) Cost(promptTokens, completionTokens int64) float64 {
	return float64(promptTokens)*p.PromptPerM/1e6 + float64(completionTokens)*p.CompletionPerM/1e6
}

// Scaled returns p times f (the batch rate).
func (p Prices) Scaled(f float64) Prices {
	return Prices{p.PromptPerM * f, p.CompletionPerM * f}
}

// Validate checks that the prices are finite and not negative, naming the field.
func (p Prices) Validate() error {
	for name, v := range map[string]float64{"PromptPerM": p.PromptPerM, "CompletionPerM": p.CompletionPerM} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("spend: Prices.%s %v must be a finite price of 0 or more", name, v)
		}
	}
	return nil
}

// ModelLister is the API's model list (llm.Client.Models).
type ModelLister interface {
	Models(ctx context.Context) ([]llm.ModelPrice, error)
}

// PriceConfig configures a PriceBook.
type PriceConfig struct {
	// Override, when a field is not zero, is the price used for every model whatever
	// the list says (the processor's --price-prompt-per-m, --price-completion-per-m).
	Override Prices
	// Fallback is the price of a model the list does not name, or when the list cannot
	// be fetched (zero fields: DefaultPricePromptPerM, DefaultPriceCompletionPerM).
	Fallback Prices
	// BatchRate is the fraction of the sync price a provider batch costs
	// (DefaultBatchRate; must be in (0, 1]).
	BatchRate float64
	// Refresh is how long a fetched list is used (DefaultPricesRefresh); Retry how
	// long after a failed fetch the list is asked again (DefaultPricesRetry).
	Refresh, Retry time.Duration
	// Timeout bounds one fetch (DefaultPricesTimeout).
	Timeout time.Duration
	Logger  *slog.Logger
}

func (c PriceConfig) withDefaults() PriceConfig {
	c.Fallback.PromptPerM = cmp.Or(c.Fallback.PromptPerM, DefaultPricePromptPerM)
	c.Fallback.CompletionPerM = cmp.Or(c.Fallback.CompletionPerM, DefaultPriceCompletionPerM)
	c.BatchRate = cmp.Or(c.BatchRate, DefaultBatchRate)
	c.Refresh = cmp.Or(c.Refresh, DefaultPricesRefresh)
	c.Retry = cmp.Or(c.Retry, DefaultPricesRetry)
	c.Timeout = cmp.Or(c.Timeout, DefaultPricesTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c PriceConfig) validate() error {
	if err := c.Override.Validate(); err != nil {
		return err
	}
	if err := c.Fallback.Validate(); err != nil {
		return err
	}
	if c.BatchRate <= 0 || c.BatchRate > 1 || math.IsNaN(c.BatchRate) {
		return fmt.Errorf("spend: PriceConfig.BatchRate %v must be in (0, 1]", c.BatchRate)
	}
	if c.Refresh < 0 || c.Retry < 0 || c.Timeout < 0 {
		return errors.New("spend: PriceConfig.Refresh, Retry and Timeout must not be negative")
	}
	return nil
}

// PriceBook answers what a model costs: the override when given, else the API's model
// list (fetched on first use, kept in memory and fetched again after Refresh), else
// the fallback, with a warning when the list could not be fetched or does not name
// the model. Safe for concurrent use; a fetch in progress is shared.
type PriceBook struct {
	src ModelLister
	cfg PriceConfig
	log *slog.Logger

	mu      sync.Mutex
	prices  map[string]Prices
	next    time.Time // when the list is to be fetched again
	fetch   chan struct{}
	warned  map[string]bool
	fetches int
}

// NewPriceBook returns a price book over src (nil: no list, only override and
// fallback).
func NewPriceBook(src ModelLister, cfg PriceConfig) (*PriceBook, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &PriceBook{src: src, cfg: cfg, log: cfg.Logger.With("component", "prices"), warned: map[string]bool{}}, nil
}

// BatchRate is the fraction of the sync price a provider batch costs.
func (b *PriceBook) BatchRate() float64 { return b.cfg.BatchRate }

// Sync returns the price of model through the sync (chat completions) API.
func (b *PriceBook) Sync(ctx context.Context, model string) Prices {
	o := b.cfg.Override
	if o.PromptPerM > 0 && o.CompletionPerM > 0 {
		return o
	}
	p, ok := b.listed(ctx, model)
	if !ok {
		p = b.cfg.Fallback
	}
	if o.PromptPerM > 0 {
		p.PromptPerM = o.PromptPerM
	}
	if o.CompletionPerM > 0 {
		p.CompletionPerM = o.CompletionPerM
	}
	return p
}

// Batch returns the price of model through a provider batch: Sync times BatchRate.
func (b *PriceBook) Batch(ctx context.Context, model string) Prices {
	return b.Sync(ctx, model).Scaled(b.cfg.BatchRate)
}

// Fetches reports how many times the model list was fetched (for tests).
func (b *PriceBook) Fetches() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fetches
}

// listed returns the model's price from the list, fetching the list when it is due.
func (b *PriceBook) listed(ctx context.Context, model string) (Prices, bool) {
	if b.src == nil {
		return Prices{}, false
	}
	b.mu.Lock()
	for time.Now().After(b.next) {
		if b.fetch != nil { // another caller is fetching: wait for it
			ch := b.fetch
			b.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				b.mu.Lock()
				goto read
			}
			b.mu.Lock()
			continue
		}
		ch := make(chan struct{})
		b.fetch = ch
		b.mu.Unlock()
		prices, err := b.load(ctx)
		b.mu.Lock()
		b.fetch = nil
		close(ch)
		b.fetches++
		if err != nil {
			b.next = time.Now().Add(b.cfg.Retry)
			b.log.Warn("the API's model list could not be fetched: using the last prices known, else the fallback prices",
				"err", err, "fallback_prompt_per_m", b.cfg.Fallback.PromptPerM, "fallback_completion_per_m", b.cfg.Fallback.CompletionPerM, "retry_in", b.cfg.Retry)
			break
		}
		b.prices, b.next = prices, time.Now().Add(b.cfg.Refresh)
	}
read:
	defer b.mu.Unlock()
	p, ok := b.prices[model]
	if !ok && b.prices != nil && !b.warned[model] {
		b.warned[model] = true
		b.log.Warn("the API's model list does not name the model: using the fallback prices", "model", model,
			"fallback_prompt_per_m", b.cfg.Fallback.PromptPerM, "fallback_completion_per_m", b.cfg.Fallback.CompletionPerM)
	}
	return p, ok
}

func (b *PriceBook) load(ctx context.Context) (map[string]Prices, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.Timeout)
	defer cancel()
	models, err := b.src.Models(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Prices, len(models))
	for _, m := range models {
		out[m.ID] = Prices{PromptPerM: m.PromptPerToken * 1e6, CompletionPerM: m.CompletionPerToken * 1e6}
	}
	return out, nil
}
