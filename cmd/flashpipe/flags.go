package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/ratelimit"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/spend"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// StreamFlags shape the streams: a service creates those that are missing with these
// settings, and reports (never changes) existing ones that differ; `flashpipe streams
// apply` changes them. Clients use only the prefix.
type StreamFlags struct {
	Prefix          string        `help:"Subject prefix; stream names derive from it." default:"flashpipe" env:"FLASHPIPE_PREFIX"`
	StreamReplicas  int           `help:"Replicas of each stream (3 on a cluster)." default:"${stream_replicas}" env:"FLASHPIPE_STREAM_REPLICAS"`
	StreamStorage   string        `help:"Stream storage: file or memory." default:"file" enum:"file,memory" env:"FLASHPIPE_STREAM_STORAGE"`
	StreamMaxAge    time.Duration `help:"How long the ordered log and the manifests stay: how long a batch can be replayed and retried (negative: forever)." default:"${stream_max_age}" env:"FLASHPIPE_STREAM_MAX_AGE"`
	DuplicateWindow time.Duration `help:"How long JetStream remembers message ids for de-duplication." default:"${duplicate_window}" env:"FLASHPIPE_DUPLICATE_WINDOW"`
	// The in-flight streams are kept shorter than the log (docs/capacity.md).
	ItemsMaxAge       time.Duration `help:"How long work items stay: the longest an item may wait to be processed, and how long after its submission a batch can be reprocessed (negative: forever)." default:"${items_max_age}" env:"FLASHPIPE_ITEMS_MAX_AGE"`
	ResultsMaxAge     time.Duration `help:"How long results stay: the longest a result may wait to be ordered by the sequencer (negative: forever)." default:"${results_max_age}" env:"FLASHPIPE_RESULTS_MAX_AGE"`
	StreamCompression string        `help:"Stream compression: s2 or none (file storage, NATS 2.10+)." default:"s2" enum:"s2,none" env:"FLASHPIPE_STREAM_COMPRESSION"`
}

func (f StreamFlags) contractConfig() contract.Config {
	return contract.Config{
		Prefix: f.Prefix, Replicas: f.StreamReplicas, Storage: f.StreamStorage,
		MaxAge: f.StreamMaxAge, DuplicateWindow: f.DuplicateWindow,
		ItemsMaxAge: f.ItemsMaxAge, ResultsMaxAge: f.ResultsMaxAge, Compression: f.StreamCompression,
	}
}

func (f StreamFlags) contract() (*contract.Contract, error) { return contract.New(f.contractConfig()) }

// NATSFlags connect a service to a NATS server.
type NATSFlags struct {
	NATSURL string `name:"nats-url" help:"NATS server URL(s), comma-separated (default: the context's, or nats://127.0.0.1:4222)." env:"FLASHPIPE_NATS_URL,NATS_URL"`
	NATSAuthFlags
	StreamFlags
}

// natsConfig is the connection to NATS as app takes it; wait makes it wait for NATS
// (a service), else it gives up after app.DefaultConnectTimeout (a user command).
func (f NATSFlags) natsConfig(name string, wait bool) app.NATSConfig {
	return app.NATSConfig{Conn: f.options(f.NATSURL), Name: name, Wait: wait}
}

// connect connects a user command to NATS (giving up after a while) and returns the
// connection, JetStream and the contract.
func (f NATSFlags) connect(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, *contract.Contract, error) {
	return f.dial(ctx, f.natsConfig(name, false), log)
}

