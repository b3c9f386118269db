package app

import (
	"context"

	"github.com/flashpipe/flashpipe/internal/processor"
)

// ProviderBatch is one provider batch of batch mode, as recorded before it was
// submitted: its idempotency key, the provider's id and state, its request counts,
// the flashpipe batches it serves, its outcome, and when it was created.
type ProviderBatch = processor.ProviderBatch

// ProviderBatches returns the provider batches recorded (kept 7 days), newest first;
// batch, if not empty, keeps those serving that batch. Status and the HTTP API show
// them.
func (c *Client) ProviderBatches(ctx context.Context, batch string) ([]ProviderBatch, error) {
	return processor.ListProviderBatches(ctx, c.js, c.c, batch)
}
