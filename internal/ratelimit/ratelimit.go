package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"golang.org/x/time/rate"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// Defaults for Config.
const (
	// DefaultBuffer is the fraction of the API's limits used.
	DefaultBuffer = 0.8
	// DefaultBucketSuffix names the bucket after the contract's prefix:
	// FLASHPIPE_RATELIMIT.
	DefaultBucketSuffix = "RATELIMIT"
	// DefaultKey names the limit when Config.Key is empty.
	DefaultKey = "api"
	// DefaultWindow is the schedule's burst tolerance (see the package doc).
	DefaultWindow = time.Second
	// DefaultMinRateFactor is the floor of the shared rate factor.
	DefaultMinRateFactor = 0.25
	// DefaultRecoverEvery is how often the rate factor recovers one RecoverStep.
	DefaultRecoverEvery = 10 * time.Second
	// DefaultHeartbeatTTL is how long a replica that stopped stays in the live count.
	DefaultHeartbeatTTL = 15 * time.Second
	// DefaultOpTimeout bounds each KV operation.
	DefaultOpTimeout = 2 * time.Second
)

// Fixed parameters of the algorithm.
const (
	// DecreaseFactor multiplies the rate factor when a 429 starts a new cooldown.
	DecreaseFactor = 0.7
	// RecoverStep is added to the rate factor every Config.RecoverEvery, up to 1.
	RecoverStep = 0.05
	// DefaultCooldown is the cooldown of a 429 that gives neither Retry-After nor a
	// reset time in the future.
	DefaultCooldown = time.Second
	// MaxCooldown caps any cooldown.
	MaxCooldown = 5 * time.Minute
	// ChunkDivisor sizes the parts of a lease that are granted together: at most
	// max(1, R·Window/ChunkDivisor) requests each.
	ChunkDivisor = 16
	// ProbeInterval is how often a replica that fell back checks whether NATS is back.
	ProbeInterval = time.Second
	// FlushInterval is how often observed tokens are merged into the shared minute.
	FlushInterval = 100 * time.Millisecond
	// minWindow is the smallest Config.Window accepted.
	minWindow = 10 * time.Millisecond
	// maxCAS bounds the compare-and-set attempts of one operation.
	maxCAS = 32
	// casPause and casPauseMax shape the random pause before a compare-and-set is
	// retried after a conflict.
	casPause    = 500 * time.Microsecond
	casPauseMax = 250 * time.Millisecond
	// ReplicasBucketSuffix names the heartbeat bucket (in memory) after Config.Bucket.
	ReplicasBucketSuffix = "_REPLICAS"
)

