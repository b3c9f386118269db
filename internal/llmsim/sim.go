// Package llmsim is a simulator of the LLM API: a real HTTP server speaking
// OpenRouter's chat completions wire format, for tests, benchmarks and flashpipe's
// single-process mode. It answers flashpipe's two stages with deterministic, plausible
// content built from the input block of the request (see stages.DecodeInput), reports
// usage and cost, and can add latency, enforce a requests-per-minute limit and inject
// every failure the real API shows.
//
// Endpoints: POST /chat/completions (also under /v1 and /api/v1), GET /key (the
// OpenRouter key-info shape), GET /models (the model list with the prices charged),
// and the batch APIs of both shapes (batch.go: /batches, /files), billed at the batch
// rate, with a completion delay, partial failures, expiry and cancellation, and
// counters of the batches submitted (BatchStats). A Simulator is safe for concurrent
// use; its faults can be changed while it serves (SetFaults).
package llmsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// Defaults for Config.
const (
	// DefaultPricePromptPerM and DefaultPriceCompletionPerM are USD per million
	// tokens, like Claude Sonnet.
	DefaultPricePromptPerM     = 3.0
	DefaultPriceCompletionPerM = 15.0
	// DefaultTimeoutDelay is how long a timeout fault stalls when Faults.TimeoutDelay
	// is zero.
	DefaultTimeoutDelay = 10 * time.Second
	// MaxRequestBytes is the largest request body accepted (larger: 413).
	MaxRequestBytes = 8 << 20
	// ProviderName is the provider every answer names.
	ProviderName = "Simulator"
)

// DefaultBurst returns the token-bucket size used for rpm when Config.Burst is zero:
// two seconds of traffic, at least 5. Over any window of t seconds the simulator
// accepts at most Burst + rpm*t/60 requests, so over a minute it is exact to within
// about 3%; a client limiter of the same rate with a burst of up to one second of
// traffic never sees a 429, even with tens of milliseconds of network jitter.
func DefaultBurst(rpm int) int {
	return max(5, int(math.Ceil(float64(rpm)/30)))
}

// Config configures a Simulator. The zero value answers at once, without limits or
// faults.
type Config struct {
	// Latency is added to every answer (except 401 and the RPM limit's 429), plus a
	// uniform random 0..LatencyJitter.
	Latency, LatencyJitter time.Duration
	// RPM limits chat completions per minute (0: unlimited). Above it the simulator
	// answers 429 like OpenRouter: Retry-After (whole seconds), X-RateLimit-Limit,
	// X-RateLimit-Remaining, X-RateLimit-Reset (Unix epoch milliseconds), the same
	// headers in error.metadata.headers. The limiter is a token bucket refilled at
	// RPM/60 per second holding Burst tokens.
	RPM int
	// Burst is the token bucket's size (0: DefaultBurst(RPM)).
	Burst int
	// Faults are injected at random (seeded by Seed); see SetFaults.
	Faults Faults
	// Seed seeds the fault and jitter draws.
	Seed int64
	// PricePromptPerM and PriceCompletionPerM price the tokens in USD per million
	// (zero: the defaults, like Claude Sonnet).
	PricePromptPerM, PriceCompletionPerM float64
	// Batch configures the batch endpoints (see BatchConfig; SetBatch changes it).
	Batch BatchConfig
	// Models are the model ids GET /models lists, each at the prices above (empty:
	// the default model of the stages). Every model is answered and charged alike.
	Models []string
	// RequireKey, if set, is the only API key accepted; others get 401.
	RequireKey string
	// Logger gets the simulator's start and stop. Nil discards.
	Logger *slog.Logger
}

