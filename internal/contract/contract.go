// Package contract is flashpipe's message contract: the JetStream streams, the subjects
// under a configurable prefix, the headers every message carries, the Nats-Msg-Id that
// makes a re-publish a no-op, and the encoding of each message body.
//
// Four streams, one per hop, all with limits retention so they can be replayed:
//
//	<PREFIX>_BATCHES  <prefix>.batches.<batch>           manifests, one per generation
//	<PREFIX>_ITEMS    <prefix>.items.<batch>.<seq>       one work item per message
//	<PREFIX>_RESULTS  <prefix>.results.<batch>.<seq>     one result per item (and generation)
//	<PREFIX>_ORDERED  <prefix>.ordered.<batch>           the batch's ordered log of events
//
// Per-item subjects let any stage fetch one item's latest message by direct get; the
// single ordered subject per batch makes "the last ordered message" the sequencer's
// durable cursor. Every message carries the batch id, seq, position and generation both
// in headers and in its JSON body; decoders reject a message whose two disagree.
package contract

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
)

// Defaults for Config. The retention windows are sized for ten million items a day
// (docs/capacity.md): the ordered log and the manifests for a week, the items and
// results, which only a batch in progress and reprocess read, for two days.
const (
	DefaultPrefix          = "flashpipe"
	DefaultReplicas        = 1
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultItemsMaxAge     = 48 * time.Hour
	DefaultResultsMaxAge   = 48 * time.Hour
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultCompression     = CompressionS2
	// DefaultRefusedMaxAge and DefaultRefusedMaxBytes bound the refused messages kept.
	DefaultRefusedMaxAge   = 30 * 24 * time.Hour
	DefaultRefusedMaxBytes = 1 << 30
)

// Stream compression kinds for Config.Compression.
const (
	CompressionS2   = "s2"
	CompressionNone = "none"
)

// Storage kinds for Config.Storage.
const (
	StorageFile   = "file"
	StorageMemory = "memory"
)

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// Config shapes the streams.
type Config struct {
	// Prefix is the first subject token(s) of every subject, e.g. "flashpipe" or
	// "acme.flashpipe". Stream names derive from it ("FLASHPIPE_ITEMS").
	Prefix string
	// Replicas is each stream's replica count (1, or 3 on a cluster).
	Replicas int
	// Storage is StorageFile (default) or StorageMemory.
	Storage string
	// MaxAge bounds how long the ordered log and the manifests stay (the BATCHES and
	// ORDERED streams): how long a batch can be replayed, retried and reprocessed.
	// Zero means DefaultMaxAge; a negative value keeps them forever.
	MaxAge time.Duration
	// ItemsMaxAge bounds how long work items stay in the ITEMS stream: how long an
	// item may wait to be processed, and how long after its submission a batch can be
	// reprocessed (retry needs only the ordered log). Zero means DefaultItemsMaxAge; a
	// negative value keeps them forever.
	ItemsMaxAge time.Duration
	// ResultsMaxAge bounds how long results stay in the RESULTS stream: how long a
	// result may wait to be ordered by the sequencer (nothing reads it once its
	// generation is complete). Zero means DefaultResultsMaxAge; a negative value keeps
	// them forever.
	ResultsMaxAge time.Duration
	// Compression is the streams' storage compression: CompressionS2 (default) or
	// CompressionNone. It applies to file storage (nats-server 2.10+), compresses
	// blocks as they are written and is transparent to readers.
	Compression string
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Ids. Zero means
	// DefaultDuplicateWindow, shortened on a stream that keeps its messages for less; a
	// value set here must not be longer than any positive max age.
	DuplicateWindow time.Duration
	// RefusedMaxAge and RefusedMaxBytes bound the refused-messages stream
	// (DefaultRefusedMaxAge, DefaultRefusedMaxBytes): a flood of bad input drops the
	// oldest refusals, never anything else.
	RefusedMaxAge   time.Duration
	RefusedMaxBytes int64
}

