// Package cache keeps the answers of the LLM stages in a JetStream key-value bucket, so
// the pipeline never pays twice for the same answer: not on a redelivery, not on a
// stage 2 retry (stage 1 is cached first), not for the same word in another batch.
//
// Keys are "s<stage>.<model>.<hash>": the hash (internal/stages Stage1Key/Stage2Key)
// covers the stage, model, prompt version and canonical input, never the position; the
// readable stage and model tokens let Clear drop one stage's or one model's answers.
// Entries are permanent unless Config.TTL is set or the user clears them.
//
// Concurrency: identical look-ups in flight in one process share one computation
// (singleflight); across processes, the replica that pays for an answer first claims
// its key (see claim.go), and the others wait for its answer, so identical look-ups on
// any number of replicas pay once. All methods are safe for concurrent use.
package cache

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"golang.org/x/sync/singleflight"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// DefaultBucketSuffix names the bucket after the contract's prefix: FLASHPIPE_CACHE.
const DefaultBucketSuffix = "CACHE"

// DefaultOpTimeout bounds one read or write of the bucket: a look-up that fails is
// retried later (the item is requeued) and a write that fails only costs a future
// miss, so neither should hold an item for the JetStream API's full timeout when NATS
// goes away.
const DefaultOpTimeout = 2 * time.Second

// Config configures the cache bucket.
type Config struct {
	// Bucket is the KV bucket name (default: <PREFIX>_CACHE).
	Bucket string
	// TTL drops entries older than this (zero: keep them until cleared).
	TTL time.Duration
	// Replicas and Storage of the bucket (defaults: the contract's).
	Replicas int
	Storage  string
	// OpTimeout bounds one read or write (DefaultOpTimeout).
	OpTimeout time.Duration
	// ClaimTTL is how long other replicas wait for one that died while paying for an
	// answer they also look up (DefaultClaimTTL); a live one renews its claim every
	// ClaimTTL/3. All replicas sharing a Bucket must use the same.
	ClaimTTL time.Duration
	Logger   *slog.Logger
}

// Entry is one cached answer.
type Entry struct {
	Stage         int    `json:"stage"`
	Model         string `json:"model"`
	PromptVersion string `json:"prompt_version,omitempty"`
	// Value is the validated, normalised answer (stage 1: the analysis; stage 2: the
	// cards), without the parts that depend on the item's position.
	Value json.RawMessage `json:"value,omitempty"`
	// Usage is what the answer cost when it was paid for.
	Usage     flashpipe.Usage `json:"usage"`
	CreatedAt time.Time       `json:"created_at"`
}

// ErrUnavailable wraps errors reading the bucket: the answer may be there, so the
// caller should retry later rather than pay for it again.
var ErrUnavailable = errors.New("cache unavailable")

// encode marshals the entry with its Value spliced in as is: the value is the caller's
// own json.Marshal output, and re-validating a few kilobytes per answer is measurable
// on the hot path.
func (e Entry) encode() ([]byte, error) {
	value := e.Value
	e.Value = nil
	head, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(value) == 0 {
		return head, nil
	}
	// Value is nil and omitempty, so head lacks it: append it before the closing brace.
	out := make([]byte, 0, len(head)+len(value)+10)
	out = append(out, head[:len(head)-1]...)
	out = append(out, `,"value":`...)
	out = append(out, value...)
	return append(out, '}'), nil
}

// Cache is the answer cache.
type Cache struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	claims    jetstream.KeyValue // nil for a client's cache (Open), which pays for nothing
	claimsCfg jetstream.KeyValueConfig
	stream    string
	bucket    string
	sf        singleflight.Group
	opTime    time.Duration
	claimTTL  time.Duration
	id        string // this replica, in its claims
	log       *slog.Logger
}

// withDefaults fills in the bucket name, replicas, storage, timeout and logger.
func (cfg Config) withDefaults(c *contract.Contract) Config {
	cfg.Bucket = cmp.Or(cfg.Bucket, c.Name(DefaultBucketSuffix))
	cfg.Replicas = cmp.Or(cfg.Replicas, c.Config().Replicas)
	cfg.Storage = cmp.Or(cfg.Storage, c.Config().Storage)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.OpTimeout = cmp.Or(cfg.OpTimeout, DefaultOpTimeout)
	cfg.ClaimTTL = cmp.Or(cfg.ClaimTTL, DefaultClaimTTL)
	return cfg
}