// ErrClosed is returned by Wait once the Limiter is closed.
var ErrClosed = errors.New("ratelimit: limiter closed")

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// Config configures a Limiter. The zero value of each field means its default.
type Config struct {
	// RPM is the API's requests per minute for all replicas together (0: no request
	// limit; Wait then only honours cooldowns and TPM).
	RPM int
	// Buffer is the fraction of RPM and TPM used, in (0, 1] (DefaultBuffer).
	Buffer float64
	// TPM is the API's tokens per minute for all replicas together (0: none), fed by
	// Observe.
	TPM int
	// Bucket is the KV bucket (default: the contract's Name(DefaultBucketSuffix)).
	Bucket string
	// Key names the limit (DefaultKey): replicas with the same Key share one budget.
	// Letters, digits, '-', '_', and dots between tokens.
	Key string
	// Window is the schedule's burst tolerance (DefaultWindow): over any interval of
	// length t all replicas are granted at most budget·t + one Window's worth.
	Window time.Duration
	// MinRateFactor is the floor of the shared rate factor, in (0, 1]
	// (DefaultMinRateFactor).
	MinRateFactor float64
	// RecoverEvery is how often the factor recovers one RecoverStep
	// (DefaultRecoverEvery).
	RecoverEvery time.Duration
	// AssumedReplicas, when set, is a floor on the number of replicas the budget is
	// split over while NATS is unreachable, and vouches for it: a replica then spends
	// budget/max(live count, AssumedReplicas) from its first moment. Zero (the
	// default) uses the live count alone, and a replica too new to be counted by the
	// others spends nothing (see the package doc).
	AssumedReplicas int
	// HeartbeatTTL is how long a replica that stopped stays in the live count
	// (DefaultHeartbeatTTL); replicas heartbeat every HeartbeatTTL/3. All replicas
	// sharing a Bucket must use the same.
	HeartbeatTTL time.Duration
	// OpTimeout bounds each KV operation (DefaultOpTimeout).
	OpTimeout time.Duration
	// Clock tells the time (default time.Now); for tests.
	Clock func() time.Time
	// Logger receives cooldowns, factor changes and fallbacks. Nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults(ct *contract.Contract) Config {
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.Bucket == "" {
		c.Bucket = ct.Name(DefaultBucketSuffix)
	}
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MinRateFactor == 0 {
		c.MinRateFactor = DefaultMinRateFactor
	}
	if c.RecoverEvery == 0 {
		c.RecoverEvery = DefaultRecoverEvery
	}
	if c.HeartbeatTTL == 0 {
		c.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.RPM < 0:
		return fmt.Errorf("ratelimit: Config.RPM %d is negative", c.RPM)
	case c.TPM < 0:
		return fmt.Errorf("ratelimit: Config.TPM %d is negative", c.TPM)
	case !(c.Buffer > 0 && c.Buffer <= 1):
		return fmt.Errorf("ratelimit: Config.Buffer %v is not in (0, 1]", c.Buffer)
	case !keyPattern.MatchString(c.Key):
		return fmt.Errorf("ratelimit: Config.Key %q must be dot-separated tokens of letters, digits, '-' and '_'", c.Key)
	case c.Window < minWindow:
		return fmt.Errorf("ratelimit: Config.Window %v is shorter than %v", c.Window, minWindow)
	case !(c.MinRateFactor > 0 && c.MinRateFactor <= 1):
		return fmt.Errorf("ratelimit: Config.MinRateFactor %v is not in (0, 1]", c.MinRateFactor)
	case c.RecoverEvery < 0:
		return fmt.Errorf("ratelimit: Config.RecoverEvery %v is negative", c.RecoverEvery)
	case c.AssumedReplicas < 0:
		return fmt.Errorf("ratelimit: Config.AssumedReplicas %d is negative", c.AssumedReplicas)
	case c.OpTimeout < 0:
		return fmt.Errorf("ratelimit: Config.OpTimeout %v is negative", c.OpTimeout)
	case c.HeartbeatTTL < 3*minWindow:
		return fmt.Errorf("ratelimit: Config.HeartbeatTTL %v is shorter than %v", c.HeartbeatTTL, 3*minWindow)
	}
	return nil
}

// Stats is a snapshot of what a Limiter did. Counters are this replica's.
type Stats struct {
	// Granted counts Waits that returned nil; Waited is their total time in Wait.
	Granted int64
	Waited  time.Duration
	// Factor is the shared rate factor now (1: full budget).
	Factor float64
	// Cooldowns counts cooldowns this replica entered (its own 429s and others').
	Cooldowns int64
	// CooldownUntil is the end of the current or last cooldown (zero: none yet).
	CooldownUntil time.Time
	// Leases counts leases taken from the shared schedule; Conflicts the
	// compare-and-set writes another replica won (each retried).
	Leases, Conflicts int64
	// Replicas is the live replica count last read (this one included).
	Replicas int
	// Errors counts failed KV operations (not conflicts).
	Errors int64
	// Fallback is true while NATS is unreachable and the local share applies;
	// Fallbacks counts how often that began. FallbackShare is the fraction of the
	// budget this replica spends in a fallback now (0 while it is too new to be
	// counted by the others).
	Fallback      bool
	Fallbacks     int64
	FallbackShare float64
	// Tokens is the total Observe reported to this replica; MinuteTokens the tokens of
	// the last minute as this replica sees them (all replicas', with its own share only
	// in the fallback), the figure the TPM budget is checked against.
	Tokens, MinuteTokens int64
}

// Limiter is one replica's handle on a shared rate limit. It is safe for concurrent
// use.
type Limiter struct {
	cfg       Config
	log       *slog.Logger
	js        jetstream.JetStream
	nc        *nats.Conn
	kv        jetstream.KeyValue
	bucketCfg jetstream.KeyValueConfig
	hb        jetstream.KeyValue // the replicas bucket: heartbeats
	hbCfg     jetstream.KeyValueConfig

	keySched, keyThrottle, keyTokens, keyHeartbeat string

	perSec   float64 // request budget per second at factor 1 (0: none)
	perMin   float64 // token budget per minute at factor 1 (0: none)
	lookLead time.Duration

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	kick      chan struct{} // a caller queued (to the leaser)
	changed   chan struct{} // cooldown, factor, tokens or mode changed (to the leaser)

	mu            sync.Mutex
	queue         []*waiter // FIFO of callers in Wait
	held          []batch   // leased requests no caller took yet, by expiry
	throttle      throttleState
	throttleRev   uint64
	cooldownUntil time.Time
	shared        minute // the shared minute of tokens, as last read
	sharedRev     uint64
	pending       minute // tokens observed here, not yet flushed
	own           minute // tokens observed here (for the fallback)
	fallback      bool
	fb            *rate.Limiter // the local share while fallback
	loggedFactor  float64
	replicas      int       // live replicas of this limit, as last counted
	countedSince  time.Time // first heartbeat since New or the last fallback
	schedEnd      time.Time // the schedule's end as last seen (for lingering)
	contended     bool      // the last lease lost a compare-and-set to another replica

	skewLogged atomic.Int64 // Unix seconds of the last clock-skew warning
	casTime    atomic.Int64 // moving average of a compare-and-set attempt, ns
	st         struct {
		granted, waited, cooldowns, leases, conflicts, errors, fallbacks, tokens atomic.Int64
	}
}

