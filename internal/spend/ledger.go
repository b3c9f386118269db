package spend

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
)

// Defaults for Config.
const (
	// DefaultBucketSuffix names the ledger's bucket after the contract: FLASHPIPE_SPEND.
	DefaultBucketSuffix = "SPEND"
	// DefaultHoldTTL is how long a reservation holds its money without being settled
	// before it lapses (and is charged at its worst case). It must outlast an API
	// call (llm.DefaultTimeout, 120 s) with room to settle.
	DefaultHoldTTL = 3 * time.Minute
	// DefaultHoldMargin is how long before its reservation's deadline a call must
	// end: the time to settle, and clock differences between replicas.
	DefaultHoldMargin = 15 * time.Second
	// DefaultPeriod is the length of a spend period (UTC days).
	DefaultPeriod = 24 * time.Hour
	// DefaultMaxRetries bounds the compare-and-set attempts of one change of an
	// account under contention.
	DefaultMaxRetries = 100
	// DefaultBatchCacheTTL is how long a replica remembers that a batch has no cap
	// (one read saved per call; a cap set meanwhile applies that much later).
	DefaultBatchCacheTTL = time.Second
	// lapsedKeep is how long a lapsed reservation is remembered, so that a late
	// settle can replace its worst case by the real cost.
	lapsedKeep = time.Hour
)

// Cap sources, in Account.CapBy.
const (
	ByManifest = "manifest"
	ByCommand  = "command"
	ByFlag     = "flag"
)

// ErrCapReached is the class of a reservation refused by a cap (see CapError).
var ErrCapReached = errors.New("spend cap reached")

// ErrContention is returned when an account could not be changed in
// Config.MaxRetries compare-and-set attempts; it is transient.
var ErrContention = errors.New("spend: too many concurrent updates of an account")

// Nanos are nano-dollars: every amount in the ledger is an integer, so sums are exact.
type Nanos int64

// ToNanos converts USD to Nanos, rounding up (a reservation or a cost is never
// under-counted).
func ToNanos(usd float64) Nanos {
	if usd <= 0 || math.IsNaN(usd) {
		return 0
	}
	return Nanos(math.Ceil(usd*1e9 - 1e-6))
}

// USD converts to dollars.
func (n Nanos) USD() float64 { return float64(n) / 1e9 }

// Hold is one reservation held on an account.
type Hold struct {
	Amount Nanos     `json:"amount"`
	Until  time.Time `json:"until"`
	Holder string    `json:"holder,omitempty"`
}

// Lapse is a reservation that lapsed (charged at its worst case).
type Lapse struct {
	Amount Nanos     `json:"amount"`
	At     time.Time `json:"at"`
}

// Blocked says a reservation was refused by the cap, since when, and what it needed.
type Blocked struct {
	Since time.Time `json:"since"`
	Need  Nanos     `json:"need"`
}

// Account is one capped account: a batch's, or a period's. Spent() + Held() never
// grows past Cap through a reservation.
type Account struct {
	Cap    Nanos  `json:"cap"`
	Capped bool   `json:"capped"`
	CapBy  string `json:"cap_by,omitempty"`
	// Settled is the cost of the calls settled; Lapsed the worst cases charged for
	// reservations never settled.
	Settled Nanos `json:"settled"`
	Lapsed  Nanos `json:"lapsed,omitempty"`
	// Before is what the batch had spent when its first cap was set on a batch that
	// ran without one (calls no reservation tracked): it counts against the cap.
	Before  Nanos            `json:"before,omitempty"`
	Calls   int64            `json:"calls"`
	Holds   map[string]Hold  `json:"holds,omitempty"`
	Lapses  map[string]Lapse `json:"lapses,omitempty"`
	Blocked *Blocked         `json:"blocked,omitempty"`
	// Start and End bound a period account (zero for a batch).
	Start   time.Time `json:"start,omitzero"`
	End     time.Time `json:"end,omitzero"`
	Updated time.Time `json:"updated"`
}

// Spent is what the account counts as spent: settled, plus lapsed worst cases,
// plus what was spent before a first cap was set.
func (a Account) Spent() Nanos { return a.Settled + a.Lapsed + a.Before }

// Held is the sum of the reservations not yet settled.
func (a Account) Held() Nanos {
	var n Nanos
	for _, h := range a.Holds {
		n += h.Amount
	}
	return n
}