// Faults are the failures the simulator injects. Each Rate* is a probability per
// chat completion request; they are exclusive (one draw per request picks at most one)
// and their sum must be at most 1.
type Faults struct {
	// Rate5xx answers 500, 502, 503 (with Retry-After: 1), 524 or 529.
	Rate5xx float64
	// Rate429 answers an upstream 429 (Retry-After: 1), independent of RPM.
	Rate429 float64
	// Rate402Transient answers OpenRouter's in-flight budget 402 (Retry-After: 1).
	Rate402Transient float64
	// Rate402Credits answers an out-of-credits 402 (permanent).
	Rate402Credits float64
	// RateTimeout stalls TimeoutDelay before answering normally.
	RateTimeout float64
	// RateMalformed answers 200 with a truncated, unparsable body.
	RateMalformed float64
	// RateFenced answers a valid answer wrapped in a ```json fence with prose around.
	RateFenced float64
	// RateErrorBody answers 200 with an error object (top-level or in the choice).
	RateErrorBody float64
	// RateEmpty answers 200 with empty content.
	RateEmpty float64
	// RateInvalidAnswer answers JSON that misses a required field.
	RateInvalidAnswer float64
	// RateEchoKey answers 403 with an error that echoes fragments of the presented
	// API key (its first 12 and last 10 characters, and 9 from the middle in the
	// metadata), as providers do; the key must not end up in logs, streams or rows.
	RateEchoKey float64
	// TimeoutDelay is the stall of a timeout fault (DefaultTimeoutDelay).
	TimeoutDelay time.Duration
	// FailTerms maps a term to the HTTP status always answered for it (e.g. 400), for
	// deterministic failures.
	FailTerms map[string]int
}

// Fault kinds, the keys of Stats.Faults.
const (
	Fault5xx          = "5xx"
	Fault429          = "429"
	Fault402Transient = "402_transient"
	Fault402Credits   = "402_credits"
	FaultTimeout      = "timeout"
	FaultMalformed    = "malformed"
	FaultFenced       = "fenced"
	FaultErrorBody    = "error_body"
	FaultEmpty        = "empty"
	FaultInvalid      = "invalid_answer"
	FaultEchoKey      = "echo_key"
	FaultFailTerm     = "fail_term"
)

const (
	kNone = iota
	k5xx
	k429
	k402T
	k402C
	kTimeout
	kMalformed
	kFenced
	kErrorBody
	kEmpty
	kInvalid
	kEchoKey
	kFailTerm
	numKinds
)

var kindNames = [numKinds]string{"", Fault5xx, Fault429, Fault402Transient, Fault402Credits, FaultTimeout,
	FaultMalformed, FaultFenced, FaultErrorBody, FaultEmpty, FaultInvalid, FaultEchoKey, FaultFailTerm}

func (f *Faults) validate() error {
	rates := []float64{f.Rate5xx, f.Rate429, f.Rate402Transient, f.Rate402Credits, f.RateTimeout,
		f.RateMalformed, f.RateFenced, f.RateErrorBody, f.RateEmpty, f.RateInvalidAnswer, f.RateEchoKey}
	sum := 0.0
	for i, r := range rates {
		if r < 0 || r > 1 || math.IsNaN(r) {
			return fmt.Errorf("llmsim: Faults: rate of %s is %v, not in [0, 1]", kindNames[i+1], r)
		}
		sum += r
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("llmsim: Faults: rates add up to %v, more than 1", sum)
	}
	if f.TimeoutDelay < 0 {
		return fmt.Errorf("llmsim: Faults.TimeoutDelay %v is negative", f.TimeoutDelay)
	}
	for term, status := range f.FailTerms {
		if status < 400 || status > 599 {
			return fmt.Errorf("llmsim: Faults.FailTerms[%q] = %d is not an HTTP error status", term, status)
		}
	}
	return nil
}

// pick draws the fault for a request from u in [0, 1).
func (f *Faults) pick(u float64) int {
	for i, r := range [...]float64{f.Rate5xx, f.Rate429, f.Rate402Transient, f.Rate402Credits, f.RateTimeout,
		f.RateMalformed, f.RateFenced, f.RateErrorBody, f.RateEmpty, f.RateInvalidAnswer, f.RateEchoKey} {
		if u < r {
			return i + 1
		}
		u -= r
	}
	return kNone
}