func (f NATSFlags) dial(ctx context.Context, cfg app.NATSConfig, log *slog.Logger) (*nats.Conn, jetstream.JetStream, *contract.Contract, error) {
	c, err := f.contract()
	if err != nil {
		return nil, nil, nil, err
	}
	nc, js, err := app.ConnectNATS(ctx, cfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return nc, js, c, nil
}

// ServiceFlags are the start-up behaviour of a service.
type ServiceFlags struct {
	FailFast bool `help:"Exit at once when NATS or the database cannot be reached at start-up, instead of waiting for them (for scripts)." env:"FLASHPIPE_FAIL_FAST"`
}

// connectService connects a service to NATS: it waits, with backoff and a log line per
// attempt, until NATS answers, unless --fail-fast.
func (f NATSFlags) connectService(ctx context.Context, name string, sf ServiceFlags, log *slog.Logger) (*nats.Conn, jetstream.JetStream, *contract.Contract, error) {
	return f.dial(ctx, f.natsConfig(name, !sf.FailFast), log)
}

// APIFlags configure the LLM API client and the two stages.
type APIFlags struct {
	APIBaseURL string        `name:"api-base-url" help:"OpenAI-compatible API base URL (OpenRouter, vLLM, Ollama, a gateway)." default:"${api_base_url}" env:"FLASHPIPE_API_BASE_URL"`
	APIKey     string        `name:"api-key" help:"API key (read from the environment; never logged)." env:"OPENROUTER_API_KEY,FLASHPIPE_API_KEY"`
	APITimeout time.Duration `help:"Timeout of one API attempt." default:"${api_timeout}" env:"FLASHPIPE_API_TIMEOUT"`
	AppURL     string        `help:"Attribution: HTTP-Referer sent to OpenRouter." env:"FLASHPIPE_APP_URL"`
	AppTitle   string        `help:"Attribution: X-OpenRouter-Title sent to OpenRouter." default:"flashpipe" env:"FLASHPIPE_APP_TITLE"`
	ModelFlags

	redactor *secret.Redactor // set by AfterApply
}

// ModelFlags choose the models and prompts of the two stages: everything that goes
// into an answer's cache key.
type ModelFlags struct {
	Stage1Model       string  `name:"stage1-model" help:"Model of stage 1 (nuance analysis)." default:"${model}" env:"FLASHPIPE_STAGE1_MODEL"`
	Stage2Model       string  `name:"stage2-model" help:"Model of stage 2 (flashcards)." default:"${model}" env:"FLASHPIPE_STAGE2_MODEL"`
	Temperature       float64 `help:"Sampling temperature." default:"${temperature}" env:"FLASHPIPE_TEMPERATURE"`
	Stage1MaxTokens   int     `name:"stage1-max-tokens" help:"max_tokens of stage 1 (bounds cost and OpenRouter's in-flight budget)." default:"${max_tokens1}" env:"FLASHPIPE_STAGE1_MAX_TOKENS"`
	Stage2MaxTokens   int     `name:"stage2-max-tokens" help:"max_tokens of stage 2." default:"${max_tokens2}" env:"FLASHPIPE_STAGE2_MAX_TOKENS"`
	StructuredOutputs bool    `help:"Send response_format json_schema (turn off for models without structured outputs)." default:"true" negatable:"" env:"FLASHPIPE_STRUCTURED_OUTPUTS"`
	Provider          string  `help:"OpenRouter provider routing object, as JSON." env:"FLASHPIPE_PROVIDER"`
	PromptsDir        string  `help:"Directory with prompt templates overriding the built-in ones." type:"existingdir" env:"FLASHPIPE_PROMPTS_DIR"`
}

func (f ModelFlags) stagesConfig() (stages.Config, error) {
	cfg := stages.Config{
		Model1: f.Stage1Model, Model2: f.Stage2Model, Temperature: f.Temperature,
		MaxTokens1: f.Stage1MaxTokens, MaxTokens2: f.Stage2MaxTokens,
		StructuredOutputs: f.StructuredOutputs,
	}
	if f.Provider != "" {
		if !json.Valid([]byte(f.Provider)) {
			return cfg, fmt.Errorf("--provider is not valid JSON")
		}
		cfg.Provider = json.RawMessage(f.Provider)
	}
	prompts := stages.DefaultPrompts()
	if f.PromptsDir != "" {
		var err error
		if prompts, err = stages.LoadPrompts(f.PromptsDir); err != nil {
			return cfg, err
		}
	}
	cfg.Prompts = prompts
	return cfg, nil
}

func (f APIFlags) llmConfig() llm.Config {
	return llm.Config{BaseURL: f.APIBaseURL, APIKey: f.APIKey, Timeout: f.APITimeout, Referer: f.AppURL, Title: f.AppTitle}
}

// processorConfig maps the API, processor and rate limit flags to app's processor
// configuration. A rate limit RPM of -1 stays -1 ("the default": see app.StackConfig).
func (f APIFlags) processorConfig(p ProcessorFlags, r RateLimitFlags) (app.ProcessorConfig, error) {
	st, err := f.stagesConfig()
	if err != nil {
		return app.ProcessorConfig{}, err
	}
	pc := p.config()
	pc.Redactor = f.redactor
	return app.ProcessorConfig{API: f.llmConfig(), Stages: st, Processor: pc, RateLimit: r.config(),
		Cache: cache.Config{ClaimTTL: p.CacheClaimTTL}, Spend: p.SpendFlags.config(), BatchAPI: p.BatchAPI}, nil
}

// ProcessorFlags configure processor replicas.
type ProcessorFlags struct {
	ConcurrentMax    int           `help:"Items in flight across all processor replicas (1: strictly sequential)." default:"${concurrent_max}" env:"CONCURRENT_MAX"`
	Workers          int           `help:"Items in flight in this replica (default: --concurrent-max)." env:"FLASHPIPE_WORKERS"`
	RetryMaxAttempts int           `help:"API attempts per stage for transient errors." default:"${retry_max_attempts}" env:"RETRY_MAX_ATTEMPTS"`
	AckWait          time.Duration `help:"Redelivery timeout of an item whose processor stopped answering." default:"${ack_wait}" env:"FLASHPIPE_ACK_WAIT"`
	MaxDeliveries    int           `help:"Deliveries of one item before it fails for good (crashes, and API failures that outlast --retry-max-attempts)." default:"${max_deliveries}" env:"FLASHPIPE_MAX_DELIVERIES"`
	BreakerThreshold int           `name:"circuit-breaker-threshold" help:"Consecutive API outage failures (network, timeouts, 5xx) that open the circuit breaker." default:"${breaker_threshold}" env:"CIRCUIT_BREAKER_THRESHOLD"`
	BreakerTimeout   time.Duration `name:"circuit-breaker-timeout" help:"How long the breaker stays open before one call probes the API." default:"${breaker_timeout}" env:"CIRCUIT_BREAKER_TIMEOUT"`
	DrainTimeout     time.Duration `help:"On SIGTERM, how long in-flight items may take to finish before the rest is left for redelivery." default:"${drain_timeout}" env:"FLASHPIPE_DRAIN_TIMEOUT"`
	CacheClaimTTL    time.Duration `help:"How long the other replicas wait for a replica that died while paying for an answer they also need (the same for every replica)." default:"${cache_claim_ttl}" env:"FLASHPIPE_CACHE_CLAIM_TTL"`
	BatchFlags
	SpendFlags
}

// SpendFlags price the API calls and cap what the processors spend.
type SpendFlags struct {
	PricePromptPerM     float64       `name:"price-prompt-per-m" help:"USD per million prompt tokens of every model, for the spend caps (0: the API's model list, else 3)." default:"0" env:"FLASHPIPE_PRICE_PROMPT_PER_M"`
	PriceCompletionPerM float64       `name:"price-completion-per-m" help:"USD per million completion tokens of every model, for the spend caps (0: the API's model list, else 15)." default:"0" env:"FLASHPIPE_PRICE_COMPLETION_PER_M"`
	BatchRate           float64       `help:"Fraction of the sync price a provider batch costs." default:"${batch_rate}" env:"FLASHPIPE_BATCH_RATE"`
	SpendCapUSD         float64       `name:"spend-cap-usd" help:"Cap on what all processor replicas spend together per --spend-period, in USD (0: none set here; one set by flashpipe cap set --period wins over this flag)." default:"0" env:"FLASHPIPE_SPEND_CAP_USD"`
	SpendPeriod         time.Duration `help:"Length of a spend period of --spend-cap-usd (periods aligned on UTC, e.g. days)." default:"${spend_period}" env:"FLASHPIPE_SPEND_PERIOD"`
	CapDelay            time.Duration `help:"How long an item held by a spend cap waits before it is tried again." default:"${cap_delay}" env:"FLASHPIPE_CAP_DELAY"`
}

func (f SpendFlags) config() app.SpendSettings {
	return app.SpendSettings{
		Prices:       app.PriceSettings{Override: spend.Prices{PromptPerM: f.PricePromptPerM, CompletionPerM: f.PriceCompletionPerM}, BatchRate: f.BatchRate},
		PeriodCapUSD: f.SpendCapUSD, Period: f.SpendPeriod,
	}
}

func (f ProcessorFlags) config() processor.Config {
	return processor.Config{
		ConcurrentMax: f.ConcurrentMax, Workers: f.Workers, MaxAttempts: f.RetryMaxAttempts,
		AckWait: f.AckWait, MaxDeliveries: f.MaxDeliveries, BreakerThreshold: f.BreakerThreshold,
		BreakerTimeout: f.BreakerTimeout, DrainTimeout: f.DrainTimeout, CapDelay: f.CapDelay, Batch: f.BatchFlags.config(""),
	}
}

// RateLimitFlags set the API rate limit all processor replicas share.
type RateLimitFlags struct {
	RateLimitRPM    int     `help:"API requests per minute for all processor replicas together (0: none; default 600 against a real API, the simulator's own limit against it)." default:"-1" env:"RATE_LIMIT_RPM"`
	RateLimitBuffer float64 `help:"Fraction of the rate limit used, leaving headroom." default:"${rate_limit_buffer}" env:"RATE_LIMIT_BUFFER"`
	RateLimitTPM    int     `help:"API tokens per minute for all replicas together (0: none)." default:"0" env:"RATE_LIMIT_TPM"`
	// While NATS is unreachable a replica cannot coordinate and spends a local share
	// of the budget: budget / the live replica count it last read (heartbeats). This
	// optional floor vouches for the count (see internal/ratelimit).
	RateLimitAssumedReplicas int `help:"While NATS is unreachable, each replica spends budget/N, N the live processor replicas it last counted; this sets a floor on N (0: the live count alone)." default:"0" env:"RATE_LIMIT_ASSUMED_REPLICAS"`
}

// config maps the flags to the limiter's configuration (RPM -1: the default).
func (f RateLimitFlags) config() ratelimit.Config {
	return ratelimit.Config{RPM: f.RateLimitRPM, Buffer: f.RateLimitBuffer, TPM: f.RateLimitTPM,
		AssumedReplicas: f.RateLimitAssumedReplicas}
}

// SyncFlags set how often the embedded NATS server fsyncs (docs/durability.md).
type SyncFlags struct {
	NATSSyncInterval time.Duration `name:"nats-sync-interval" help:"Embedded NATS: fsync JetStream files this often (0: the server's default, 2m)." env:"FLASHPIPE_NATS_SYNC_INTERVAL"`
	NATSSyncAlways   bool          `name:"nats-sync-always" help:"Embedded NATS: fsync every write (survives power loss; much slower)." env:"FLASHPIPE_NATS_SYNC_ALWAYS"`
}

// embedded configures the embedded NATS server on port (0: a free port, negative: in
// process only).
func (f SyncFlags) embedded(port int) natsx.EmbeddedConfig {
	return natsx.EmbeddedConfig{Port: port, SyncInterval: f.NATSSyncInterval, SyncAlways: f.NATSSyncAlways}
}

// MetricsFlags expose Prometheus metrics and the health endpoints.
type MetricsFlags struct {
	MetricsAddr string `help:"Serve Prometheus metrics at http://ADDR/metrics, liveness at /healthz and readiness at /readyz (empty: off)." env:"FLASHPIPE_METRICS_ADDR"`
}

// serve starts the metrics and health endpoints when configured and returns the
// registry (nil: metrics off). checks decide readiness (/readyz).
func (f MetricsFlags) serve(ctx context.Context, log *slog.Logger, checks ...health.Check) (prometheus.Registerer, error) {
	if f.MetricsAddr == "" {
		return nil, nil
	}
	hc, err := health.New(health.Config{Checks: checks, Logger: log})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", f.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hc.Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return reg, nil
}

// SequencerFlags configure sequencer replicas.
type SequencerFlags struct {
	SequencerWindow     int           `help:"Out-of-order results a batch holds in memory; further ones are re-read from the stream." default:"${sequencer_window}" env:"FLASHPIPE_SEQUENCER_WINDOW"`
	SequencerMaxBatches int           `help:"Batches one sequencer replica orders at once (a batch waiting for its results costs a little memory, no consumer)." default:"${sequencer_max_batches}" env:"FLASHPIPE_SEQUENCER_MAX_BATCHES"`
	SequencerLeaseTTL   time.Duration `help:"How soon another replica takes over the batches (and the scheduling) of a crashed sequencer." default:"${sequencer_lease_ttl}" env:"FLASHPIPE_SEQUENCER_LEASE_TTL"`
	// The scheduler runs beside the sequencer (one replica leads).
	SchedulerWindow   int                `help:"Items dispatched ahead of the processors (0: twice their --concurrent-max): small keeps the fair order, too small starves them." default:"0" env:"FLASHPIPE_SCHEDULER_WINDOW"`
	ItemDeadline      time.Duration      `help:"How long a batch waits for an item that was never published before that item fails in its place." default:"${item_deadline}" env:"FLASHPIPE_ITEM_DEADLINE"`
	OrphanGrace       time.Duration      `help:"How long an item whose batch has no manifest waits for one before it is refused." default:"${orphan_grace}" env:"FLASHPIPE_ORPHAN_GRACE"`
	TenantWeight      map[string]int     `help:"A tenant's share of the processors relative to others (TENANT=N; default 1 each). Repeatable." env:"FLASHPIPE_TENANT_WEIGHT"`
	TenantRate        map[string]float64 `help:"Cap on a tenant's items per second (TENANT=R), e.g. its share of the API's rate limit (2 calls per item). Repeatable." env:"FLASHPIPE_TENANT_RATE"`
	TenantConcurrency map[string]int     `help:"Cap on a tenant's items at the processors at once, waiting for one or held (TENANT=N). Repeatable." env:"FLASHPIPE_TENANT_CONCURRENCY"`
}

func (f SequencerFlags) config() app.SequencerConfig {
	return app.SequencerConfig{
		Sequencer: sequencer.Config{Window: f.SequencerWindow, MaxBatches: f.SequencerMaxBatches, LeaseTTL: f.SequencerLeaseTTL},
		Scheduler: scheduler.Config{Window: f.SchedulerWindow, ItemDeadline: f.ItemDeadline, OrphanGrace: f.OrphanGrace,
			TenantWeights: f.TenantWeight, TenantRates: f.TenantRate, TenantConcurrency: f.TenantConcurrency},
	}
}

// StoreFlags choose the database.
type StoreFlags struct {
	PostgresURL string `name:"postgres-url" help:"Postgres URL (password never logged)." env:"FLASHPIPE_POSTGRES_URL,DATABASE_URL"`
	SQLite      string `name:"sqlite" help:"SQLite database file (used when no Postgres URL is given)." env:"FLASHPIPE_SQLITE"`
}

// storeConfig maps the flags to app's store configuration; sqliteFallback is the
// SQLite file used when neither flag is given ("" for none).
func (f StoreFlags) storeConfig(sqliteFallback string) app.StoreConfig {
	return app.StoreConfig{PostgresURL: f.PostgresURL, SQLitePath: cmp.Or(f.SQLite, sqliteFallback)}
}

// SinkFlags configure sink replicas.
type SinkFlags struct {
	SinkBatchSize int           `help:"Most events the sink writes per transaction." default:"${sink_batch_size}" env:"FLASHPIPE_SINK_BATCH_SIZE"`
	SinkAckWait   time.Duration `help:"Redelivery timeout of events a sink read but did not commit (after a sink crash)." default:"${sink_ack_wait}" env:"FLASHPIPE_SINK_ACK_WAIT"`
}

func (f SinkFlags) config() sink.Config {
	return sink.Config{BatchSize: f.SinkBatchSize, AckWait: f.SinkAckWait}
}

// PriceFlags price the tokens for estimates.
type PriceFlags struct {
	PricePrompt     float64 `help:"USD per million prompt tokens, for estimates." default:"3" env:"FLASHPIPE_PRICE_PROMPT"`
	PriceCompletion float64 `help:"USD per million completion tokens, for estimates." default:"15" env:"FLASHPIPE_PRICE_COMPLETION"`
}

func (f PriceFlags) prices() processor.Prices {
	return processor.Prices{PromptPerM: f.PricePrompt, CompletionPerM: f.PriceCompletion}
}

// SimFlags configure the built-in API simulator.
type SimFlags struct {
	SimLatency time.Duration `help:"Simulator: fixed latency per call." default:"0s" env:"FLASHPIPE_SIM_LATENCY"`
	SimJitter  time.Duration `help:"Simulator: extra random latency per call, uniform in [0, jitter]." default:"0s" env:"FLASHPIPE_SIM_JITTER"`
	SimRPM     int           `help:"Simulator: requests per minute before it answers 429 (0: unlimited)." default:"0" env:"FLASHPIPE_SIM_RPM"`
	SimBatchFlags
}

func (f SimFlags) config(log *slog.Logger) llmsim.Config {
	return llmsim.Config{Latency: f.SimLatency, LatencyJitter: f.SimJitter, RPM: f.SimRPM, Batch: f.SimBatchFlags.config(), Logger: log}
}