// Paused reports whether the cap holds the account's calls: one was refused since
// the account last granted one or its cap changed, and it still would be (calls in
// flight settling below their worst case may have made room for it).
func (a Account) Paused() bool {
	return a.Blocked != nil && a.Spent()+a.Held()+a.Blocked.Need > a.Cap
}

// expire moves the holds whose deadline passed to Lapsed at their full amount, and
// forgets lapses older than lapsedKeep.
func (a *Account) expire(now time.Time) bool {
	changed := false
	for id, h := range a.Holds {
		if now.After(h.Until) {
			delete(a.Holds, id)
			a.Lapsed += h.Amount
			if a.Lapses == nil {
				a.Lapses = map[string]Lapse{}
			}
			a.Lapses[id] = Lapse{Amount: h.Amount, At: now}
			changed = true
		}
	}
	for id, l := range a.Lapses {
		if now.Sub(l.At) > lapsedKeep {
			delete(a.Lapses, id)
			changed = true
		}
	}
	return changed
}

// Config configures a Ledger.
type Config struct {
	// Bucket is the key-value bucket (default <stream>_SPEND).
	Bucket string
	// HoldTTL is how long a reservation lives unsettled (DefaultHoldTTL, at least
	// 2*HoldMargin).
	HoldTTL time.Duration
	// HoldMargin is how long before the end of its reservation a call must end
	// (DefaultHoldMargin).
	HoldMargin time.Duration
	// MaxRetries bounds the compare-and-set attempts of one change (DefaultMaxRetries).
	MaxRetries int
	// BatchCacheTTL is how long a replica remembers that a batch has no cap.
	BatchCacheTTL time.Duration
	// Holder names the replica in its reservations.
	Holder string
	Logger *slog.Logger
}

func (c Config) withDefaults(ct *contract.Contract) Config {
	c.Bucket = cmp.Or(c.Bucket, ct.Name(DefaultBucketSuffix))
	c.HoldTTL = cmp.Or(c.HoldTTL, DefaultHoldTTL)
	c.HoldMargin = cmp.Or(c.HoldMargin, DefaultHoldMargin)
	c.MaxRetries = cmp.Or(c.MaxRetries, DefaultMaxRetries)
	c.BatchCacheTTL = cmp.Or(c.BatchCacheTTL, DefaultBatchCacheTTL)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.HoldMargin <= 0:
		return fmt.Errorf("spend: Config.HoldMargin must be positive, got %s", c.HoldMargin)
	case c.HoldTTL < 2*c.HoldMargin:
		return fmt.Errorf("spend: Config.HoldTTL %s must be at least twice Config.HoldMargin (%s)", c.HoldTTL, c.HoldMargin)
	case c.MaxRetries < 1:
		return fmt.Errorf("spend: Config.MaxRetries must be at least 1, got %d", c.MaxRetries)
	}
	return nil
}

// BucketConfig is the ledger's bucket: on disk (the money spent must survive a
// restart of NATS), one value per key, no TTL (a batch's cap lasts as long as the
// batch id).
func BucketConfig(c *contract.Contract, bucket string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      cmp.Or(bucket, c.Name(DefaultBucketSuffix)),
		Description: "flashpipe: spend caps and reservations per batch and per period, shared by every processor replica",
		History:     1,
		Storage:     c.StorageType(),
		Replicas:    c.Config().Replicas,
	}
}

// Ledger is the spend ledger shared by all replicas. Safe for concurrent use.
type Ledger struct {
	kv  jetstream.KeyValue
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	uncapped map[string]time.Time // batch -> remembered as having no cap until
	period   *PeriodConfig
	periodAt time.Time
}

// New opens (creating if missing) the ledger's bucket.
func New(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Ledger, error) {
	if js == nil || c == nil {
		return nil, errors.New("spend: New needs a JetStream and a contract")
	}
	cfg = cfg.withDefaults(c)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kv, err := contract.OpenKeyValue(ctx, js, BucketConfig(c, cfg.Bucket), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("spend: open bucket %s: %w", cfg.Bucket, err)
	}
	return &Ledger{kv: kv, cfg: cfg, log: cfg.Logger.With("component", "spend"), uncapped: map[string]time.Time{}}, nil
}

// PeriodConfig is the overall cap: at most Cap per Period (periods aligned on the
// Unix epoch: UTC days for 24h).
type PeriodConfig struct {
	Cap    Nanos         `json:"cap"`
	Period time.Duration `json:"period"`
	CapBy  string        `json:"cap_by"`
}

