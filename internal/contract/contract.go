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
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/natsx"
)

// Defaults for Config.
const (
	DefaultPrefix          = "flashpipe"
	DefaultReplicas        = 1
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultDuplicateWindow = 10 * time.Minute
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
	// MaxAge bounds how long messages stay replayable. Zero means DefaultMaxAge; a
	// negative value keeps them forever.
	MaxAge time.Duration
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Ids.
	DuplicateWindow time.Duration
}

func (c Config) withDefaults() Config {
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.Replicas = cmp.Or(c.Replicas, DefaultReplicas)
	c.Storage = cmp.Or(c.Storage, StorageFile)
	c.MaxAge = cmp.Or(c.MaxAge, DefaultMaxAge)
	if c.MaxAge < 0 {
		c.MaxAge = 0
	}
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, DefaultDuplicateWindow)
	return c
}

func (c Config) validate() error {
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
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
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
func (c *Contract) ResultsStream() string { return c.stream + "_RESULTS" }
func (c *Contract) OrderedStream() string { return c.stream + "_ORDERED" }

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

// Wildcard subjects: all manifests, all items, one batch's items, one batch's results, all ordered events.
func (c *Contract) AllManifests() string             { return c.prefix + ".batches.*" }
func (c *Contract) AllItems() string                 { return c.prefix + ".items.>" }
func (c *Contract) BatchItems(batch string) string   { return c.prefix + ".items." + batch + ".*" }
func (c *Contract) BatchResults(batch string) string { return c.prefix + ".results." + batch + ".*" }
func (c *Contract) AllOrdered() string               { return c.prefix + ".ordered.*" }

// StreamConfigs returns the configuration of the four streams.
func (c *Contract) StreamConfigs() []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if c.cfg.Storage == StorageMemory {
		storage = jetstream.MemoryStorage
	}
	mk := func(name, subject, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     storage,
			Replicas:    c.cfg.Replicas,
			MaxAge:      c.cfg.MaxAge,
			Duplicates:  c.cfg.DuplicateWindow,
			AllowDirect: true,
		}
	}
	ordered := mk(c.OrderedStream(), c.prefix+".ordered.*", "flashpipe ordered events per batch")
	// The sequencer appends runs of events as atomic batches where the server supports
	// them (nats-server 2.12+); older servers ignore the flag and it appends one by one.
	ordered.AllowAtomicPublish = true
	return []jetstream.StreamConfig{
		mk(c.BatchesStream(), c.prefix+".batches.*", "flashpipe batch manifests"),
		mk(c.ItemsStream(), c.prefix+".items.*.*", "flashpipe work items, one per message"),
		mk(c.ResultsStream(), c.prefix+".results.*.*", "flashpipe results, one per item and generation"),
		ordered,
	}
}

// EnsureStreams creates the four streams or updates them to the contract's
// configuration. It is idempotent, so every service calls it at start-up; it changes
// nothing when the streams are already as configured, so a service's NATS user needs
// no right to manage streams once an administrator created them (natsx.EnsureStream).
func (c *Contract) EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range c.StreamConfigs() {
		if _, err := natsx.EnsureStream(ctx, js, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
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
