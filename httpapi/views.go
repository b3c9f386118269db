package httpapi

import (
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/ingest"
)

// The API's own shapes: what the OpenAPI document describes, mapped from the domain
// types in one place, so that a change inside the pipeline does not change the API.

// Batch is a batch as the list and the status show it.
type Batch struct {
	BatchID  string `json:"batch_id"`
	Source   string `json:"source"`
	Tenant   string `json:"tenant,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// APIMode is the batch's api_mode setting: sync, batch, or "" (the processors'
	// own --api-mode).
	APIMode     string     `json:"api_mode,omitempty"`
	Generation  int        `json:"generation"`
	Items       int        `json:"items"`
	State       string     `json:"state"`
	Done        int        `json:"done"`
	OK          int        `json:"ok"`
	Failed      int        `json:"failed"`
	Usage       Usage      `json:"usage"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	SetAside    int        `json:"set_aside,omitempty"`
	Problem     string     `json:"problem,omitempty"`
}

// Usage is what a batch cost so far.
type Usage struct {
	Stage1Calls      int     `json:"stage1_calls"`
	Stage2Calls      int     `json:"stage2_calls"`
	CacheHits        int     `json:"cache_hits"`
	CacheMisses      int     `json:"cache_misses"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

// Metrics are a batch's metrics as the store keeps them beside its rows (see
// flashpipe.BatchMetrics).
type Metrics struct {
	Mode             string     `json:"mode"`
	Results          int64      `json:"results"`
	Stage1Calls      int64      `json:"stage1_calls"`
	Stage2Calls      int64      `json:"stage2_calls"`
	CacheHits        int64      `json:"cache_hits"`
	CacheMisses      int64      `json:"cache_misses"`
	CacheHitRate     float64    `json:"cache_hit_rate"`
	PromptTokens     int64      `json:"prompt_tokens"`
	CompletionTokens int64      `json:"completion_tokens"`
	Retries          int64      `json:"retries"`
	Throttled        int64      `json:"throttled"`
	RateLimitWaits   int64      `json:"rate_limit_waits"`
	RateLimitWaitMS  int64      `json:"rate_limit_wait_ms"`
	BreakerWaits     int64      `json:"breaker_waits"`
	BreakerTrips     int64      `json:"breaker_trips"`
	CostSettledUSD   float64    `json:"cost_settled_usd"`
	CostReservedUSD  float64    `json:"cost_reserved_usd"`
	FirstResultAt    *time.Time `json:"first_result_at,omitempty"`
	LastResultAt     *time.Time `json:"last_result_at,omitempty"`
	WallTimeMS       int64      `json:"wall_time_ms"`
}

// BatchDetail is a batch's status: the store's view and metrics, its failed items, and
// the live service replicas (a blocked sink says why the batch does not move).
type BatchDetail struct {
	Batch
	Metrics     *Metrics         `json:"metrics,omitempty"`
	FailedItems []app.FailedItem `json:"failed_items"`
	Services    []Service        `json:"services"`
}

// Service is a live service replica.
type Service struct {
	Service string     `json:"service"`
	Replica string     `json:"replica"`
	Started time.Time  `json:"started"`
	Blocked bool       `json:"blocked"`
	Cause   string     `json:"cause,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Since   *time.Time `json:"since,omitempty"`
}

// spendCard is the batch page's view of a batch's spend account (the page shows
// its Reason when paused); Capped is false when the batch has no cap (then only the
// usage's cost tells what it spent).
type spendCard struct {
	app.SpendAccount
	Capped bool
}

func spendCardOf(id string, a app.SpendAccount, capped bool) spendCard {
	if !capped {
		return spendCard{SpendAccount: app.SpendAccount{BatchID: id}}
	}
	return spendCard{SpendAccount: a, Capped: true}
}

// Submitted answers a submit.
type Submitted struct {
	BatchID    string `json:"batch_id"`
	Generation int    `json:"generation"`
	Items      int    `json:"items"`
	// Published counts the item messages this request stored (0 for a resubmission
	// of a complete batch).
	Published   int        `json:"published"`
	Resubmitted bool       `json:"resubmitted"`
	Replaced    bool       `json:"replaced"`
	Expired     bool       `json:"expired"`
	Tenant      string     `json:"tenant,omitempty"`
	Priority    int        `json:"priority,omitempty"`
	Skipped     []RowError `json:"skipped_rows"`
	Links       Links      `json:"links"`
}