func (c Config) withDefaults() Config {
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.Replicas = cmp.Or(c.Replicas, DefaultReplicas)
	c.Storage = cmp.Or(c.Storage, StorageFile)
	c.MaxAge = maxAgeOr(c.MaxAge, DefaultMaxAge)
	c.ItemsMaxAge = maxAgeOr(c.ItemsMaxAge, DefaultItemsMaxAge)
	c.ResultsMaxAge = maxAgeOr(c.ResultsMaxAge, DefaultResultsMaxAge)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, DefaultDuplicateWindow)
	c.Compression = cmp.Or(c.Compression, DefaultCompression)
	c.RefusedMaxAge = cmp.Or(c.RefusedMaxAge, DefaultRefusedMaxAge)
	c.RefusedMaxBytes = cmp.Or(c.RefusedMaxBytes, DefaultRefusedMaxBytes)
	return c
}

// maxAgeOr is a max age with its default filled in: zero means def, negative forever
// (JetStream's 0).
func maxAgeOr(d, def time.Duration) time.Duration {
	d = cmp.Or(d, def)
	if d < 0 {
		return 0
	}
	return d
}

func (c Config) validate(explicitWindow bool) error {
	if !prefixPattern.MatchString(c.Prefix) {
		return fmt.Errorf("contract: Config.Prefix %q must be dot-separated tokens of letters, digits, '-' and '_'", c.Prefix)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("contract: Config.Replicas must be 1 to 5, got %d", c.Replicas)
	}
	if c.Storage != StorageFile && c.Storage != StorageMemory {
		return fmt.Errorf("contract: Config.Storage must be %q or %q, got %q", StorageFile, StorageMemory, c.Storage)
	}
	if c.DuplicateWindow < 0 {
		return fmt.Errorf("contract: Config.DuplicateWindow must not be negative")
	}
	if c.Compression != CompressionS2 && c.Compression != CompressionNone {
		return fmt.Errorf("contract: Config.Compression must be %q or %q, got %q", CompressionS2, CompressionNone, c.Compression)
	}
	for _, f := range []struct {
		name, flag string
		d          time.Duration
	}{{"MaxAge", "--stream-max-age", c.MaxAge}, {"ItemsMaxAge", "--items-max-age", c.ItemsMaxAge}, {"ResultsMaxAge", "--results-max-age", c.ResultsMaxAge}} {
		if f.d > 0 && f.d < time.Second {
			return fmt.Errorf("contract: Config.%s must be at least 1s (or negative: forever), got %s", f.name, f.d)
		}
		if explicitWindow && f.d > 0 && c.DuplicateWindow > f.d {
			return fmt.Errorf("contract: Config.DuplicateWindow (%s) must not be longer than Config.%s (%s): JetStream cannot remember a message id longer than it keeps the message; shorten --duplicate-window or lengthen %s",
				c.DuplicateWindow, f.name, f.d, f.flag)
		}
	}
	return nil
}

// Contract names the streams and subjects for one prefix. It is immutable and safe for
// concurrent use.
type Contract struct {
	cfg    Config
	prefix string
	stream string // stream name prefix, e.g. "FLASHPIPE"
}

// New returns the contract for cfg.
func New(cfg Config) (*Contract, error) {
	explicitWindow := cfg.DuplicateWindow != 0
	cfg = cfg.withDefaults()
	if err := cfg.validate(explicitWindow); err != nil {
		return nil, err
	}
	return &Contract{
		cfg:    cfg,
		prefix: cfg.Prefix,
		stream: strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(cfg.Prefix)),
	}, nil
}

// Config returns the contract's configuration with defaults filled in.
func (c *Contract) Config() Config { return c.cfg }

// Prefix returns the subject prefix.
func (c *Contract) Prefix() string { return c.prefix }

// Stream names.
func (c *Contract) BatchesStream() string { return c.stream + "_BATCHES" }
func (c *Contract) ItemsStream() string   { return c.stream + "_ITEMS" }
func (c *Contract) ReadyStream() string   { return c.stream + "_READY" }
func (c *Contract) ResultsStream() string { return c.stream + "_RESULTS" }
func (c *Contract) OrderedStream() string { return c.stream + "_ORDERED" }
func (c *Contract) RefusedStream() string { return c.stream + "_REFUSED" }

