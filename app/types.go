package app

import (
	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// The service packages live under internal/: they are the implementation behind
// this package. The types a caller outside the module needs to configure a stack or
// submit a batch are named here, so that code never has to import them.
type (
	// Batch is one batch to submit: its id, items and settings.
	Batch = ingest.Batch
	// Submission is what a submit, retry or reprocess published.
	Submission = ingest.Submission
	// Items are a batch's items in seq order.
	Items = ingest.Items
	// ParseOptions tell ParseFile how to read a CSV or JSON Lines file.
	ParseOptions = ingest.ParseOptions
	// Parsed is a file's items, read and checked.
	Parsed = ingest.Parsed
	// ParseError lists every row of a file that was refused, with its reason.
	ParseError = ingest.ParseError
	// RowError is one refused row.
	RowError = ingest.RowError
	// Format is an input file's format.
	Format = ingest.Format

	// ProcessorSettings configure a processor (the LLM stages, concurrency, retries).
	ProcessorSettings = processor.Config
	// SequencerSettings configure a sequencer.
	SequencerSettings = sequencer.Config
	// SchedulerSettings configure the fair-share scheduler beside a sequencer.
	SchedulerSettings = scheduler.Config
	// SinkSettings configure a sink (the Postgres writer).
	SinkSettings = sink.Config
	// PriceSettings say where the prices of the API calls come from (the model list,
	// overrides, the batch rate).
	PriceSettings = spend.PriceConfig
	// SpendLedgerSettings configure the spend ledger the processors share.
	SpendLedgerSettings = spend.Config
)

// Input formats.
const (
	FormatAuto  = ingest.FormatAuto
	FormatCSV   = ingest.FormatCSV
	FormatJSONL = ingest.FormatJSONL
)

// Errors a submit, retry or reprocess returns.
var (
	ErrNoItems        = ingest.ErrNoItems
	ErrNothingToRetry = ingest.ErrNothingToRetry
	ErrBatchRunning   = ingest.ErrBatchRunning
	ErrItemsExpired   = ingest.ErrItemsExpired
)

// SliceItems are items held in memory.
func SliceItems(items []flashpipe.Item) Items { return ingest.SliceItems(items) }

// ParseFile reads a CSV or JSON Lines file of items, refusing it whole with every
// bad row named.
func ParseFile(path string, opts ParseOptions) (*Parsed, error) {
	return ingest.ParseFile(path, opts)
}
