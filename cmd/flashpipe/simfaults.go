package main

import (
	"time"

	"github.com/alecthomas/kong"

	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/secret"
)

// simFaultVars are the defaults SimFaultFlags take from package llmsim.
func simFaultVars() kong.Vars {
	return kong.Vars{"sim_timeout_delay": shortDuration(llmsim.DefaultTimeoutDelay)}
}

// SimFaultFlags reach every fault knob of the API simulator (llmsim.Config and
// llmsim.Faults), so an operator can rehearse an incident against `flashpipe
// simulate-api`: an outage (--sim-rate-5xx), a rate limit (--sim-rpm,
// --sim-rate-429), a key without credits (--sim-rate-402-credits), a wrong key
// (--sim-require-key), slow or broken answers. The rates are probabilities per chat
// completion request, drawn once per request (so they must add up to 1 at most) from a
// sequence seeded by --sim-seed: the same seed and the same requests give the same
// faults.
type SimFaultFlags struct {
	SimBurst            int            `help:"Simulator: token-bucket size of --sim-rpm (0: two seconds of traffic, at least 5)." default:"0" env:"FLASHPIPE_SIM_BURST"`
	SimSeed             int64          `help:"Simulator: seed of the fault and jitter draws (the same seed and requests give the same faults)." default:"0" env:"FLASHPIPE_SIM_SEED"`
	SimRequireKey       string         `help:"Simulator: the only API key accepted, others get 401 (empty: any key; never logged)." env:"FLASHPIPE_SIM_REQUIRE_KEY"`
	SimRate5xx          float64        `name:"sim-rate-5xx" help:"Simulator fault: probability per request of a 500, 502, 503, 524 or 529 (an outage: opens the circuit breaker)." default:"0" env:"FLASHPIPE_SIM_RATE_5XX"`
	SimRate429          float64        `name:"sim-rate-429" help:"Simulator fault: probability per request of an upstream 429 with Retry-After: 1, whatever --sim-rpm." default:"0" env:"FLASHPIPE_SIM_RATE_429"`
	SimRate402Transient float64        `name:"sim-rate-402-transient" help:"Simulator fault: probability per request of OpenRouter's in-flight budget 402 with Retry-After (transient)." default:"0" env:"FLASHPIPE_SIM_RATE_402_TRANSIENT"`
	SimRate402Credits   float64        `name:"sim-rate-402-credits" help:"Simulator fault: probability per request of an out-of-credits 402 (permanent: the processors pause)." default:"0" env:"FLASHPIPE_SIM_RATE_402_CREDITS"`
	SimRateTimeout      float64        `name:"sim-rate-timeout" help:"Simulator fault: probability per request of a stall of --sim-timeout-delay before a normal answer." default:"0" env:"FLASHPIPE_SIM_RATE_TIMEOUT"`
	SimTimeoutDelay     time.Duration  `name:"sim-timeout-delay" help:"Simulator fault: how long a --sim-rate-timeout stall lasts." default:"${sim_timeout_delay}" env:"FLASHPIPE_SIM_TIMEOUT_DELAY"`
	SimRateMalformed    float64        `name:"sim-rate-malformed" help:"Simulator fault: probability per request of a 200 with a truncated, unparsable body." default:"0" env:"FLASHPIPE_SIM_RATE_MALFORMED"`
	SimRateFenced       float64        `name:"sim-rate-fenced" help:"Simulator fault: probability per request of a valid answer wrapped in a json code fence with prose around it." default:"0" env:"FLASHPIPE_SIM_RATE_FENCED"`
	SimRateErrorBody    float64        `name:"sim-rate-error-body" help:"Simulator fault: probability per request of a 200 carrying an error object." default:"0" env:"FLASHPIPE_SIM_RATE_ERROR_BODY"`
	SimRateEmpty        float64        `name:"sim-rate-empty" help:"Simulator fault: probability per request of a 200 with empty content." default:"0" env:"FLASHPIPE_SIM_RATE_EMPTY"`
	SimRateInvalid      float64        `name:"sim-rate-invalid-answer" help:"Simulator fault: probability per request of an answer missing a required field." default:"0" env:"FLASHPIPE_SIM_RATE_INVALID_ANSWER"`
	SimRateEchoKey      float64        `name:"sim-rate-echo-key" help:"Simulator fault: probability per request of a 403 whose error echoes fragments of the API key (which must never reach logs, streams or rows)." default:"0" env:"FLASHPIPE_SIM_RATE_ECHO_KEY"`
	SimFailTerm         map[string]int `name:"sim-fail-term" help:"Simulator fault: always answer this HTTP error status for a term, e.g. --sim-fail-term 학교=400 (repeatable)." env:"FLASHPIPE_SIM_FAIL_TERM" mapsep:","`
}

// apply sets the fault knobs of cfg from the flags.
func (f SimFaultFlags) apply(cfg *llmsim.Config) {
	cfg.Burst, cfg.Seed, cfg.RequireKey = f.SimBurst, f.SimSeed, f.SimRequireKey
	cfg.Faults = llmsim.Faults{
		Rate5xx:           f.SimRate5xx,
		Rate429:           f.SimRate429,
		Rate402Transient:  f.SimRate402Transient,
		Rate402Credits:    f.SimRate402Credits,
		RateTimeout:       f.SimRateTimeout,
		RateMalformed:     f.SimRateMalformed,
		RateFenced:        f.SimRateFenced,
		RateErrorBody:     f.SimRateErrorBody,
		RateEmpty:         f.SimRateEmpty,
		RateInvalidAnswer: f.SimRateInvalid,
		RateEchoKey:       f.SimRateEchoKey,
		TimeoutDelay:      f.SimTimeoutDelay,
		FailTerms:         f.SimFailTerm,
	}
}

// AfterApply hands the simulator's required key to the redactor.
func (f *SimFaultFlags) AfterApply(red *secret.Redactor) error {
	red.Add(f.SimRequireKey)
	return nil
}