// Simulator is the simulated API. Use it as an http.Handler, or Start it on an
// address.
type Simulator struct {
	cfg      Config
	log      *slog.Logger
	faults   atomic.Pointer[Faults]
	limiter  *rate.Limiter
	seq      atomic.Uint64
	bufs     sync.Pool
	decoders sync.Pool
	closing  chan struct{}
	once     sync.Once
	// termCalls counts requests by the term of their input block (CallsFor).
	termCalls sync.Map

	mu  sync.Mutex
	srv *http.Server
	url string

	st counters
	bt batchStore
}

// New returns a Simulator for cfg.
func New(cfg Config) (*Simulator, error) {
	switch {
	case cfg.Latency < 0 || cfg.LatencyJitter < 0:
		return nil, errors.New("llmsim: Config.Latency and Config.LatencyJitter must not be negative")
	case cfg.RPM < 0:
		return nil, fmt.Errorf("llmsim: Config.RPM %d is negative", cfg.RPM)
	case cfg.Burst < 0:
		return nil, fmt.Errorf("llmsim: Config.Burst %d is negative", cfg.Burst)
	case cfg.PricePromptPerM < 0 || cfg.PriceCompletionPerM < 0:
		return nil, errors.New("llmsim: Config.PricePromptPerM and Config.PriceCompletionPerM must not be negative")
	}
	if err := cfg.Faults.validate(); err != nil {
		return nil, err
	}
	if err := cfg.Batch.validate(); err != nil {
		return nil, err
	}
	if cfg.Batch.PriceRate == 0 {
		cfg.Batch.PriceRate = DefaultBatchPriceRate
	}
	if cfg.PricePromptPerM == 0 {
		cfg.PricePromptPerM = DefaultPricePromptPerM
	}
	if cfg.PriceCompletionPerM == 0 {
		cfg.PriceCompletionPerM = DefaultPriceCompletionPerM
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Simulator{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "llmsim"),
		closing: make(chan struct{}),
	}
	if cfg.RPM > 0 {
		burst := cfg.Burst
		if burst == 0 {
			burst = DefaultBurst(cfg.RPM)
		}
		s.limiter = rate.NewLimiter(rate.Limit(float64(cfg.RPM)/60), burst)
	}
	s.bufs.New = func() any { b := make([]byte, 0, 16<<10); return &b }
	s.decoders.New = func() any { return new(wire.Decoder) }
	s.setFaults(cfg.Faults)
	s.bt = batchStore{cfg: cfg.Batch, batches: map[string]*simBatch{}, files: map[string][]byte{}, keys: map[string]int{}}
	return s, nil
}

// SetFaults replaces the injected faults, effective for the next request. It returns
// an error (and changes nothing) if f is invalid.
func (s *Simulator) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.setFaults(f)
	return nil
}

func (s *Simulator) setFaults(f Faults) {
	if f.FailTerms != nil { // copy: the caller may keep writing its map
		m := make(map[string]int, len(f.FailTerms))
		for k, v := range f.FailTerms {
			m[k] = v
		}
		f.FailTerms = m
	}
	if f.TimeoutDelay == 0 {
		f.TimeoutDelay = DefaultTimeoutDelay
	}
	s.faults.Store(&f)
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background. It returns
// the base URL to give the client, e.g. "http://127.0.0.1:PORT/api/v1".
func (s *Simulator) Start(addr string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return "", errors.New("llmsim: already started")
	}
	select {
	case <-s.closing:
		return "", errors.New("llmsim: closed")
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("llmsim: listen: %w", err)
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.url = "http://" + ln.Addr().String() + "/api/v1"
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	s.log.Info("simulated LLM API listening", "url", s.url, "rpm", s.cfg.RPM)
	return s.url, nil
}

// URL returns the base URL Start returned, or "" before Start.
func (s *Simulator) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops the server: stalled answers (latency, timeout faults) are aborted at
// once (their clients see the connection drop), other in-flight requests get a few
// seconds to finish. It is safe to call more than once; a closed Simulator cannot be
// started again.
func (s *Simulator) Close() error {
	s.once.Do(func() { close(s.closing) })
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return errors.Join(err, srv.Close())
	}
	return nil
}