type waiter struct {
	ch      chan struct{} // closed when granted
	granted bool
	expiry  time.Time // of the request granted
}

// batch is n leased requests that are granted from the same moment on and expire
// together.
type batch struct {
	n      int
	first  time.Time // the slot of its first request (zero: unknown)
	from   time.Time // granted from then on (zero: at once)
	expiry time.Time
}

// BucketConfig is the configuration of the shared limits' bucket (bucket empty: the
// default name for the contract). It is in memory: the schedule is worth nothing after
// a restart of NATS, and a limiter re-creates the bucket when it finds it gone.
func BucketConfig(c *contract.Contract, bucket string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      cmp.Or(bucket, c.Name(DefaultBucketSuffix)),
		Description: "flashpipe: shared API rate limits (schedule, cooldown, factor, tokens)",
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    c.Config().Replicas,
	}
}

// New opens the bucket (creating it if it does not exist; never changing it), reads the current cooldown, factor and
// tokens, and starts the replica's watchers. It fails if NATS cannot be reached.
func New(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Limiter, error) {
	if js == nil || c == nil {
		return nil, errors.New("ratelimit: New needs a JetStream and a contract")
	}
	cfg = cfg.withDefaults(c)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	bcfg := BucketConfig(c, cfg.Bucket)
	kv, err := contract.OpenKeyValue(ctx, js, bcfg, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: open bucket %s: %w", cfg.Bucket, err)
	}
	hcfg := jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket + ReplicasBucketSuffix,
		Description: "flashpipe: live processor replicas per rate limit (heartbeats)",
		History:     1,
		TTL:         cfg.HeartbeatTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    c.Config().Replicas,
	}
	hb, err := contract.OpenKeyValue(ctx, js, hcfg, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: open bucket %s: %w", hcfg.Bucket, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Limiter{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "ratelimit", "key", cfg.Key),
		js:           js,
		nc:           js.Conn(),
		kv:           kv,
		bucketCfg:    bcfg,
		hb:           hb,
		hbCfg:        hcfg,
		keySched:     cfg.Key + ".sched",
		keyThrottle:  cfg.Key + ".throttle",
		keyTokens:    cfg.Key + ".tokens",
		keyHeartbeat: cfg.Key + "." + nuid.Next(),
		perSec:       float64(cfg.RPM) * cfg.Buffer / 60,
		perMin:       float64(cfg.TPM) * cfg.Buffer,
		lookLead:     cfg.Window / 2,
		ctx:          lctx,
		cancel:       cancel,
		done:         make(chan struct{}),
		kick:         make(chan struct{}, 1),
		changed:      make(chan struct{}, 1),
		loggedFactor: 1,
	}
	ws, err := l.watch(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ratelimit: watch %s: %w", cfg.Bucket, err)
	}
	if err := l.heartbeat(ctx); err != nil {
		ws.stop()
		cancel()
		return nil, err
	}
	l.loggedFactor = l.Stats().Factor
	l.wg.Add(1)
	go l.control(ws)
	if l.perSec > 0 {
		l.wg.Add(1)
		go l.leaser()
	}
	return l, nil
}

// Close stops the replica's goroutines and watchers, after a last attempt to share the
// tokens observed. Waits in progress return ErrClosed. It is safe to call more than
// once.
func (l *Limiter) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
	})
	l.wg.Wait()
	return nil
}