const periodConfigKey = "period.config"

func batchKey(id string) string { return "batch." + id }

func periodKey(start time.Time) string { return "period." + strconv.FormatInt(start.Unix(), 10) }

// PeriodBounds returns the period of length d holding t.
func PeriodBounds(t time.Time, d time.Duration) (start, end time.Time) {
	start = t.UTC().Truncate(d)
	return start, start.Add(d)
}

// Reservation is money held for one API call. Settle it after the call (once).
type Reservation struct {
	l      *Ledger
	id     string
	amount Nanos
	until  time.Time
	keys   []string
}

// Amount is the worst case reserved, in USD.
func (r *Reservation) Amount() float64 { return r.amount.USD() }

// Deadline is when the call must be over: the reservation lapses Config.HoldMargin
// later.
func (r *Reservation) Deadline() time.Time { return r.until.Add(-r.l.cfg.HoldMargin) }

// Reserve holds usd (a call's worst case) on the batch's account, when the batch has a
// cap, and on the current period's, when a period cap is set. It returns a *CapError
// (errors.Is ErrCapReached) when a cap would be passed, and marks that account paused;
// ErrContention (transient) when an account was changed by others MaxRetries times in
// a row. A reservation on no account (no cap anywhere) is still returned, and its
// Settle is free. The accounts are reserved one after the other, each atomically: a
// refusal by the second releases the first.
func (l *Ledger) Reserve(ctx context.Context, batchID string, usd float64) (*Reservation, error) {
	return l.ReserveFor(ctx, batchID, usd, l.cfg.HoldTTL)
}

// ReserveFor is Reserve with a reservation that lapses after ttl instead of
// Config.HoldTTL: for work that takes longer than one call, such as a provider batch
// (reserve its requests' worst case at the batch price for its completion window
// plus a margin, then settle what its results report). ttl must be at least twice
// Config.HoldMargin.
func (l *Ledger) ReserveFor(ctx context.Context, batchID string, usd float64, ttl time.Duration) (*Reservation, error) {
	if ttl < 2*l.cfg.HoldMargin {
		return nil, fmt.Errorf("spend: a reservation for %s is shorter than twice the hold margin (%s)", ttl, l.cfg.HoldMargin)
	}
	r := &Reservation{l: l, id: l.cfg.Holder + "-" + nuid.Next(), amount: ToNanos(usd), until: time.Now().Add(ttl)}
	if batchID != "" && !l.knownUncapped(batchID) {
		ok, err := l.hold(ctx, batchKey(batchID), r, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			r.keys = append(r.keys, batchKey(batchID))
		} else {
			l.rememberUncapped(batchID)
		}
	}
	pc, err := l.periodConfig(ctx)
	if err != nil {
		l.release(ctx, r)
		return nil, err
	}
	if pc != nil {
		start, end := PeriodBounds(time.Now(), pc.Period)
		key := periodKey(start)
		_, err := l.hold(ctx, key, r, &Account{Cap: pc.Cap, Capped: true, CapBy: pc.CapBy, Start: start, End: end})
		if err != nil {
			l.release(ctx, r)
			return nil, err
		}
		r.keys = append(r.keys, key)
	}
	return r, nil
}

// release settles the holds taken so far at zero (no call was made).
func (l *Ledger) release(ctx context.Context, r *Reservation) {
	if err := r.Settle(context.WithoutCancel(ctx), 0); err != nil {
		l.log.Warn("reservation not released: it lapses and is charged at its worst case", "err", err)
	}
}

func (l *Ledger) knownUncapped(batch string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.uncapped[batch]
	if ok && time.Now().After(until) {
		delete(l.uncapped, batch)
		return false
	}
	return ok
}

func (l *Ledger) rememberUncapped(batch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.uncapped[batch] = time.Now().Add(l.cfg.BatchCacheTTL)
}

func (l *Ledger) forgetUncapped(batch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.uncapped, batch)
}

