package main

import (
	"strconv"
	"time"

	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
)

// BatchFlags configure the processors' batch mode (shared by processor, run and dev;
// the processor's own default mode is ProcessorCmd's --api-mode).
type BatchFlags struct {
	BatchAPI  string        `name:"batch-api" help:"The provider's batch API shape: openrouter (inline requests), openai (JSONL file upload), or none (batch-mode batches then run in sync mode)." enum:"openrouter,openai,none" default:"openrouter" env:"FLASHPIPE_BATCH_API"`
	BatchSize int           `name:"batch-size" help:"Most requests in one provider batch (at most 5000); run batch mode with --concurrent-max at least this, since waiting items stay held." default:"${batch_size}" env:"FLASHPIPE_BATCH_SIZE"`
	BatchWait time.Duration `name:"batch-wait" help:"Longest a request waits to be gathered into a provider batch (sent sooner when the batch is full or every worker waits)." default:"${batch_wait}" env:"FLASHPIPE_BATCH_WAIT"`
	BatchPoll time.Duration `name:"batch-poll" help:"How often each processor asks the provider about the unfinished provider batches." default:"${batch_poll}" env:"FLASHPIPE_BATCH_POLL"`
	// The recovery timings (tests shorten them).
	BatchSubmitTimeout time.Duration `name:"batch-submit-timeout" help:"After a crash, how long a provider batch recorded but not confirmed waits before another processor looks for it at the provider (and submits it only if it is not there); above --api-timeout." default:"${batch_submit_timeout}" env:"FLASHPIPE_BATCH_SUBMIT_TIMEOUT"`
	BatchClaimGrace    time.Duration `name:"batch-claim-grace" help:"How long a request may stay claimed by a provider batch still being gathered before a waiting item gives that batch up (its gatherer died) and asks again." default:"${batch_claim_grace}" env:"FLASHPIPE_BATCH_CLAIM_GRACE"`
}

func (f BatchFlags) config(mode string) processor.BatchConfig {
	return processor.BatchConfig{Mode: mode, Size: f.BatchSize, Wait: f.BatchWait, PollInterval: f.BatchPoll,
		SubmitTimeout: f.BatchSubmitTimeout, ClaimGrace: f.BatchClaimGrace}
}

// batchVars are the kong variables of the batch flags' defaults.
func batchVars() map[string]string {
	return map[string]string{
		"batch_size":           strconv.Itoa(processor.DefaultBatchSize),
		"batch_wait":           shortDuration(processor.DefaultBatchWait),
		"batch_poll":           shortDuration(processor.DefaultBatchPollInterval),
		"batch_submit_timeout": shortDuration(processor.DefaultBatchSubmitTimeout),
		"batch_claim_grace":    shortDuration(processor.DefaultBatchClaimGrace),
		"sim_batch_price_rate": strconv.FormatFloat(llmsim.DefaultBatchPriceRate, 'g', -1, 64),
	}
}

// SimBatchFlags configure the simulator's batch endpoints.
type SimBatchFlags struct {
	SimBatchDelay      time.Duration `name:"sim-batch-delay" help:"Simulator: how long a provider batch takes to complete." default:"0s" env:"FLASHPIPE_SIM_BATCH_DELAY"`
	SimBatchFailRate   float64       `name:"sim-batch-fail-rate" help:"Simulator: fraction of the requests of a batch that fail (retried in a new batch)." default:"0" env:"FLASHPIPE_SIM_BATCH_FAIL_RATE"`
	SimBatchExpireRate float64       `name:"sim-batch-expire-rate" help:"Simulator: fraction of batches that expire with half their requests unanswered (those go to the sync API)." default:"0" env:"FLASHPIPE_SIM_BATCH_EXPIRE_RATE"`
	SimBatchPriceRate  float64       `name:"sim-batch-price-rate" help:"Simulator: price of a batch request relative to a sync call." default:"${sim_batch_price_rate}" env:"FLASHPIPE_SIM_BATCH_PRICE_RATE"`
}

func (f SimBatchFlags) config() llmsim.BatchConfig {
	return llmsim.BatchConfig{Delay: f.SimBatchDelay, FailRate: f.SimBatchFailRate, ExpireRate: f.SimBatchExpireRate, PriceRate: f.SimBatchPriceRate}
}
