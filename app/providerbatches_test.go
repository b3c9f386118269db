package app_test

import (
	"testing"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/processor"
)

func TestProviderBatchesLine(t *testing.T) {
	if got := app.ProviderBatchesLine(nil); got != "" {
		t.Fatalf("no provider batches: %q", got)
	}
	pbs := []app.ProviderBatch{
		{State: processor.RecordSubmitted, Total: 1000, Completed: 600, Failed: 40},
		{State: processor.RecordDone, Total: 500, Completed: 500},
		{State: processor.RecordGathering},
	}
	want := "provider batches: 3 (2 at the provider: 640/1000 answered; 1 done)"
	if got := app.ProviderBatchesLine(pbs); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