// hold adds r's hold to the account at key. With create nil, a missing account means
// no cap (false); else create is the new account.
func (l *Ledger) hold(ctx context.Context, key string, r *Reservation, create *Account) (bool, error) {
	refused := false
	var capErr *CapError
	err := l.update(ctx, key, create, func(a *Account, now time.Time) bool {
		changed := a.expire(now)
		if !a.Capped {
			refused = false
			return changed
		}
		if a.Spent()+a.Held()+r.amount > a.Cap {
			refused = true
			capErr = &CapError{Key: key, Cap: a.Cap.USD(), Spent: a.Spent().USD(), Held: a.Held().USD(), Need: r.amount.USD(), CapBy: a.CapBy}
			if a.Blocked == nil {
				a.Blocked = &Blocked{Since: now, Need: r.amount}
				return true
			}
			return changed
		}
		refused = false
		if a.Holds == nil {
			a.Holds = map[string]Hold{}
		}
		a.Holds[r.id] = Hold{Amount: r.amount, Until: r.until, Holder: l.cfg.Holder}
		a.Blocked = nil
		return true
	})
	switch {
	case errors.Is(err, errNoAccount):
		return false, nil
	case err != nil:
		return false, err
	case refused:
		return false, capErr
	}
	return true, nil
}

// Settle records the call's actual cost (USD) on every account it reserved on and
// releases the rest of the hold. A reservation that lapsed meanwhile is replaced by
// the actual cost. Settle with the full Amount when the cost is unknown (the call's
// outcome is), and with 0 when no call was made or the API refused it. An actual cost
// above the reservation is recorded as is, and logged: the worst case was wrong.
func (r *Reservation) Settle(ctx context.Context, usd float64) error {
	actual := ToNanos(usd)
	if actual > r.amount && len(r.keys) > 0 {
		r.l.log.Warn("a call cost more than its worst case: a cap may be passed by the difference",
			"reserved_usd", r.amount.USD(), "cost_usd", actual.USD())
	}
	var errs []error
	for _, key := range r.keys {
		err := r.l.update(ctx, key, nil, func(a *Account, now time.Time) bool {
			a.expire(now)
			if _, ok := a.Holds[r.id]; ok {
				delete(a.Holds, r.id)
			} else if lp, ok := a.Lapses[r.id]; ok {
				a.Lapsed -= lp.Amount // the real cost replaces the worst case
				delete(a.Lapses, r.id)
			}
			a.Settled += actual
			if actual > 0 {
				a.Calls++
			}
			return true
		})
		if err != nil && !errors.Is(err, errNoAccount) {
			errs = append(errs, fmt.Errorf("settle on %s: %w", key, err))
		}
	}
	r.keys = nil
	return errors.Join(errs...)
}

var errNoAccount = errors.New("no account")

// update applies fn to the account at key with compare-and-set, retrying on
// conflicts with jittered waits. fn returns whether it changed the account. A missing
// key is created from create, or errNoAccount when create is nil.
func (l *Ledger) update(ctx context.Context, key string, create *Account, fn func(a *Account, now time.Time) bool) error {
	for attempt := 0; attempt < l.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			wait := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(attempt, 6), 50*time.Millisecond)) + 1))
			select {
			case <-ctx.Done():
				return fmt.Errorf("spend: %w", ctx.Err())
			case <-time.After(wait):
			}
		}
		e, err := l.kv.Get(ctx, key)
		var a Account
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if create == nil {
				return errNoAccount
			}
			a = *create
		case err != nil:
			return flashpipe.AsTransient(fmt.Errorf("spend: read %s: %w", key, err))
		default:
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				return flashpipe.AsPermanent(fmt.Errorf("spend: account %s is unreadable: %w", key, err))
			}
			rev = e.Revision()
		}
		now := time.Now()
		if !fn(&a, now) && rev != 0 {
			return nil
		}
		a.Updated = now.UTC()
		raw, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("spend: encode account: %w", err)
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, raw)
		} else {
			_, err = l.kv.Update(ctx, key, raw, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return flashpipe.AsTransient(fmt.Errorf("spend: write %s: %w", key, err))
		}
	}
	return flashpipe.AsTransient(ErrContention)
}

// CapError is a reservation refused by a cap.
type CapError struct {
	// Key is the account: batch.<id> or period.<start>.
	Key                    string
	Cap, Spent, Held, Need float64
	CapBy                  string
}

func (e *CapError) Error() string {
	return fmt.Sprintf("spend cap $%.4f of %s reached: spent $%.4f, held by calls in flight $%.4f, the next call needs up to $%.4f",
		e.Cap, e.Key, e.Spent, e.Held, e.Need)
}

// Is makes errors.Is(err, ErrCapReached) true.
func (e *CapError) Is(target error) bool { return target == ErrCapReached }