// sleep waits d, or until the request ends (false). If the simulator closes first it
// aborts the response (the client sees the connection drop, as from a server going
// away) by panicking with http.ErrAbortHandler, which net/http recovers silently.
func (s *Simulator) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		panic(http.ErrAbortHandler)
	}
}

// draw returns two deterministic uniform numbers in [0, 1) for request n.
func (s *Simulator) draw(n uint64) (float64, float64) {
	x := splitmix64(uint64(s.cfg.Seed) ^ n*0x9E3779B97F4A7C15)
	y := splitmix64(x)
	return float64(x>>11) / (1 << 53), float64(y>>11) / (1 << 53)
}

func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

// Stats is a snapshot of what the simulator did.
type Stats struct {
	// Requests counts chat completion requests received (any outcome).
	Requests int64
	// Stage1Calls and Stage2Calls count requests by the stage of their input block;
	// OtherCalls those without one.
	Stage1Calls, Stage2Calls, OtherCalls int64
	// Stage1OK and Stage2OK count clean, valid answers (200, no fault).
	Stage1OK, Stage2OK int64
	// Responses counts answers to chat completion requests by HTTP status.
	Responses map[int]int64
	// RateLimited counts the 429s of the RPM limit (not injected 429 faults).
	RateLimited int64
	// Faults counts injected faults by kind (Fault* constants).
	Faults map[string]int64
	// PromptTokens, CompletionTokens and Cost (USD) add up the usage reported.
	PromptTokens, CompletionTokens int64
	Cost                           float64
}

// FaultsTotal is the number of injected faults of any kind.
func (s Stats) FaultsTotal() int64 {
	var n int64
	for _, v := range s.Faults {
		n += v
	}
	return n
}

type counters struct {
	requests, calls1, calls2, other, ok1, ok2, limited atomic.Int64
	status                                             [600]atomic.Int64
	faults                                             [numKinds]atomic.Int64
	promptTokens, completionTokens                     atomic.Int64
	costBits                                           atomic.Uint64
}

func (c *counters) addCost(v float64) {
	for {
		old := c.costBits.Load()
		if c.costBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (c *counters) countStatus(code int) {
	if code >= 0 && code < len(c.status) {
		c.status[code].Add(1)
	}
}

// CallsFor returns how many requests asked about term, any stage and outcome: a
// test's check that a refused item cost nothing.
func (s *Simulator) CallsFor(term string) int64 {
	if n, ok := s.termCalls.Load(term); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// Stats returns the counters so far. It is cheap and safe to call at any time; the
// fields are read one by one, so a snapshot taken under load may be off by the
// requests in flight.
func (s *Simulator) Stats() Stats {
	c := &s.st
	st := Stats{
		Requests:         c.requests.Load(),
		Stage1Calls:      c.calls1.Load(),
		Stage2Calls:      c.calls2.Load(),
		OtherCalls:       c.other.Load(),
		Stage1OK:         c.ok1.Load(),
		Stage2OK:         c.ok2.Load(),
		RateLimited:      c.limited.Load(),
		Responses:        map[int]int64{},
		Faults:           map[string]int64{},
		PromptTokens:     c.promptTokens.Load(),
		CompletionTokens: c.completionTokens.Load(),
		Cost:             math.Float64frombits(c.costBits.Load()),
	}
	for code := range c.status {
		if n := c.status[code].Load(); n > 0 {
			st.Responses[code] = n
		}
	}
	for k := 1; k < numKinds; k++ {
		if n := c.faults[k].Load(); n > 0 {
			st.Faults[kindNames[k]] = n
		}
	}
	return st
}
