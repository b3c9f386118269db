// Package flashpipe is the domain of the flashpipe pipeline: the plain types that travel
// between its services (items, manifests, results, events) and the interfaces its
// services depend on. It imports only the standard library.
//
// A batch is a list of vocabulary items, each with a user-given Position. Ingest assigns
// every item its Seq, the 1-based rank of its position within the batch, so the batch's
// order is Seq 1, 2, ... Count with no gaps even when positions have gaps. Every later
// stage works in Seq; Position is carried along for the user.
//
// Retries of failed items run as a new Generation of the batch: generation 0 is the
// first run, generation g > 0 re-runs only the Seqs listed in its manifest. A newer
// generation's result replaces the older one for the same item.
package flashpipe

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"regexp"
	"sort"
	"time"
)

// MaxTermLength is the longest term accepted, in characters (runes).
const MaxTermLength = 100

// MaxBatchIDLength is the longest batch id accepted.
const MaxBatchIDLength = 64

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// ValidateBatchID reports whether id can name a batch. Batch ids become NATS subject
// tokens and database keys, so they are limited to letters, digits, '-' and '_'.
func ValidateBatchID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("batch id is empty")
	case len(id) > MaxBatchIDLength:
		return fmt.Errorf("batch id %q is longer than %d characters", id, MaxBatchIDLength)
	case !batchIDPattern.MatchString(id):
		return fmt.Errorf("batch id %q may contain only letters, digits, '-' and '_', and must start with a letter or digit", id)
	}
	return nil
}

// MaxTenantLength is the longest tenant name; MaxPriority bounds a batch's priority
// either way.
const (
	MaxTenantLength = 64
	MaxPriority     = 1000
)

// ValidateTenant checks a tenant name: empty (the default tenant), or up to
// MaxTenantLength letters, digits, '-' and '_', starting with a letter or digit (it is
// a metric label and a key in the scheduler's state).
func ValidateTenant(t string) error {
	switch {
	case t == "":
		return nil
	case len(t) > MaxTenantLength:
		return fmt.Errorf("tenant %q is longer than %d characters", t, MaxTenantLength)
	case !batchIDPattern.MatchString(t):
		return fmt.Errorf("tenant %q may contain only letters, digits, '-' and '_', and must start with a letter or digit", t)
	}
	return nil
}

// Item is one vocabulary item as the user submitted it, after validation and
// normalisation (see NormalizeType).
type Item struct {
	Position int64             `json:"position"`
	Term     string            `json:"term"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// WorkItem is an Item addressed within a batch: the message a processor consumes.
type WorkItem struct {
	BatchID    string `json:"batch_id"`
	Seq        int    `json:"seq"`
	Generation int    `json:"generation"`
	Item
}

// Manifest describes one generation of a batch. It is published before the batch's
// items, so every stage knows how many results make the batch complete.
type Manifest struct {
	BatchID    string `json:"batch_id"`
	Generation int    `json:"generation"`
	// Count is the number of items in the batch (Seq runs 1..Count).
	Count int `json:"count"`
	// Seqs lists the items a generation > 0 re-runs, ascending; empty means every
	// item (a reprocess). Empty for generation 0.
	Seqs []int `json:"seqs,omitempty"`
	// Source names where the batch came from: a file name, "http", "nats".
	Source string `json:"source"`
	// ContentHash identifies the batch's items (see HashItems), so a resubmission can be
	// told apart from a different batch under the same id.
	ContentHash string `json:"content_hash"`
	// Base is the generation that published the batch's whole item list: 0, or the
	// generation of the latest replacement (a batch id submitted again, on request,
	// with other items: see IsReplacement). Retry and reprocess generations keep it.
	Base int `json:"base,omitempty"`
	// Tenant names who submitted the batch (an upstream system, a team, a user): the
	// processors share their capacity fairly between tenants first, then between a
	// tenant's batches. Empty is the default tenant.
	Tenant string `json:"tenant,omitempty"`
	// Priority orders the batches of one tenant: a higher priority is served first
	// (default 0).
	Priority  int               `json:"priority,omitempty"`
	Settings  map[string]string `json:"settings,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
}

// SettingAPIMode is the manifest setting that chooses how a batch's items are sent
// to the LLM API: APIModeSync (one call per stage and item, at once) or APIModeBatch
// (gathered into provider batches: about half the price, within hours). Absent: the
// processors' own mode.
const SettingAPIMode = "api_mode"

// The API modes.
const (
	APIModeSync  = "sync"
	APIModeBatch = "batch"
)

// ValidateAPIMode checks an API mode: empty (the processors' default), "sync" or
// "batch".
func ValidateAPIMode(m string) error {
	switch m {
	case "", APIModeSync, APIModeBatch:
		return nil
	}
	return fmt.Errorf("api mode %q: want %q or %q", m, APIModeSync, APIModeBatch)
}

// MaxItems is the most items a batch may have.
const MaxItems = 10_000_000

