package processor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// ProviderBatchBucketSuffix names the KV bucket of provider batches after the
// contract's stream name (FLASHPIPE_PROVIDER_BATCHES).
const ProviderBatchBucketSuffix = "PROVIDER_BATCHES"

// ProviderBatchTTL is how long a provider batch's record and its requests' claims are
// kept: longer than the providers' 24-hour completion window, so a batch is found
// again after any crash; after it an item still waiting for a lost claim asks again.
const ProviderBatchTTL = 7 * 24 * time.Hour

// ProviderBatchBucket is the configuration of the provider batches' KV bucket: one
// record per provider batch ("b.<key>") and one claim per request in flight
// ("r.<hash of its cache key>").
func ProviderBatchBucket(c *contract.Contract) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.Name(ProviderBatchBucketSuffix),
		Description: "flashpipe: provider batches (recorded before they are submitted) and the requests they carry",
		History:     1,
		TTL:         ProviderBatchTTL,
		Storage:     c.StorageType(),
		Replicas:    c.Config().Replicas,
	}
}

// The states of a provider batch's record. A record is created gathering, becomes
// submitting once its requests are claimed (before anything is sent), submitted once
// the provider's id is recorded, and done once every request's outcome is in its
// claim. abandoned (a gatherer died before submitting) and failed (the provider
// refused the batch) are final too; nothing was paid for either.
const (
	RecordGathering  = "gathering"
	RecordSubmitting = "submitting"
	RecordSubmitted  = "submitted"
	RecordDone       = "done"
	RecordAbandoned  = "abandoned"
	RecordFailed     = "failed"
)

// ProviderBatch is the durable record of one provider batch.
type ProviderBatch struct {
	// Key is the idempotency key: in the provider batch's metadata and custom_ids.
	Key      string `json:"key"`
	Provider string `json:"provider"`
	Stage    int    `json:"stage"`
	Model    string `json:"model"`
	// State is the record's state (Record* constants); ProviderState the provider's.
	State         string `json:"state"`
	ProviderID    string `json:"provider_id,omitempty"`
	ProviderState string `json:"provider_state,omitempty"`
	// Total, Completed and Failed are the provider's request counts at the last poll.
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	// Claims are the requests' claim keys; the claim holds its request's index i (its
	// custom_id is Key-i).
	Claims []string `json:"claims,omitempty"`
	// Attempt is 0 for a first batch, n for the n-th retry of failed requests
	// (Parent names the batch retried).
	Attempt int    `json:"attempt,omitempty"`
	Parent  string `json:"parent,omitempty"`
	// Batches lists the flashpipe batches whose items the requests serve.
	Batches []string `json:"batches,omitempty"`
	Outcome string   `json:"outcome,omitempty"`
	// Costs are what the requests cost (USD by custom_id), written when the results
	// are applied: the replica that reserved the spend settles to them, whichever
	// replica applied.
	Costs     map[string]float64 `json:"costs,omitempty"`
	By        string             `json:"by,omitempty"`
	CreatedAt time.Time          `json:"created_at"`
	UpdatedAt time.Time          `json:"updated_at"`
}

// Final reports whether the record needs no more work.
func (r *ProviderBatch) Final() bool {
	switch r.State {
	case RecordDone, RecordAbandoned, RecordFailed:
		return true
	}
	return false
}

// The states of a request's claim.
const (
	ClaimPending  = "pending"  // in a provider batch (Batch), waiting for its result
	ClaimAnswered = "answered" // the batch answered: Content and Usage are set
	ClaimSync     = "sync"     // the batch expired or was cancelled, or retries ran out: use the sync API
	ClaimFailed   = "failed"   // refused for good (Err): the item fails with it
)