func (l *Limiter) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *Limiter) now() time.Time { return l.cfg.Clock() }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wait blocks until this replica may send one request: no cooldown is active, the
// tokens budget is not spent, and a request of the shared budget is leased to it.
// Callers are served first come, first served. It returns ctx's error if ctx ends
// first (no request is used then) and ErrClosed once the Limiter is closed. With RPM 0
// it returns at once unless a cooldown or the tokens budget holds it.
func (l *Limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.closed() {
		return ErrClosed
	}
	start := time.Now()
	if l.perSec == 0 {
		return l.waitGate(ctx, start)
	}
	now := l.now()
	l.mu.Lock()
	if len(l.queue) == 0 && !l.gateLocked(now).After(now) {
		l.expireLocked(now)
		if l.activeLocked(now) {
			l.takeLocked()
			l.mu.Unlock()
			l.count(start)
			return nil
		}
	}
	w := &waiter{ch: make(chan struct{})}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	signal(l.kick)

	var err error
	select {
	case <-w.ch:
		l.count(start)
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-l.done:
		err = ErrClosed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.granted { // granted as we gave up: hand the request back
		l.held = append([]batch{{n: 1, expiry: w.expiry}}, l.held...)
		l.distributeLocked(l.now())
		return err
	}
	for i, q := range l.queue {
		if q == w {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			break
		}
	}
	return err
}

// waitGate is Wait without a request budget: only cooldowns and tokens hold it.
func (l *Limiter) waitGate(ctx context.Context, start time.Time) error {
	for {
		now := l.now()
		l.mu.Lock()
		gate := l.gateLocked(now)
		l.mu.Unlock()
		if !gate.After(now) {
			l.count(start)
			return nil
		}
		t := time.NewTimer(gate.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-l.done:
			t.Stop()
			return ErrClosed
		}
	}
}

func (l *Limiter) count(start time.Time) {
	l.st.granted.Add(1)
	l.st.waited.Add(int64(time.Since(start)))
}

// Observe reports the tokens (prompt plus completion) a finished request used, for the
// tokens budget. It does not block: the count is shared within FlushInterval.
func (l *Limiter) Observe(tokens int) {
	if tokens <= 0 {
		return
	}
	l.st.tokens.Add(int64(tokens))
	if l.perMin == 0 {
		return
	}
	sec := l.now().Unix()
	l.mu.Lock()
	l.pending.add(sec, int64(tokens))
	l.pending.prune(sec) // unflushed for long only in the fallback: the minute is enough
	l.own.add(sec, int64(tokens))
	l.own.prune(sec)
	l.mu.Unlock()
}

// Throttled reports that the API answered 429. retryAfter is the wait it asked for
// (zero: none) and reset its X-RateLimit-Reset (zero: none). Every replica pauses until
// the later of the two (see the package doc for defaults and caps); if no cooldown was
// active, the shared rate factor is lowered. This replica pauses at once; the others
// as soon as their watch delivers the change, normally within milliseconds. It blocks
// for a few KV round trips, each bounded by Config.OpTimeout.
func (l *Limiter) Throttled(retryAfter time.Duration, reset time.Time) {
	if l.closed() {
		return
	}
	now := l.now()
	until := now.Add(max(retryAfter, 0))
	if reset.After(until) {
		until = reset
	}
	if !until.After(now) {
		until = now.Add(DefaultCooldown)
	}
	if limit := now.Add(MaxCooldown); until.After(limit) {
		until = limit
	}
	l.mu.Lock()
	started := l.extendCooldownLocked(until, now)
	fallback := l.fallback
	l.mu.Unlock()
	if started {
		l.log.Warn("API rate limit hit: all replicas cool down", "until", until, "retry_after", retryAfter)
	}
	signal(l.changed)
	if !fallback {
		err := l.shareThrottle(until)
		switch {
		case err == nil || l.closed():
			return
		case errors.Is(err, errTooManyConflicts):
			// NATS works, but other replicas kept writing: they are recording 429s too.
			l.log.Warn("cooldown not shared: too many concurrent writers", "until", until)
			return
		}
		l.enterFallback(err)
	}
	// Not shared: lower the factor for this replica alone.
	l.mu.Lock()
	old := l.throttle.factorAt(now, l.cfg.RecoverEvery)
	next, changed := l.throttle.throttled(now, until, l.cfg)
	l.throttle = next
	l.mu.Unlock()
	if changed {
		l.logFactor(old, next.factorAt(now, l.cfg.RecoverEvery))
	}
}

// Stats returns a snapshot of the counters and state.
func (l *Limiter) Stats() Stats {
	now := l.now()
	l.mu.Lock()
	factor := l.throttle.factorAt(now, l.cfg.RecoverEvery)
	until := l.cooldownUntil
	fallback := l.fallback
	minuteTokens := l.tokenViewLocked().sum(now.Unix())
	replicas, share := l.replicas, l.shareLocked(now)
	l.mu.Unlock()
	return Stats{
		Granted:       l.st.granted.Load(),
		Waited:        time.Duration(l.st.waited.Load()),
		Factor:        factor,
		Cooldowns:     l.st.cooldowns.Load(),
		CooldownUntil: until,
		Leases:        l.st.leases.Load(),
		Conflicts:     l.st.conflicts.Load(),
		Errors:        l.st.errors.Load(),
		Fallback:      fallback,
		Fallbacks:     l.st.fallbacks.Load(),
		FallbackShare: share,
		Replicas:      replicas,
		Tokens:        l.st.tokens.Load(),
		MinuteTokens:  minuteTokens,
	}
}

// --- local state (l.mu held) ---

// gateLocked returns until when nothing may be granted: the cooldown's end or when the
// tokens of the last minute fall below the budget. A time not after now means open.
func (l *Limiter) gateLocked(now time.Time) time.Time {
	gate := l.cooldownUntil
	if l.perMin > 0 {
		if t := l.tokenGateLocked(now); t.After(gate) {
			gate = t
		}
	}
	return gate
}

func (l *Limiter) tokenGateLocked(now time.Time) time.Time {
	limit := l.perMin * l.throttle.factorAt(now, l.cfg.RecoverEvery)
	if l.fallback {
		share := l.shareLocked(now)
		if share == 0 { // nothing to spend: look again after the next probe
			return now.Add(ProbeInterval)
		}
		limit *= share
	}
	return l.tokenViewLocked().openAt(now.Unix(), limit)
}

// tokenViewLocked is the minute of tokens the budget is checked against: everyone's
// (shared and not yet flushed), or in the fallback this replica's own.
func (l *Limiter) tokenViewLocked() minute {
	if l.fallback {
		return l.own
	}
	return l.shared.merged(l.pending)
}

// extendCooldownLocked makes the cooldown last at least until until. It reports
// whether a new cooldown began (none was active).
func (l *Limiter) extendCooldownLocked(until, now time.Time) bool {
	if !until.After(l.cooldownUntil) || !until.After(now) {
		return false
	}
	started := !l.cooldownUntil.After(now)
	l.cooldownUntil = until
	// Requests leased for the cooldown are not sent; those leased for after it are.
	l.held = slices.DeleteFunc(l.held, func(b batch) bool { return b.first.Before(until) })
	if started {
		l.st.cooldowns.Add(1)
	}
	return started
}

func (l *Limiter) expireLocked(now time.Time) {
	l.held = slices.DeleteFunc(l.held, func(b batch) bool { return b.expiry.Before(now) })
}

func (l *Limiter) heldLocked() int {
	n := 0
	for _, b := range l.held {
		n += b.n
	}
	return n
}

// activeLocked reports whether a held request may be granted at now (held is in
// slot order: the first batch is granted first).
func (l *Limiter) activeLocked(now time.Time) bool {
	return len(l.held) > 0 && !l.held[0].from.After(now)
}

// nextActiveLocked is when the first held batch may be granted (zero: none held).
func (l *Limiter) nextActiveLocked() time.Time {
	if len(l.held) == 0 {
		return time.Time{}
	}
	return l.held[0].from
}

// takeLocked removes one active held request (there must be one) and returns its
// expiry.
func (l *Limiter) takeLocked() time.Time {
	b := &l.held[0]
	exp := b.expiry
	if b.n--; b.n == 0 {
		l.held = append(l.held[:0], l.held[1:]...)
	}
	return exp
}

// distributeLocked hands held requests to queued callers, oldest first, unless a
// cooldown or the tokens budget holds them.
func (l *Limiter) distributeLocked(now time.Time) {
	if len(l.queue) == 0 || l.gateLocked(now).After(now) {
		return
	}
	l.expireLocked(now)
	n := 0
	for n < len(l.queue) && l.activeLocked(now) {
		w := l.queue[n]
		w.expiry = l.takeLocked()
		w.granted = true
		close(w.ch)
		n++
	}
	if n > 0 {
		clear(l.queue[:n])
		l.queue = append(l.queue[:0], l.queue[n:]...)
	}
}

func (l *Limiter) logFactor(old, f float64) {
	switch {
	case f < old:
		l.log.Warn("rate factor lowered after repeated 429s", "factor", round(f), "from", round(old),
			"rpm", round(float64(l.cfg.RPM)*l.cfg.Buffer*f))
	case f >= 1 && old < 1:
		l.log.Info("rate factor recovered", "factor", 1)
	case f > old:
		l.log.Debug("rate factor recovering", "factor", round(f))
	}
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }
