package app

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// ResourceConfig holds the settings of the buckets that are not the contract's: the
// services' own, given here as the services are configured.
type ResourceConfig struct {
	// LeaseTTL is the sequencers' --sequencer-lease-ttl (zero: its default).
	LeaseTTL time.Duration
	// Cache configures the answer cache's bucket (its TTL).
	Cache cache.Config
}

// Resources returns the configuration of every stream and key-value bucket of the
// pipeline: what `flashpipe streams apply` creates or updates, and what each service
// creates when it is missing.
func Resources(c *contract.Contract, cfg ResourceConfig) ([]jetstream.StreamConfig, []jetstream.KeyValueConfig) {
	buckets := []jetstream.KeyValueConfig{
		c.RegistryConfig(),
		cache.BucketConfig(c, cfg.Cache),
		processor.LedgerBucket(c),
		processor.ProviderBatchBucket(c),
		sequencer.LeaseBucket(c, cfg.LeaseTTL),
		ratelimit.BucketConfig(c, ""),
		beacon.BucketConfig(c, 0),
		scheduler.BucketConfig(c),
		spend.BucketConfig(c, ""),
	}
	return c.StreamConfigs(), buckets
}

// PlanResources shows what ApplyResources would change: the streams and buckets to
// create, and the settings of existing ones that differ from the configuration.
func PlanResources(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg ResourceConfig) ([]contract.Change, error) {
	streams, buckets := Resources(c, cfg)
	return contract.Plan(ctx, js, streams, buckets)
}
