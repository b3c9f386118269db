package app

import (
	"context"
	"fmt"
	"strings"

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

// ProviderBatchesLine sums up provider batches for a progress line: how many, how
// many still at the provider with their requests answered so far, how many done
// ("provider batches: 3 (1 at the provider: 640/1000 answered; 2 done)"); empty for
// none.
func ProviderBatchesLine(pbs []ProviderBatch) string {
	if len(pbs) == 0 {
		return ""
	}
	var open, done, answered, total int
	for _, pb := range pbs {
		if pb.Final() {
			done++
			continue
		}
		open++
		answered += pb.Completed + pb.Failed
		total += pb.Total
	}
	var parts []string
	if open > 0 {
		parts = append(parts, fmt.Sprintf("%d at the provider: %d/%d answered", open, answered, total))
	}
	if done > 0 {
		parts = append(parts, fmt.Sprintf("%d done", done))
	}
	return fmt.Sprintf("provider batches: %d (%s)", len(pbs), strings.Join(parts, "; "))
}