// Name returns a resource name (KV bucket, consumer) scoped to this contract's prefix,
// e.g. Name("CACHE") == "FLASHPIPE_CACHE".
func (c *Contract) Name(suffix string) string { return c.stream + "_" + suffix }

// Subjects.
func (c *Contract) ManifestSubject(batch string) string { return c.prefix + ".batches." + batch }
func (c *Contract) ItemSubject(batch string, seq int) string {
	return fmt.Sprintf("%s.items.%s.%d", c.prefix, batch, seq)
}
func (c *Contract) ResultSubject(batch string, seq int) string {
	return fmt.Sprintf("%s.results.%s.%d", c.prefix, batch, seq)
}
func (c *Contract) OrderedSubject(batch string) string { return c.prefix + ".ordered." + batch }
func (c *Contract) ReadySubject(batch string, seq int) string {
	return fmt.Sprintf("%s.ready.%s.%d", c.prefix, batch, seq)
}

// RefusedSubject is where the refusals of messages about a batch are kept; batch ""
// (a message that names no valid batch) is "_".
func (c *Contract) RefusedSubject(batch string) string {
	if flashpipe.ValidateBatchID(batch) == nil {
		return c.prefix + ".refused." + batch
	}
	return c.prefix + ".refused._"
}

// Wildcard subjects: all manifests, all items, one batch's items, one batch's results, all ordered events.
func (c *Contract) AllManifests() string             { return c.prefix + ".batches.*" }
func (c *Contract) AllItems() string                 { return c.prefix + ".items.>" }
func (c *Contract) BatchItems(batch string) string   { return c.prefix + ".items." + batch + ".*" }
func (c *Contract) BatchResults(batch string) string { return c.prefix + ".results." + batch + ".*" }
func (c *Contract) AllOrdered() string               { return c.prefix + ".ordered.*" }
func (c *Contract) AllReady() string                 { return c.prefix + ".ready.>" }
func (c *Contract) AllResults() string               { return c.prefix + ".results.>" }
func (c *Contract) AllRefused() string               { return c.prefix + ".refused.*" }

// RefusedBatch is the batch id (or "_") a refused-messages subject names.
func (c *Contract) RefusedBatch(subject string) string {
	return strings.TrimPrefix(subject, c.prefix+".refused.")
}

// StorageType is the JetStream storage of the contract's streams and buckets.
func (c *Contract) StorageType() jetstream.StorageType {
	return StorageTypeOf(c.cfg.Storage)
}

