package ingest

import (
	"context"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/registry"
)

// Record is what the batch id registry keeps of a batch (registry.Record).
type Record = registry.Record

// noteGeneration records in the batch id registry that generation m started. Best
// effort: a failure is logged.
func (p *Publisher) noteGeneration(ctx context.Context, m flashpipe.Manifest) {
	reg, err := registry.Open(ctx, p.js, p.c)
	if err == nil {
		err = reg.NoteGeneration(ctx, m)
	}
	if err != nil {
		p.log.Warn("generation not recorded in the batch id registry", "batch", m.BatchID, "err", err)
	}
}
