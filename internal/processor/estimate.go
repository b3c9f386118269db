package processor

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Defaults for Prices and the completion estimates.
const (
	DefaultPricePromptPerM     = spend.DefaultPricePromptPerM     // USD per million prompt tokens (Claude Sonnet)
	DefaultPriceCompletionPerM = spend.DefaultPriceCompletionPerM // USD per million completion tokens
	// Typical answer sizes when the cache has no history to learn them from.
	DefaultStage1CompletionTokens = 700
	DefaultStage2CompletionTokens = 1400
	// estimateBytesPerToken converts request bytes to tokens: mixed English and Hangul
	// prompts average a little under four bytes per token.
	estimateBytesPerToken = 3.6
)

// Prices are what the API charges, in USD per million tokens.
type Prices = spend.Prices

// Lookup is the read side of the answer cache.
type Lookup interface {
	Get(ctx context.Context, key string) (cache.Entry, bool, error)
}

// Estimate is what a batch would cost before any of it is spent.
type Estimate struct {
	Items int `json:"items"`
	// Calls are the API calls the batch would make when nothing fails; Cached the
	// answers already in the cache (free).
	Stage1Calls  int `json:"stage1_calls"`
	Stage1Cached int `json:"stage1_cached"`
	Stage2Calls  int `json:"stage2_calls"`
	Stage2Cached int `json:"stage2_cached"`
	// A stage 2 answer whose stage 1 answer is not cached yet counts as a call: its
	// cache key is unknown until stage 1 runs.
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	// CacheUsed is false when the cache could not be read (every answer counted as
	// a call).
	CacheUsed bool   `json:"cache_used"`
	Prices    Prices `json:"prices"`
}

// Items are a batch's items in seq order, which EstimateBatch reads up to twice
// (ingest.Items are).
type Items interface {
	Len() int
	Each(ctx context.Context, fn func(seq int, it flashpipe.Item) error) error
}

// EstimateBatch estimates the calls, tokens and cost of processing items: cached
// answers are free; each missing answer costs its request's prompt tokens (from the
// rendered prompt) and a typical completion (the average of the cached answers of that
// stage, or a default). lookup may be nil (no cache). Memory is a bit per item: the
// items are read again for the stage 2 prompts whose stage 1 answer is not cached.
func EstimateBatch(ctx context.Context, lookup Lookup, cfg stages.Config, items Items, prices Prices) (Estimate, error) {
	if prices.PromptPerM == 0 && prices.CompletionPerM == 0 {
		prices = Prices{PromptPerM: DefaultPricePromptPerM, CompletionPerM: DefaultPriceCompletionPerM}
	}
	est := Estimate{Items: items.Len(), Prices: prices, CacheUsed: lookup != nil}
	avg := [3]averager{}
	get := func(stage int, model, key string) (cache.Entry, bool) {
		if !est.CacheUsed {
			return cache.Entry{}, false
		}
		e, ok, err := lookup.Get(ctx, cache.Key(stage, model, key))
		if err != nil {
			est.CacheUsed = false
			return cache.Entry{}, false
		}
		if ok {
			avg[stage].add(e.Usage.CompletionTokens)
		}
		return e, ok
	}
	// Stage 2 prompts without a stage 1 answer are measured with a placeholder
	// answer of the average size, known only once every item is looked up.
	placeholder := make([]bool, items.Len()+1) // by seq
	misses1, misses2, placeholders := 0, 0, 0
	err := items.Each(ctx, func(seq int, it flashpipe.Item) error {
		e1, ok := get(1, cfg.Model1, stages.Stage1Key(cfg, it))
		if !ok {
			est.Stage1Calls++
			misses1++
			est.PromptTokens += requestTokens(stages.Stage1Request(cfg, it).Messages)
			est.Stage2Calls++ // its stage 1 answer is unknown, so is stage 2's key
			misses2++
			placeholder[seq], placeholders = true, placeholders+1
			return nil
		}
		est.Stage1Cached++
		var a flashpipe.Analysis
		if err := json.Unmarshal(e1.Value, &a); err != nil {
			est.Stage2Calls++
			misses2++
			placeholder[seq], placeholders = true, placeholders+1
			return nil
		}
		a.TermNumber = it.Position
		if _, ok := get(2, cfg.Model2, stages.Stage2Key(cfg, it, &a)); ok {
			est.Stage2Cached++
			return nil
		}
		est.Stage2Calls++
		misses2++
		est.PromptTokens += requestTokens(stages.Stage2Request(cfg, it, &a).Messages)
		return nil
	})
	if err != nil {
		return est, err
	}
	c1 := avg[1].or(DefaultStage1CompletionTokens)
	c2 := avg[2].or(DefaultStage2CompletionTokens)
	est.CompletionTokens = int64(misses1)*c1 + int64(misses2)*c2
	if placeholders > 0 {
		err := items.Each(ctx, func(seq int, it flashpipe.Item) error {
			if placeholder[seq] {
				est.PromptTokens += requestTokens(stages.Stage2Request(cfg, it, placeholderAnalysis(it, int(c1))).Messages)
			}
			return nil
		})
		if err != nil {
			return est, err
		}
	}
	est.CostUSD = float64(est.PromptTokens)*prices.PromptPerM/1e6 + float64(est.CompletionTokens)*prices.CompletionPerM/1e6
	return est, nil
}

func requestTokens(msgs []llm.Message) int64 {
	n := 0
	for _, m := range msgs {
		n += len(m.Content)
	}
	return int64(float64(n) / estimateBytesPerToken)
}

// placeholderAnalysis stands in for a stage 1 answer not yet made, sized like a typical
// one, so stage 2's prompt can be measured.
func placeholderAnalysis(it flashpipe.Item, tokens int) *flashpipe.Analysis {
	filler := make([]byte, int(float64(tokens)*estimateBytesPerToken))
	for i := range filler {
		filler[i] = 'x'
	}
	return &flashpipe.Analysis{TermNumber: it.Position, Term: it.Term, POS: it.Type, Explanation: string(filler)}
}

type averager struct {
	sum, n int64
}

func (a *averager) add(v int64) {
	if v > 0 {
		a.sum += v
		a.n++
	}
}

func (a averager) or(def int64) int64 {
	if a.n == 0 {
		return def
	}
	return a.sum / a.n
}

// String renders an estimate for people.
func (e Estimate) String() string {
	s := fmt.Sprintf("%d items: stage 1 %d calls (%d cached), stage 2 %d calls (%d cached); about %d prompt and %d completion tokens; about $%.2f at $%g/M prompt, $%g/M completion",
		e.Items, e.Stage1Calls, e.Stage1Cached, e.Stage2Calls, e.Stage2Cached, e.PromptTokens, e.CompletionTokens, e.CostUSD,
		e.Prices.PromptPerM, e.Prices.CompletionPerM)
	if !e.CacheUsed {
		s += " (cache not consulted: every answer counted as a call)"
	}
	return s
}