// StorageTypeOf maps a Config.Storage value to JetStream's type.
func StorageTypeOf(s string) jetstream.StorageType {
	if s == StorageMemory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// ScheduleBucket names the scheduler's key-value bucket: one key per generation of a
// batch still being dispatched, with its tenant, priority and how far it is.
func (c *Contract) ScheduleBucket() string { return c.Name("SCHEDULE") }

// StreamConfigs returns the configuration of the streams.
//
// No stream limits messages per subject: a retry or reprocess generation adds a message
// to each of its items' subjects, and reprocess reads every item's generation 0 message
// back from the items stream, so keeping only the last one per subject would make a
// batch that was retried impossible to reprocess; the sequencer reads the last result
// per subject but skips other generations', and the ordered subject of a batch is its
// whole log. What bounds every stream is its age (and with it the subject count, which
// costs the server memory per subject: docs/capacity.md).
func (c *Contract) StreamConfigs() []jetstream.StreamConfig {
	storage := c.StorageType()
	compression := jetstream.S2Compression
	if c.cfg.Compression == CompressionNone {
		compression = jetstream.NoCompression
	}
	mk := func(name, subject, desc string, maxAge time.Duration) jetstream.StreamConfig {
		dup := c.cfg.DuplicateWindow
		if maxAge > 0 && dup > maxAge {
			dup = maxAge // JetStream requires the duplicate window within the max age
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     storage,
			Replicas:    c.cfg.Replicas,
			MaxAge:      maxAge,
			Duplicates:  dup,
			Compression: compression,
			AllowDirect: true,
		}
	}
	ordered := mk(c.OrderedStream(), c.prefix+".ordered.*", "flashpipe ordered events per batch", c.cfg.MaxAge)
	// The sequencer appends runs of events as atomic batches where the server supports
	// them (nats-server 2.12+); older servers ignore the flag and it appends one by one.
	ordered.AllowAtomicPublish = true
	// The scheduler dispatches items here in fair order; a processor's ack removes
	// them. The scheduler keeps only a window of them ahead of the processors, and an
	// item waiting here must never expire (no max age).
	ready := mk(c.ReadyStream(), c.prefix+".ready.*.*", "flashpipe items dispatched to the processors, in fair order", 0)
	ready.Retention = jetstream.WorkQueuePolicy
	refused := mk(c.RefusedStream(), c.prefix+".refused.*", "flashpipe messages refused, with the reason (kept for the operator and the upstream)", c.cfg.RefusedMaxAge)
	refused.MaxBytes = c.cfg.RefusedMaxBytes
	return []jetstream.StreamConfig{
		mk(c.BatchesStream(), c.prefix+".batches.*", "flashpipe batch manifests", c.cfg.MaxAge),
		mk(c.ItemsStream(), c.prefix+".items.*.*", "flashpipe work items, one per message", c.cfg.ItemsMaxAge),
		ready,
		mk(c.ResultsStream(), c.prefix+".results.*.*", "flashpipe results, one per item and generation", c.cfg.ResultsMaxAge),
		ordered,
		refused,
	}
}

// RegistryBucket names the key-value bucket of batch ids: one key per batch id ever
// submitted, with the content hash, count, source and latest generation of the batch,
// kept for ever (whatever the streams' retention), so that a batch id names one batch
// for ever (see ingest).
func (c *Contract) RegistryBucket() string { return c.Name("BATCH_IDS") }

// RegistryConfig is the configuration of the batch id registry: no TTL.
func (c *Contract) RegistryConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.RegistryBucket(),
		Description: "flashpipe: every batch id submitted, with its content hash and latest generation (kept for ever)",
		History:     1,
		Storage:     c.StorageType(),
		Replicas:    c.cfg.Replicas,
	}
}

// EnsureStreams creates the streams and the batch id registry that do not exist yet,
// with the contract's configuration, and leaves existing ones as they are: one whose
// settings differ from the configuration is reported on log (one warning naming each
// setting), never changed (see Plan and Apply for the operator's command). Every
// service calls it at start-up; clients call CheckStreams.
func (c *Contract) EnsureStreams(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	for _, sc := range c.StreamConfigs() {
		_, diffs, err := EnsureStream(ctx, js, sc)
		if err != nil {
			return fmt.Errorf("ensure stream: %w", err)
		}
		ReportDifferences(log, "stream", sc.Name, diffs)
	}
	if _, err := OpenKeyValue(ctx, js, c.RegistryConfig(), log); err != nil {
		return fmt.Errorf("ensure batch id registry: %w", err)
	}
	return nil
}

// CheckStreams reports whether the streams exist, without creating or changing any:
// what a client (submit, status, retry, ...) calls before it uses them. A missing
// stream is an error wrapping ErrMissing that says how to create it.
func (c *Contract) CheckStreams(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range c.StreamConfigs() {
		_, err := js.Stream(ctx, sc.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s %w: start the services (they create what is missing) or run `flashpipe streams apply`: %w",
				sc.Name, ErrMissing, err)
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	_, err := js.KeyValue(ctx, c.RegistryBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("bucket %s %w: start the services (they create what is missing) or run `flashpipe streams apply`: %w",
			c.RegistryBucket(), ErrMissing, err)
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", c.RegistryBucket(), err)
	}
	return nil
}

// IsNotFound reports whether err means a message, stream or consumer does not exist.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrKeyNotFound)
}