// Batch returns the batch's account (false: the batch has no cap).
func (l *Ledger) Batch(ctx context.Context, batchID string) (Account, bool, error) {
	return l.account(ctx, batchKey(batchID))
}

// Period returns the period cap's configuration and the current period's account
// (false: no period cap is set).
func (l *Ledger) Period(ctx context.Context) (PeriodConfig, Account, bool, error) {
	pc, err := l.readPeriodConfig(ctx)
	if err != nil || pc == nil {
		return PeriodConfig{}, Account{}, false, err
	}
	start, end := PeriodBounds(time.Now(), pc.Period)
	a, ok, err := l.account(ctx, periodKey(start))
	if err != nil {
		return *pc, a, true, err
	}
	if !ok {
		a = Account{Cap: pc.Cap, Capped: true, CapBy: pc.CapBy, Start: start, End: end}
	}
	a.expire(time.Now())
	return *pc, a, true, nil
}

func (l *Ledger) account(ctx context.Context, key string) (Account, bool, error) {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Account{}, false, nil
	}
	if err != nil {
		return Account{}, false, fmt.Errorf("spend: read %s: %w", key, err)
	}
	var a Account
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return Account{}, false, fmt.Errorf("spend: account %s is unreadable: %w", key, err)
	}
	a.expire(time.Now())
	return a, true, nil
}

// SetBatchCap sets the batch's cap to usd (by: ByManifest, ByCommand), creating its
// account if needed, and clears its pause: items held by the cap go through on their
// next delivery if the new cap allows. A cap below what is spent and held pauses the
// batch; calls in flight still settle.
func (l *Ledger) SetBatchCap(ctx context.Context, batchID, by string, usd float64) (Account, error) {
	return l.SetBatchCapAfter(ctx, batchID, by, usd, 0)
}

// SetBatchCapAfter is SetBatchCap for a batch that may have run without a cap:
// spentBefore is what its results report it spent so far, and counts against the cap
// when this is the batch's first cap (a capped batch's calls are already in the
// account).
func (l *Ledger) SetBatchCapAfter(ctx context.Context, batchID, by string, usd, spentBefore float64) (Account, error) {
	if err := flashpipe.ValidateBatchID(batchID); err != nil {
		return Account{}, err
	}
	if err := ValidateCap(usd); err != nil {
		return Account{}, err
	}
	var out Account
	err := l.update(ctx, batchKey(batchID), &Account{}, func(a *Account, now time.Time) bool {
		a.expire(now)
		if !a.Capped && spentBefore > 0 {
			a.Before = max(a.Before, ToNanos(spentBefore))
		}
		a.Cap, a.Capped, a.CapBy, a.Blocked = ToNanos(usd), true, by, nil
		out = *a
		return true
	})
	l.forgetUncapped(batchID)
	return out, err
}

// ValidateCap checks a cap in USD: above 0 and at most flashpipe.MaxCostLimit.
func ValidateCap(usd float64) error {
	if !(usd > 0) || math.IsInf(usd, 0) || usd > flashpipe.MaxCostLimit {
		return fmt.Errorf("max cost %v: want an amount of USD above 0 and at most %g", usd, flashpipe.MaxCostLimit)
	}
	return nil
}

// SetPeriodCap sets the overall cap: at most usd per period, shared by every replica
// (period 0: the one already set, else DefaultPeriod). by ByFlag does not replace a
// cap set ByCommand (an operator's command outlives a restart with the old flag). The
// current period's account gets the new cap, and its pause is cleared.
func (l *Ledger) SetPeriodCap(ctx context.Context, by string, usd float64, period time.Duration) (PeriodConfig, error) {
	if err := ValidateCap(usd); err != nil {
		return PeriodConfig{}, err
	}
	if period < 0 || (period > 0 && period < time.Minute) {
		return PeriodConfig{}, fmt.Errorf("spend period %s: want at least 1m", period)
	}
	var pc PeriodConfig
	skipped := false
	err := l.updateConfig(ctx, func(cur *PeriodConfig) (PeriodConfig, bool) {
		if cur != nil && by == ByFlag && cur.CapBy == ByCommand {
			pc, skipped = *cur, true
			return pc, false
		}
		pc = PeriodConfig{Cap: ToNanos(usd), Period: period, CapBy: by}
		if pc.Period == 0 {
			pc.Period = DefaultPeriod
			if cur != nil {
				pc.Period = cur.Period
			}
		}
		return pc, true
	})
	if err != nil {
		return pc, err
	}
	if skipped {
		l.log.Info("period spend cap set by a command is kept; the flag's is not applied", "cap_usd", pc.Cap.USD(), "period", pc.Period)
		return pc, nil
	}
	start, end := PeriodBounds(time.Now(), pc.Period)
	err = l.update(ctx, periodKey(start), &Account{Start: start, End: end}, func(a *Account, now time.Time) bool {
		a.expire(now)
		a.Cap, a.Capped, a.CapBy, a.Blocked = pc.Cap, true, pc.CapBy, nil
		return true
	})
	l.mu.Lock()
	l.period, l.periodAt = &pc, time.Now()
	l.mu.Unlock()
	return pc, err
}

