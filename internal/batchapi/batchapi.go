// Package batchapi is one interface over the providers' batch APIs, where a set of
// chat completions is submitted at once and answered within hours at about half the
// synchronous price, with two implementations:
//
//   - OpenRouter: inline batches (POST {base}/batches with model, endpoint and an
//     inline requests array of {custom_id, body}; results inline in GET
//     {base}/batches/{id} once the batch is terminal).
//   - OpenAI (and the many providers copying it): file-based batches (upload a JSONL
//     file with purpose "batch" to {base}/files, POST {base}/batches with
//     input_file_id, endpoint, completion_window and metadata, download the
//     output_file_id and error_file_id files).
//
// Idempotency: neither API takes an idempotency key on submission, so the caller's
// key (Spec.Key) travels in the batch's metadata and as the prefix of every
// custom_id, and Find looks for a batch carrying it. A caller that records its batch
// durably before Submit and, after a crash, calls Find before submitting again never
// pays twice for one batch.
//
// Errors are classified where they are born (flashpipe.ClassOf): network failures,
// timeouts, 408, 429 and 5xx are transient; other 4xx and answers that cannot be
// read are permanent. No error contains the API key (the llm.Client redacts it).
// Implementations are safe for concurrent use.
package batchapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe/internal/llm"
)

// EndpointChat is the endpoint every request of a flashpipe batch goes to.
const EndpointChat = "/v1/chat/completions"

// MetadataKey is the metadata key carrying Spec.Key.
const MetadataKey = "flashpipe_key"

// Limits common to both shapes (OpenRouter: 5,000 requests and 200 MB a batch;
// OpenAI: 50,000 requests and 200 MB a file): flashpipe keeps under both.
const (
	MaxRequests = 5000
	MaxBytes    = 200 << 20
)

// State is a provider batch's status, as both APIs name it.
type State string

// The states of a provider batch. Completed, Failed, Expired and Cancelled are
// terminal.
const (
	StateValidating State = "validating"
	StateInProgress State = "in_progress"
	StateFinalizing State = "finalizing"
	StateCompleted  State = "completed"
	StateFailed     State = "failed"
	StateExpired    State = "expired"
	StateCancelling State = "cancelling"
	StateCancelled  State = "cancelled"
)

// Terminal reports whether no further change will come.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateExpired, StateCancelled:
		return true
	}
	return false
}

// Request is one chat completion of a batch. CustomID must be unique in the batch
// and start with the batch's Spec.Key (see CustomID).
type Request struct {
	CustomID string
	Body     llm.Request
}

// CustomID returns the custom_id of request i of the batch whose key is key.
func CustomID(key string, i int) string { return fmt.Sprintf("%s-%d", key, i) }

// Spec is a batch to submit: one model, the chat completions endpoint, the requests.
type Spec struct {
	// Key is the caller's idempotency key: it goes into the metadata (MetadataKey) and
	// prefixes every custom_id. Letters, digits, '-', '_' and '.'; at most 64.
	Key      string
	Model    string
	Requests []Request
	// Metadata is sent with the batch where the API takes it (at most 15 more pairs).
	Metadata map[string]string
}

// Batch is what the provider says about a batch.
type Batch struct {
	ID    string
	State State
	// Total, Completed and Failed count its requests.
	Total, Completed, Failed int
	CreatedAt                time.Time
	Metadata                 map[string]string
	// Key is the flashpipe key the batch carries (metadata, or the custom_id prefix
	// when the results are at hand), "" if unknown.
	Key string
	// Model and Endpoint, where the API reports them.
	Model, Endpoint string
}

// Result is the outcome of one request of a terminal batch: a response (whose
// content may still be unusable: Err is then set too, as llm.Client.Complete does),
// or an error only. Requests without a result (an expired or cancelled batch) are
// absent.
type Result struct {
	CustomID string
	Response *llm.Response
	Err      error
}

// Provider is a provider's batch API.
type Provider interface {
	// Name is "openrouter" or "openai".
	Name() string
	// Submit creates the batch. A transient error leaves it unknown whether the
	// provider accepted it: use Find before submitting again.
	Submit(ctx context.Context, spec Spec) (Batch, error)
	// Get returns the batch's state and counts.
	Get(ctx context.Context, id string) (Batch, error)
	// Results returns the results of a terminal batch.
	Results(ctx context.Context, id string) ([]Result, error)
	// Cancel asks the provider to cancel the batch.
	Cancel(ctx context.Context, id string) error
	// Find returns the batch carrying key created at or after since, or nil when the
	// provider has none. Batches whose ids are in known (the caller's other batches)
	// are not candidates.
	Find(ctx context.Context, key string, since time.Time, known map[string]bool) (*Batch, error)
}

// ErrInvalidSpec marks a Spec the API would refuse (permanent).
var ErrInvalidSpec = errors.New("batchapi: invalid batch")

func (s Spec) validate() error {
	switch {
	case s.Key == "" || len(s.Key) > 64 || strings.Trim(s.Key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "":
		return fmt.Errorf("%w: Spec.Key %q: want 1 to 64 letters, digits, '-', '_' or '.'", ErrInvalidSpec, s.Key)
	case s.Model == "":
		return fmt.Errorf("%w: Spec.Model is empty", ErrInvalidSpec)
	case len(s.Requests) == 0 || len(s.Requests) > MaxRequests:
		return fmt.Errorf("%w: %d requests: want 1 to %d", ErrInvalidSpec, len(s.Requests), MaxRequests)
	case len(s.Metadata) > 15:
		return fmt.Errorf("%w: %d metadata pairs: want at most 15", ErrInvalidSpec, len(s.Metadata))
	}
	seen := make(map[string]bool, len(s.Requests))
	for i, r := range s.Requests {
		if !strings.HasPrefix(r.CustomID, s.Key+"-") || seen[r.CustomID] {
			return fmt.Errorf("%w: requests[%d].custom_id %q: want unique ids prefixed with the key and '-'", ErrInvalidSpec, i, r.CustomID)
		}
		seen[r.CustomID] = true
	}
	return nil
}

func (s Spec) metadata() map[string]string {
	m := make(map[string]string, len(s.Metadata)+1)
	for k, v := range s.Metadata {
		m[k] = v
	}
	m[MetadataKey] = s.Key
	return m
}

// KeyOfCustomID returns the key part of a custom_id made by CustomID.
func KeyOfCustomID(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return ""
}

// New returns the Provider named name ("openrouter" or "openai") speaking through
// client (its base URL, key and error classification).
func New(name string, client *llm.Client) (Provider, error) {
	if client == nil {
		return nil, errors.New("batchapi: an llm.Client is required")
	}
	switch name {
	case ProviderOpenRouter:
		return &OpenRouter{c: client}, nil
	case ProviderOpenAI:
		return &OpenAI{c: client}, nil
	}
	return nil, fmt.Errorf("batchapi: provider %q: want %q or %q", name, ProviderOpenRouter, ProviderOpenAI)
}

// Provider names.
const (
	ProviderOpenRouter = "openrouter"
	ProviderOpenAI     = "openai"
)