// ClaimsConfig is the configuration of the bucket where replicas claim the answers
// they are paying for (in memory: a claim lives only as long as its TTL).
func ClaimsConfig(c *contract.Contract, cfg Config) jetstream.KeyValueConfig {
	cfg = cfg.withDefaults(c)
	return jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket + ClaimsBucketSuffix,
		Description: "flashpipe: answers being paid for, by the replica paying",
		History:     1,
		TTL:         cfg.ClaimTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    cfg.Replicas,
	}
}

// BucketConfig is the configuration New creates the cache bucket with.
func BucketConfig(c *contract.Contract, cfg Config) jetstream.KeyValueConfig {
	cfg = cfg.withDefaults(c)
	return jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "flashpipe: LLM answers by stage, model, prompt version and input",
		History:     1,
		TTL:         cfg.TTL,
		Storage:     contract.StorageTypeOf(cfg.Storage),
		Replicas:    cfg.Replicas,
	}
}

// ErrNoCache is returned by Open when the cache bucket does not exist yet.
var ErrNoCache = errors.New("the answer cache does not exist yet (a processor creates it)")

// New opens the cache bucket, creating it if it does not exist (what a service does);
// an existing bucket is never changed (its differing settings are logged).
func New(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Cache, error) {
	if cfg.TTL < 0 {
		return nil, errors.New("cache: Config.TTL must not be negative")
	}
	cfg = cfg.withDefaults(c)
	if cfg.ClaimTTL < 300*time.Millisecond {
		return nil, fmt.Errorf("cache: Config.ClaimTTL must be at least 300ms, got %s", cfg.ClaimTTL)
	}
	kv, err := contract.OpenKeyValue(ctx, js, BucketConfig(c, cfg), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("cache: open bucket %s: %w", cfg.Bucket, err)
	}
	ccfg := ClaimsConfig(c, cfg)
	claims, err := contract.OpenKeyValue(ctx, js, ccfg, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("cache: open bucket %s: %w", ccfg.Bucket, err)
	}
	cc := newCache(js, kv, cfg)
	cc.claims, cc.claimsCfg = claims, ccfg
	return cc, nil
}

// Open opens the existing cache bucket without creating or changing anything (what a
// client does), or fails with ErrNoCache.
func Open(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Cache, error) {
	cfg = cfg.withDefaults(c)
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("cache: bucket %s: %w", cfg.Bucket, ErrNoCache)
	}
	if err != nil {
		return nil, fmt.Errorf("cache: open bucket %s: %w", cfg.Bucket, err)
	}
	return newCache(js, kv, cfg), nil
}

func newCache(js jetstream.JetStream, kv jetstream.KeyValue, cfg Config) *Cache {
	return &Cache{js: js, kv: kv, bucket: cfg.Bucket, stream: "KV_" + cfg.Bucket, opTime: cfg.OpTimeout,
		claimTTL: cfg.ClaimTTL, id: nuid.Next(), log: cfg.Logger.With("component", "cache")}
}

var unsafeToken = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// ModelToken is the key token of a model name: characters a key token cannot hold
// become '_' (the hash in the key covers the exact name).
func ModelToken(model string) string {
	if model == "" {
		return "_"
	}
	return unsafeToken.ReplaceAllString(model, "_")
}

// Key returns the key of an answer.
func Key(stage int, model, hash string) string {
	return fmt.Sprintf("s%d.%s.%s", stage, ModelToken(model), hash)
}

// Get returns the entry at key; found is false when there is none. Errors are
// transient (the bucket could not be read).
func (c *Cache) Get(ctx context.Context, key string) (e Entry, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opTime)
	defer cancel()
	kve, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return e, false, nil
	}
	if err != nil {
		return e, false, flashpipe.AsTransient(fmt.Errorf("%w: get: %w", ErrUnavailable, err))
	}
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		// A corrupt entry is a miss; the fresh answer overwrites it.
		c.log.Warn("corrupt cache entry ignored", "key", key, "err", err)
		return e, false, nil
	}
	return e, true, nil
}