// updateConfig changes the period configuration with compare-and-set.
func (l *Ledger) updateConfig(ctx context.Context, fn func(cur *PeriodConfig) (PeriodConfig, bool)) error {
	for attempt := 0; attempt < l.cfg.MaxRetries; attempt++ {
		e, err := l.kv.Get(ctx, periodConfigKey)
		var cur *PeriodConfig
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("spend: read %s: %w", periodConfigKey, err)
		default:
			cur = new(PeriodConfig)
			if err := json.Unmarshal(e.Value(), cur); err != nil {
				return fmt.Errorf("spend: %s is unreadable: %w", periodConfigKey, err)
			}
			rev = e.Revision()
		}
		next, write := fn(cur)
		if !write {
			return nil
		}
		raw, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("spend: encode %s: %w", periodConfigKey, err)
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, periodConfigKey, raw)
		} else {
			_, err = l.kv.Update(ctx, periodConfigKey, raw, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("spend: write %s: %w", periodConfigKey, err)
		}
	}
	return flashpipe.AsTransient(ErrContention)
}

// periodConfigTTL is how long a replica uses the period configuration it read: a new
// period's account is created from it (a command also updates the current account
// directly, so a change applies at once).
const periodConfigTTL = 2 * time.Second

// periodConfig returns the period cap's configuration (nil: none), read at most every
// periodConfigTTL.
func (l *Ledger) periodConfig(ctx context.Context) (*PeriodConfig, error) {
	l.mu.Lock()
	if !l.periodAt.IsZero() && time.Since(l.periodAt) < periodConfigTTL {
		pc := l.period
		l.mu.Unlock()
		return pc, nil
	}
	l.mu.Unlock()
	pc, err := l.readPeriodConfig(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.period, l.periodAt = pc, time.Now()
	l.mu.Unlock()
	return pc, nil
}

func (l *Ledger) readPeriodConfig(ctx context.Context) (*PeriodConfig, error) {
	e, err := l.kv.Get(ctx, periodConfigKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, flashpipe.AsTransient(fmt.Errorf("spend: read %s: %w", periodConfigKey, err))
	}
	pc := new(PeriodConfig)
	if err := json.Unmarshal(e.Value(), pc); err != nil {
		return nil, flashpipe.AsPermanent(fmt.Errorf("spend: %s is unreadable: %w", periodConfigKey, err))
	}
	if pc.Period <= 0 {
		pc.Period = DefaultPeriod
	}
	return pc, nil
}

// Open opens the ledger's bucket without creating it (for readers: the scheduler,
// status); it fails with jetstream.ErrBucketNotFound when no processor created it yet.
func Open(ctx context.Context, js jetstream.JetStream, c *contract.Contract, cfg Config) (*Ledger, error) {
	if js == nil || c == nil {
		return nil, errors.New("spend: Open needs a JetStream and a contract")
	}
	cfg = cfg.withDefaults(c)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("spend: open bucket %s: %w", cfg.Bucket, err)
	}
	return &Ledger{kv: kv, cfg: cfg, log: cfg.Logger.With("component", "spend"), uncapped: map[string]time.Time{}}, nil
}

// Held reports which of the batches are paused by a spend cap: their own, or the
// current period's (then every batch is).
func (l *Ledger) Held(ctx context.Context, batches []string) (map[string]bool, error) {
	out := make(map[string]bool, len(batches))
	_, pa, ok, err := l.Period(ctx)
	if err != nil {
		return nil, err
	}
	all := ok && pa.Paused()
	for _, b := range batches {
		if all {
			out[b] = true
			continue
		}
		a, ok, err := l.Batch(ctx, b)
		if err != nil {
			return nil, err
		}
		out[b] = ok && a.Paused()
	}
	return out, nil
}
