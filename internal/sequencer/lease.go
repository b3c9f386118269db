package sequencer

import (
	"cmp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// LeaseBucketSuffix names the lease KV bucket after the contract's prefix:
// FLASHPIPE_SEQUENCER_LEASES.
const LeaseBucketSuffix = "SEQUENCER_LEASES"

// LeaseBucket is the configuration of the lease KV bucket for a lease TTL (zero:
// DefaultLeaseTTL): entries expire ttl after their last write.
func LeaseBucket(c *contract.Contract, ttl time.Duration) jetstream.KeyValueConfig {
	cfg := c.Config()
	return jetstream.KeyValueConfig{
		Bucket:      c.Name(LeaseBucketSuffix),
		Description: "flashpipe: which sequencer replica orders which batch",
		History:     1,
		TTL:         cmp.Or(ttl, DefaultLeaseTTL),
		Storage:     c.StorageType(),
		Replicas:    cfg.Replicas,
	}
}
