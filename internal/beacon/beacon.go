// Package beacon lets each service replica say it is alive, and whether it is
// blocked and why, in a key-value bucket whose entries expire when they are not
// refreshed: `flashpipe status` (and anything else) lists the live replicas and shows a
// sink that cannot write, with the cause, without access to the replica's logs.
//
// One key per replica, "<service>.<replica>", rewritten every Config.Interval and
// deleted when the replica stops; a replica that died disappears within the bucket's
// TTL (three intervals). Writes are best effort: a beacon never blocks or fails the
// work of its service. A Beacon is safe for concurrent use.
package beacon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// Defaults for Config.
const (
	DefaultInterval = 10 * time.Second
	// BucketSuffix names the bucket after the contract's prefix: FLASHPIPE_SERVICES.
	BucketSuffix = "SERVICES"
	// ttlIntervals is the bucket's TTL in intervals: a replica missing two
	// refreshes in a row is gone.
	ttlIntervals = 3
)

// State is what one replica says of itself.
type State struct {
	Service string `json:"service"`
	Replica string `json:"replica"`
	// Blocked is true while the replica cannot do its work (the sink's database
	// refuses writes, say); Cause names the kind of trouble, Reason the last error.
	Blocked bool       `json:"blocked,omitempty"`
	Cause   string     `json:"cause,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Since   *time.Time `json:"since,omitempty"`
	// Started is when the replica started; Updated when it last wrote its state.
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
}

// Config configures a Beacon.
type Config struct {
	// Service is "processor", "sequencer", "sink", ...; Replica names the replica
	// (host and pid by default in cmd). Both required.
	Service, Replica string
	// Interval is how often the state is rewritten (DefaultInterval). The bucket
	// keeps an entry three intervals.
	Interval time.Duration
	Logger   *slog.Logger
}

var tokenPattern = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// BucketConfig is the configuration of the beacons' bucket.
func BucketConfig(c *contract.Contract, interval time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.Name(BucketSuffix),
		Description: "flashpipe: live service replicas and whether they are blocked",
		History:     1,
		TTL:         ttlIntervals * cmp.Or(interval, DefaultInterval),
		Storage:     c.StorageType(),
		Replicas:    c.Config().Replicas,
	}
}

// Beacon publishes one replica's state.
type Beacon struct {
	kv       jetstream.KeyValue
	key      string
	interval time.Duration
	log      *slog.Logger

	mu    sync.Mutex
	state State
}

// New opens the bucket (creating it if it does not exist) and returns the replica's
// beacon; Run publishes it.
func New(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Beacon, error) {
	if cfg.Service == "" || cfg.Replica == "" {
		return nil, errors.New("beacon: Config.Service and Config.Replica are required")
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	kv, err := contract.OpenKeyValue(ctx, js, BucketConfig(c, cfg.Interval), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("beacon: %w", err)
	}
	return &Beacon{
		kv: kv, key: cfg.Service + "." + tokenPattern.ReplaceAllString(cfg.Replica, "_"), interval: cfg.Interval,
		log:   cfg.Logger.With("component", "beacon"),
		state: State{Service: cfg.Service, Replica: cfg.Replica, Started: time.Now().UTC()},
	}, nil
}

// Run publishes the state now and every interval until ctx ends, then deletes it.
func (b *Beacon) Run(ctx context.Context) {
	if b == nil {
		return
	}
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		b.publish(ctx)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = b.kv.Delete(dctx, b.key)
			cancel()
			return
		case <-t.C:
		}
	}
}

// Block says the replica cannot do its work: cause names the kind of trouble, reason
// the error. The state is published at once. Safe on a nil Beacon.
func (b *Beacon) Block(ctx context.Context, cause, reason string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if !b.state.Blocked {
		now := time.Now().UTC()
		b.state.Since = &now
	}
	b.state.Blocked, b.state.Cause, b.state.Reason = true, cause, reason
	b.mu.Unlock()
	b.publish(ctx)
}

// Unblock says the replica works again. Safe on a nil Beacon.
func (b *Beacon) Unblock(ctx context.Context) {
	if b == nil {
		return
	}
	b.mu.Lock()
	was := b.state.Blocked
	b.state.Blocked, b.state.Cause, b.state.Reason, b.state.Since = false, "", "", nil
	b.mu.Unlock()
	if was {
		b.publish(ctx)
	}
}

func (b *Beacon) publish(ctx context.Context) {
	b.mu.Lock()
	b.state.Updated = time.Now().UTC()
	data, err := json.Marshal(b.state)
	b.mu.Unlock()
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if _, err := b.kv.Put(pctx, b.key, data); err != nil {
		b.log.Debug("beacon not published", "err", err)
	}
}

// List returns the live replicas' states, by service then replica. A missing bucket
// (no service ever started) lists none.
func List(ctx context.Context, js jetstream.JetStream, c *contract.Contract) ([]State, error) {
	kv, err := js.KeyValue(ctx, c.Name(BucketSuffix))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("beacons: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("beacons: %w", err)
	}
	var out []State
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired or deleted since it was listed
		}
		var st State
		if json.Unmarshal(e.Value(), &st) == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return cmp.Or(cmp.Compare(out[i].Service, out[j].Service), cmp.Compare(out[i].Replica, out[j].Replica)) < 0
	})
	return out, nil
}
