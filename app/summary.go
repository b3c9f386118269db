package app

import (
	"sort"
	"sync/atomic"

	"github.com/flashpipe/flashpipe"
)

// Summary is what a finished batch (or generation) reports: counts, usage and the
// failed items with their reasons and next steps. It is the JSON of `--json`.
type Summary struct {
	BatchID          string   `json:"batch_id"`
	Items            int      `json:"items"`
	OK               int      `json:"ok"`
	Failed           int      `json:"failed"`
	Cards            int      `json:"cards"`
	APICalls         APICalls `json:"api_calls"`
	CacheHits        int      `json:"cache_hits"`
	CacheMisses      int      `json:"cache_misses"`
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	CostUSD          float64  `json:"cost_usd"`
	// Elapsed and ItemsPerSecond are of this run: the items it ran (a retry's, not
	// the whole batch's) over its own time.
	Elapsed        float64 `json:"elapsed_seconds"`
	ItemsPerSecond float64 `json:"items_per_second"`
	Resubmitted    bool    `json:"resubmitted"`
	// Republished counts the items a resubmission published because an interrupted
	// submit had left them out.
	Republished int `json:"republished,omitempty"`
	// Simulated is true when the built-in simulator answered: its prices are made up.
	Simulated   bool         `json:"simulated"`
	Output      string       `json:"output,omitempty"`
	FailedItems []FailedItem `json:"failed_items"`
}

// APICalls counts the API calls of a batch by stage.
type APICalls struct {
	Stage1 int `json:"stage1"`
	Stage2 int `json:"stage2"`
	Total  int `json:"total"`
}

// FailedItem is one failed item as the user sees it.
type FailedItem struct {
	Position int64  `json:"position"`
	Term     string `json:"term"`
	Stage    string `json:"stage"`
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	NextStep string `json:"next_step"`
}

// FailedItemOf describes a failed result.
func FailedItemOf(r flashpipe.Result) FailedItem {
	fi := FailedItem{Position: r.Position, Term: r.Term, Attempts: r.Attempts}
	if r.Failure != nil {
		fi.Stage, fi.Reason, fi.NextStep = r.Failure.Stage, r.Failure.Reason, r.Failure.NextStep
	}
	return fi
}

// add counts one item's final result; its usage counts only when paid counts it (the
// result is of the generation the summary is about: a retry's summary counts the
// retry's calls, not the whole batch's).
func (s *Summary) add(r flashpipe.Result, paid bool) {
	if r.Status == flashpipe.StatusOK {
		s.OK++
		s.Cards += len(r.Cards)
	} else {
		s.Failed++
		s.FailedItems = append(s.FailedItems, FailedItemOf(r))
	}
	if paid {
		s.SetUsage(s.usage().Add(r.Usage))
	}
}

func (s *Summary) usage() flashpipe.Usage {
	return flashpipe.Usage{Stage1Calls: s.APICalls.Stage1, Stage2Calls: s.APICalls.Stage2, CacheHits: s.CacheHits,
		CacheMisses: s.CacheMisses, PromptTokens: s.PromptTokens, CompletionTokens: s.CompletionTokens, Cost: s.CostUSD}
}

// SetUsage sets the summary's calls, cache counts, tokens and cost.
func (s *Summary) SetUsage(u flashpipe.Usage) {
	s.APICalls = APICalls{Stage1: u.Stage1Calls, Stage2: u.Stage2Calls, Total: u.Stage1Calls + u.Stage2Calls}
	s.CacheHits, s.CacheMisses = u.CacheHits, u.CacheMisses
	s.PromptTokens, s.CompletionTokens, s.CostUSD = u.PromptTokens, u.CompletionTokens, u.Cost
}

// atomicInt is an int64 safe for concurrent use.
type atomicInt = atomic.Int64

func sortStrings(s []string) { sort.Strings(s) }