// Retried answers a retry: the new generation and how many items it runs.
type Retried struct {
	BatchID    string `json:"batch_id"`
	Generation int    `json:"generation"`
	Items      int    `json:"items"`
	Published  int    `json:"published"`
	Links      Links  `json:"links"`
}

// Links are the URLs of a batch's resources.
type Links struct {
	Self    string `json:"self"`
	Results string `json:"results"`
	Export  string `json:"export"`
}

// RowError is one bad row of a rejected batch: the line of the file (for a JSON
// body, the 1-based index in items, with Field naming it) and the reason.
type RowError struct {
	Line   int    `json:"line"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

// Original describes the batch already holding an id, in a 409.
type Original struct {
	BatchID     string    `json:"batch_id"`
	Source      string    `json:"source"`
	Items       int       `json:"items"`
	Generation  int       `json:"generation"`
	SubmittedAt time.Time `json:"submitted_at"`
}

func linksOf(id string) Links {
	self := "/v1/batches/" + id
	return Links{Self: self, Results: self + "/results", Export: self + "/export"}
}

func viewOf(b flashpipe.BatchStatus) Batch {
	m := b.Manifest
	return Batch{
		BatchID: m.BatchID, Source: m.Source, Tenant: m.Tenant, Priority: m.Priority, APIMode: m.Settings[flashpipe.SettingAPIMode],
		Generation: m.Generation,
		Items:      m.Count, State: b.State, Done: b.Done, OK: b.OK, Failed: b.Failed, Usage: usageOf(b.Usage),
		SubmittedAt: b.SubmittedAt, StartedAt: b.StartedAt, CompletedAt: b.CompletedAt,
		SetAside: b.SetAside, Problem: b.Problem,
	}
}

func metricsOf(m *flashpipe.BatchMetrics) *Metrics {
	if m == nil {
		return nil
	}
	return &Metrics{Mode: m.Mode, Results: m.Results, Stage1Calls: m.Stage1Calls, Stage2Calls: m.Stage2Calls,
		CacheHits: m.CacheHits, CacheMisses: m.CacheMisses, CacheHitRate: m.CacheHitRate, PromptTokens: m.PromptTokens,
		CompletionTokens: m.CompletionTokens, Retries: m.Retries, Throttled: m.Throttled,
		RateLimitWaits: m.RateLimitWaits, RateLimitWaitMS: m.RateLimitWaitMS, BreakerWaits: m.BreakerWaits,
		BreakerTrips: m.BreakerTrips, CostSettledUSD: m.CostSettled, CostReservedUSD: m.CostReserved,
		FirstResultAt: m.FirstResultAt, LastResultAt: m.LastResultAt, WallTimeMS: m.WallTimeMS}
}

func usageOf(u flashpipe.Usage) Usage {
	return Usage{Stage1Calls: u.Stage1Calls, Stage2Calls: u.Stage2Calls, CacheHits: u.CacheHits, CacheMisses: u.CacheMisses,
		PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CostUSD: u.Cost}
}

func servicesOf(states []app.ServiceState) []Service {
	out := make([]Service, 0, len(states))
	for _, s := range states {
		out = append(out, Service{Service: s.Service, Replica: s.Replica, Started: s.Started, Blocked: s.Blocked,
			Cause: s.Cause, Reason: s.Reason, Since: s.Since})
	}
	return out
}

func submittedOf(sub *ingest.Submission, skipped []RowError) Submitted {
	m := sub.Manifest
	if skipped == nil {
		skipped = []RowError{}
	}
	return Submitted{
		BatchID: m.BatchID, Generation: m.Generation, Items: m.Count, Published: sub.Published,
		Resubmitted: sub.Resubmitted, Replaced: sub.Replaced, Expired: sub.Expired, Tenant: m.Tenant,
		Priority: m.Priority, Skipped: skipped, Links: linksOf(m.BatchID),
	}
}