// requestClaim is one request in flight in a provider batch: it is both the claim
// that keeps any other replica from sending the same request, and the mailbox where
// the batch's result is left for the item that waits for it.
type requestClaim struct {
	Batch    string      `json:"batch"`
	Index    int         `json:"index"`
	Stage    int         `json:"stage"`
	CacheKey string      `json:"cache_key"`
	BatchID  string      `json:"batch_id,omitempty"`
	Req      llm.Request `json:"req"`
	State    string      `json:"state"`
	Content  string      `json:"content,omitempty"`
	Usage    llm.Usage   `json:"usage"`
	Err      string      `json:"err,omitempty"`
	At       time.Time   `json:"at"`
}

// batchStore reads and writes records and claims.
type batchStore struct{ kv jetstream.KeyValue }

func recordKey(key string) string { return "b." + key }
func claimKey(h string) string    { return "r." + h }

// claimHash is the claim key part for a cache key.
func claimHash(cacheKey string) string {
	s := sha256.Sum256([]byte(cacheKey))
	return hex.EncodeToString(s[:16])
}

// newBatchKey returns a fresh idempotency key: time and randomness, unique across
// replicas.
func newBatchKey() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "fp" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "_" + hex.EncodeToString(b[:])
}

func (s *batchStore) getRecord(ctx context.Context, key string) (*ProviderBatch, uint64, error) {
	e, err := s.kv.Get(ctx, recordKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r ProviderBatch
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("provider batch %s: corrupt record: %w", key, err)
	}
	return &r, e.Revision(), nil
}

// createRecord writes a new record; false if one exists under its key.
func (s *batchStore) createRecord(ctx context.Context, r *ProviderBatch) (uint64, bool, error) {
	r.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return 0, false, err
	}
	rev, err := s.kv.Create(ctx, recordKey(r.Key), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

// updateRecord writes r if the record is still at rev (compare-and-set).
func (s *batchStore) updateRecord(ctx context.Context, r *ProviderBatch, rev uint64) (uint64, error) {
	r.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	return s.kv.Update(ctx, recordKey(r.Key), b, rev)
}

func (s *batchStore) getClaim(ctx context.Context, h string) (*requestClaim, uint64, error) {
	e, err := s.kv.Get(ctx, claimKey(h))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var c requestClaim
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, 0, fmt.Errorf("request claim %s: corrupt: %w", h, err)
	}
	return &c, e.Revision(), nil
}

// createClaim claims a request; false if another claim holds it.
func (s *batchStore) createClaim(ctx context.Context, h string, c *requestClaim) (bool, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	_, err = s.kv.Create(ctx, claimKey(h), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	return err == nil, err
}

func (s *batchStore) putClaim(ctx context.Context, h string, c *requestClaim) error {
	c.At = time.Now().UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, claimKey(h), b)
	return err
}

// deleteClaim removes a claim if it is still at rev.
func (s *batchStore) deleteClaim(ctx context.Context, h string, rev uint64) error {
	err := s.kv.Delete(ctx, claimKey(h), jetstream.LastRevision(rev))
	if err != nil && (errors.Is(err, jetstream.ErrKeyNotFound) || isWrongRevision(err)) {
		return nil
	}
	return err
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// recordKeys lists the keys of every record.
func (s *batchStore) recordKeys(ctx context.Context) ([]string, error) {
	l, err := s.kv.ListKeysFiltered(ctx, "b.>")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, strings.TrimPrefix(k, "b."))
	}
	return keys, nil
}

// ListProviderBatches returns the provider batches recorded in the bucket, newest
// first; batch, if not empty, keeps those serving that flashpipe batch. A missing
// bucket (batch mode never used) is no batches.
func ListProviderBatches(ctx context.Context, js jetstream.JetStream, c *contract.Contract, batch string) ([]ProviderBatch, error) {
	kv, err := js.KeyValue(ctx, c.Name(ProviderBatchBucketSuffix))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("provider batches: %w", err)
	}
	s := &batchStore{kv: kv}
	keys, err := s.recordKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("provider batches: %w", err)
	}
	var out []ProviderBatch
	for _, k := range keys {
		r, _, err := s.getRecord(ctx, k)
		if err != nil || r == nil {
			continue
		}
		if batch != "" && !contains(r.Batches, batch) {
			continue
		}
		r.Claims = nil
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