// Validate checks a manifest's own consistency, as any door must before it takes a
// manifest published by any client: a valid batch id, a count of 1 to MaxItems, a
// generation and base that agree, the seqs of a retry within the count and
// ascending, the settings flashpipe reads (ValidateSettings). The error names the field.
func (m Manifest) Validate() error {
	if err := ValidateBatchID(m.BatchID); err != nil {
		return fmt.Errorf("batch_id: %w", err)
	}
	switch {
	case m.Count < 1 || m.Count > MaxItems:
		return fmt.Errorf("count %d: want 1 to %d items", m.Count, MaxItems)
	case m.Generation < 0:
		return fmt.Errorf("generation %d: want 0 or more", m.Generation)
	case m.Base < 0 || m.Base > m.Generation:
		return fmt.Errorf("base %d: want 0 to the generation (%d)", m.Base, m.Generation)
	case m.Generation == 0 && len(m.Seqs) > 0:
		return fmt.Errorf("seqs: generation 0 runs every item and lists none")
	case m.IsReplacement() && len(m.Seqs) > 0:
		return fmt.Errorf("seqs: a replacement runs every item and lists none")
	case m.Priority < -MaxPriority || m.Priority > MaxPriority:
		return fmt.Errorf("priority %d: want %d to %d", m.Priority, -MaxPriority, MaxPriority)
	}
	if err := ValidateTenant(m.Tenant); err != nil {
		return fmt.Errorf("tenant: %w", err)
	}
	if err := ValidateSettings(m.Settings); err != nil {
		return err
	}
	for i, s := range m.Seqs {
		if s < 1 || s > m.Count || (i > 0 && s <= m.Seqs[i-1]) {
			return fmt.Errorf("seqs[%d] = %d: want ascending seqs within 1..%d", i, s, m.Count)
		}
	}
	return nil
}

// Wants reports whether this generation runs the item at seq.
func (m Manifest) Wants(seq int) bool {
	if m.Generation > 0 && len(m.Seqs) > 0 {
		i := sort.SearchInts(m.Seqs, seq)
		return i < len(m.Seqs) && m.Seqs[i] == seq
	}
	return seq >= 1 && seq <= m.Count
}

// IsReplacement reports whether this generation replaces the batch's items with a new
// list: every earlier generation's results are dropped, never mixed with its own.
func (m Manifest) IsReplacement() bool { return m.Generation > 0 && m.Base == m.Generation }

// Expected is the number of results that complete this generation of the batch.
func (m Manifest) Expected() int {
	if m.Generation > 0 && len(m.Seqs) > 0 {
		return len(m.Seqs)
	}
	return m.Count
}

// Seq returns the seq of the i-th (0-based) item this generation runs.
func (m Manifest) Seq(i int) int {
	if m.Generation > 0 && len(m.Seqs) > 0 {
		return m.Seqs[i]
	}
	return i + 1
}

// HashItems returns a stable content hash of a batch's items in Seq order.
func HashItems(items []Item) string {
	h := NewItemHasher()
	for _, it := range items {
		h.Add(it)
	}
	return h.Sum()
}

// ItemHasher computes HashItems one item at a time, for batches read from a file
// rather than held in memory: adding a batch's items in Seq order gives the same
// Sum as HashItems of them. It is not safe for concurrent use.
type ItemHasher struct {
	h   hash.Hash
	enc *json.Encoder
}

// NewItemHasher returns a hasher of no items yet.
func NewItemHasher() *ItemHasher {
	h := sha256.New()
	return &ItemHasher{h: h, enc: json.NewEncoder(h)}
}

// Add adds the next item.
func (h *ItemHasher) Add(it Item) {
	_ = h.enc.Encode(it) // writing to a hash cannot fail
}

// Sum returns the hash of the items added so far.
func (h *ItemHasher) Sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// Status is the final state of an item.
type Status string

// The two final states of an item. A failed item holds its place in the batch.
const (
	StatusOK     Status = "ok"
	StatusFailed Status = "failed"
)

// Result is the one final outcome of processing an item: ok with its analysis and
// cards, or failed with the reason.
type Result struct {
	BatchID    string `json:"batch_id"`
	Seq        int    `json:"seq"`
	Generation int    `json:"generation"`
	Item
	Status   Status    `json:"status"`
	Analysis *Analysis `json:"analysis,omitempty"`
	Cards    []Card    `json:"cards,omitempty"`
	Failure  *Failure  `json:"failure,omitempty"`
	// Attempts is how many times the item was delivered to a processor.
	Attempts    int       `json:"attempts"`
	Usage       Usage     `json:"usage"`
	ProcessedAt time.Time `json:"processed_at"`
}