// Put stores an entry.
func (c *Cache) Put(ctx context.Context, key string, e Entry) error {
	data, err := e.encode()
	if err != nil {
		return fmt.Errorf("cache: encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opTime)
	defer cancel()
	if _, err := c.kv.Put(ctx, key, data); err != nil {
		return flashpipe.AsTransient(fmt.Errorf("cache: put: %w", err))
	}
	return nil
}

// Do returns the entry at key, or computes it with fn, stores it and returns it. hit
// reports whether the answer came from the cache (or from an identical computation
// already in flight in this process or on another replica), so it cost nothing. While
// another replica computes the same key, Do waits for its answer (or for its claim to
// expire, see claim.go) until ctx ends. A client's cache (Open) claims nothing. A
// failure to store a computed answer is logged, not returned: the answer was paid for
// and is good.
func (c *Cache) Do(ctx context.Context, key string, fn func() (Entry, error)) (e Entry, hit bool, err error) {
	type outcome struct {
		e   Entry
		hit bool
	}
	leader := false
	v, err, shared := c.sf.Do(key, func() (any, error) {
		leader = true
		e, found, err := c.Get(ctx, key)
		for err == nil && !found {
			if c.claims == nil { // a client's cache: nothing to claim among replicas
				e, err = c.compute(ctx, key, fn)
				return outcome{e, false}, err
			}
			rev, until, cerr := c.claim(ctx, key)
			switch {
			case cerr != nil:
				// Another replica may be paying: try again later rather than pay twice.
				return outcome{}, flashpipe.AsTransient(fmt.Errorf("%w: claim: %w", ErrUnavailable, cerr))
			case rev == 0:
				if err := c.await(ctx, key, until); err != nil {
					return outcome{}, err
				}
				e, found, err = c.Get(ctx, key)
				continue
			default:
				defer c.hold(key, rev)()
				// The claim may have been released by a replica that stored the
				// answer since the look-up above: look again before paying.
				if e, found, err = c.Get(ctx, key); err != nil || found {
					return outcome{e, true}, err
				}
			}
			e, err = c.compute(ctx, key, fn)
			return outcome{e, false}, err
		}
		return outcome{e, true}, err
	})
	if err != nil {
		return Entry{}, false, err
	}
	o := v.(outcome)
	return o.e, o.hit || (shared && !leader), nil
}

// compute pays for the answer at key with fn and stores it.
func (c *Cache) compute(ctx context.Context, key string, fn func() (Entry, error)) (Entry, error) {
	e, err := fn()
	if err != nil {
		return Entry{}, err
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now().UTC()
	}
	if perr := c.Put(context.WithoutCancel(ctx), key, e); perr != nil {
		c.log.Warn("answer not cached", "key", key, "err", perr)
	}
	return e, nil
}

// Stats describes the cache's content.
type Stats struct {
	Bucket  string         `json:"bucket"`
	Entries int            `json:"entries"`
	Bytes   uint64         `json:"bytes"`
	ByStage map[string]int `json:"by_stage"`
	ByModel map[string]int `json:"by_model"`
}

// Stats counts the entries by stage and model.
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Bucket: c.bucket, ByStage: map[string]int{}, ByModel: map[string]int{}}
	status, err := c.kv.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("cache: status: %w", err)
	}
	st.Bytes = status.Bytes()
	lister, err := c.kv.ListKeys(ctx)
	if err != nil {
		return st, fmt.Errorf("cache: list keys: %w", err)
	}
	defer lister.Stop()
	for k := range lister.Keys() {
		parts := strings.SplitN(k, ".", 3)
		if len(parts) != 3 {
			continue
		}
		st.Entries++
		st.ByStage[parts[0]]++
		st.ByModel[parts[1]]++
	}
	return st, nil
}

// Clear removes entries: all of them, or those of one stage (1 or 2), or of one model,
// or both. It returns how many entries were removed.
func (c *Cache) Clear(ctx context.Context, stage int, model string) (uint64, error) {
	filter := "$KV." + c.bucket + "."
	switch {
	case stage == 0 && model == "":
		filter += ">"
	case stage == 0:
		filter += "*." + ModelToken(model) + ".*"
	case model == "":
		filter += fmt.Sprintf("s%d.>", stage)
	default:
		filter += fmt.Sprintf("s%d.%s.*", stage, ModelToken(model))
	}
	st, err := c.js.Stream(ctx, c.stream)
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	var n uint64
	for _, cnt := range info.State.Subjects {
		n += cnt
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return 0, fmt.Errorf("cache: clear: %w", err)
	}
	return n, nil
}