// Usage is what processing cost: API calls (attempts, each paid or not), cache
// look-ups, tokens and money. Tokens and cost count only what was paid for: a cache hit
// adds none.
type Usage struct {
	Stage1Calls      int     `json:"stage1_calls"`
	Stage2Calls      int     `json:"stage2_calls"`
	CacheHits        int     `json:"cache_hits"`
	CacheMisses      int     `json:"cache_misses"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Cost             float64 `json:"cost"`
}

// Add returns the sum of two usages.
func (u Usage) Add(o Usage) Usage {
	return Usage{
		Stage1Calls:      u.Stage1Calls + o.Stage1Calls,
		Stage2Calls:      u.Stage2Calls + o.Stage2Calls,
		CacheHits:        u.CacheHits + o.CacheHits,
		CacheMisses:      u.CacheMisses + o.CacheMisses,
		PromptTokens:     u.PromptTokens + o.PromptTokens,
		CompletionTokens: u.CompletionTokens + o.CompletionTokens,
		Cost:             u.Cost + o.Cost,
	}
}

// Failure says why an item failed and what the user can do about it.
type Failure struct {
	// Stage is where it failed: "stage1", "stage2" or "input".
	Stage    string     `json:"stage"`
	Reason   string     `json:"reason"`
	Class    ErrorClass `json:"class"`
	NextStep string     `json:"next_step"`
}

// Suggested next steps for a failed item.
const (
	NextRetry      = "retry: flashpipe retry --batch <id>"
	NextFixInput   = "fix the input and submit it again"
	NextRaiseLimit = "raise the limit (max_tokens, credits or key limit), then retry"
	NextCheckKey   = "check the API key and credits, then retry"
)

// Analysis is the stage 1 answer: the nuance analysis of one term.
type Analysis struct {
	TermNumber        int64       `json:"term_number"`
	Term              string      `json:"term"`
	IPA               string      `json:"ipa"`
	POS               string      `json:"pos"`
	PrimaryMeaning    string      `json:"primary_meaning"`
	OtherMeanings     *string     `json:"other_meanings"`
	Metaphor          string      `json:"metaphor"`
	MetaphorNoun      string      `json:"metaphor_noun"`
	MetaphorAction    string      `json:"metaphor_action"`
	SuggestedLocation string      `json:"suggested_location"`
	AnchorObject      string      `json:"anchor_object"`
	AnchorSensory     string      `json:"anchor_sensory"`
	Explanation       string      `json:"explanation"`
	UsageContext      *string     `json:"usage_context"`
	Comparison        *Comparison `json:"comparison"`
	Homonyms          []Homonym   `json:"homonyms"`
	KoreanKeywords    []string    `json:"korean_keywords"`
}

// Comparison contrasts a term with a near-synonym.
type Comparison struct {
	Vs     string `json:"vs"`
	Nuance string `json:"nuance"`
}

// Homonym is another word that sounds the same.
type Homonym struct {
	Hanja          string `json:"hanja"`
	Reading        string `json:"reading"`
	Meaning        string `json:"meaning"`
	Differentiator string `json:"differentiator"`
}

// Card is one flashcard of the stage 2 answer.
type Card struct {
	TabName        string `json:"tab_name"`
	Primer         string `json:"primer"`
	Front          string `json:"front"`
	Back           string `json:"back"`
	Tags           string `json:"tags"`
	HonorificLevel string `json:"honorific_level"`
}

// manifestJSON is the wire form of a Manifest: a long Seqs list travels as a bitmap
// (one bit per item of the batch), so a retry of a whole failed 200,000-item batch is a
// 33 KB message, not 1.3 MB.
type manifestJSON struct {
	manifestAlias
	SeqBitmap []byte `json:"seq_bitmap,omitempty"`
}

type manifestAlias Manifest

// seqBitmapAbove is the list length from which Seqs travel as a bitmap.
const seqBitmapAbove = 64

// MarshalJSON encodes the manifest, with a long Seqs list as a bitmap.
func (m Manifest) MarshalJSON() ([]byte, error) {
	w := manifestJSON{manifestAlias: manifestAlias(m)}
	if len(m.Seqs) > seqBitmapAbove && m.Count > 0 {
		bits := make([]byte, m.Count/8+1)
		for _, s := range m.Seqs {
			if s < 1 || s > m.Count {
				return nil, fmt.Errorf("manifest of %s: seq %d outside 1..%d", m.BatchID, s, m.Count)
			}
			bits[s/8] |= 1 << (s % 8)
		}
		w.Seqs, w.SeqBitmap = nil, bits
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes a manifest written by MarshalJSON.
func (m *Manifest) UnmarshalJSON(data []byte) error {
	var w manifestJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*m = Manifest(w.manifestAlias)
	if len(w.SeqBitmap) > 0 {
		m.Seqs = nil
		for s := 1; s <= m.Count && s/8 < len(w.SeqBitmap); s++ {
			if w.SeqBitmap[s/8]&(1<<(s%8)) != 0 {
				m.Seqs = append(m.Seqs, s)
			}
		}
	}
	return nil
}
