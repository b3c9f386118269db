package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// errRelease marks an item given back because the circuit breaker is open: it is
// naked with a delay, and the delivery does not count against its attempts.
var errRelease = errors.New("circuit breaker open: item released")

// breaker opens after Threshold consecutive outage failures of the API (network
// errors, timeouts, 5xx): while open the replica takes no new items and releases the
// ones in hand; after Timeout one call probes (half-open) and closes it on success.
// Rate limiting (429), account errors and bad requests are not outages.
type breaker struct {
	cb      *gobreaker.CircuitBreaker[*llm.Response]
	timeout time.Duration
	opened  atomic.Int64 // unix nanos of the last opening
	state   atomic.Int32
	// trips counts the openings; claimed, those already charged to an item's usage
	// (see call).
	trips, claimed atomic.Int64
}

func newBreaker(threshold int, timeout time.Duration, log *slog.Logger, m *Metrics) *breaker {
	b := &breaker{timeout: timeout}
	b.cb = gobreaker.NewCircuitBreaker[*llm.Response](gobreaker.Settings{
		Name:        "api",
		MaxRequests: 1,
		Timeout:     timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(threshold) },
		IsSuccessful: func(err error) bool {
			return err == nil || !isOutage(err)
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			b.state.Store(int32(to))
			m.breakerState(int(to))
			switch to {
			case gobreaker.StateOpen:
				b.opened.Store(time.Now().UnixNano())
				b.trips.Add(1)
				log.Error("circuit breaker open: the API looks down; taking no new items, releasing those in hand",
					"from", from.String(), "retry_in", timeout)
			case gobreaker.StateHalfOpen:
				log.Warn("circuit breaker half-open: probing the API")
			case gobreaker.StateClosed:
				log.Info("circuit breaker closed: the API answers again")
			}
		},
	})
	return b
}

// isOutage reports whether err says the API is unreachable or failing.
func isOutage(err error) bool {
	var ae *llm.APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == 408
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return errors.Is(err, llm.ErrMalformedResponse) || errors.Is(err, llm.ErrEmptyContent)
}

// call makes one API call through the breaker; an open breaker returns errRelease.
// A failed call during which the breaker opened adds 1 to *trips, unless another
// call in flight already took that opening: each opening is charged to exactly one
// failed call (the one that tripped it, unless two failed at the same instant).
func (b *breaker) call(fn func() (*llm.Response, error), trips *int) (*llm.Response, error) {
	before := b.trips.Load()
	resp, err := b.cb.Execute(fn)
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return nil, errRelease
	}
	if err != nil && b.trips.Load() > before && b.claimTrip() {
		*trips++
	}
	return resp, err
}

// claimTrip takes one opening not yet charged to a call, if there is one.
func (b *breaker) claimTrip() bool {
	for {
		c := b.claimed.Load()
		if c >= b.trips.Load() {
			return false
		}
		if b.claimed.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

// open reports whether the breaker is open (State also moves it to half-open once
// the timeout has passed).
func (b *breaker) open() bool { return b.cb.State() == gobreaker.StateOpen }

// waitNotOpen blocks while the breaker is open.
func (b *breaker) waitNotOpen(ctx context.Context) error {
	for b.open() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(b.releaseDelay(), 250*time.Millisecond)):
		}
	}
	return nil
}

// releaseDelay is how long a released item should wait: until the breaker half-opens,
// plus jitter so the released items do not all come back at once.
func (b *breaker) releaseDelay() time.Duration {
	left := b.timeout - time.Since(time.Unix(0, b.opened.Load()))
	left = max(left, 100*time.Millisecond)
	return left + rand.N(b.timeout/4+1)
}

// ledger counts the releases of each item (deliveries that must not count as
// attempts) in a KV bucket, so a redelivery can tell them from crashes. Entries expire
// after a week.
type ledger struct {
	kv jetstream.KeyValue
}

const ledgerTTL = 7 * 24 * time.Hour

// LedgerBucketSuffix names the release ledger's KV bucket after the contract's
// prefix: FLASHPIPE_RELEASES.
const LedgerBucketSuffix = "RELEASES"

// LedgerBucket is the configuration of the release ledger's KV bucket.
func LedgerBucket(c *contract.Contract) jetstream.KeyValueConfig {
	cfg := c.Config()
	return jetstream.KeyValueConfig{
		Bucket: c.Name(LedgerBucketSuffix), Description: "flashpipe: items released by an open circuit breaker",
		History: 1, TTL: ledgerTTL, Storage: c.StorageType(), Replicas: cfg.Replicas,
	}
}

func openLedger(ctx context.Context, js jetstream.JetStream, c *contract.Contract, log *slog.Logger) (*ledger, error) {
	kv, err := contract.OpenKeyValue(ctx, js, LedgerBucket(c), log)
	if err != nil {
		return nil, fmt.Errorf("release ledger: %w", err)
	}
	return &ledger{kv: kv}, nil
}

func ledgerKey(wi flashpipe.WorkItem) string {
	return wi.BatchID + "." + strconv.FormatInt(wi.Position, 10) + "." + strconv.Itoa(wi.Generation)
}

// ledgerEntry is what the ledger keeps of an item: its releases (deliveries that do
// not count as attempts), and, for its result's usage, the releases by an open
// breaker and the openings of the breaker its deliveries caused (see releaseError).
// It is stored as "RELEASES" or "RELEASES TRIPS BREAKER_RELEASES".
type ledgerEntry struct {
	releases, trips, breakerReleases int
}

func parseLedger(v []byte) (ledgerEntry, error) {
	var e ledgerEntry
	fields := strings.Fields(string(v))
	if len(fields) != 1 && len(fields) != 3 {
		return e, fmt.Errorf("release ledger entry %q: want 1 or 3 numbers", v)
	}
	for i, p := range []*int{&e.releases, &e.trips, &e.breakerReleases}[:len(fields)] {
		n, err := strconv.Atoi(fields[i])
		if err != nil {
			return ledgerEntry{}, fmt.Errorf("release ledger entry %q: %w", v, err)
		}
		*p = n
	}
	return e, nil
}

func (e ledgerEntry) format() []byte {
	if e.trips == 0 && e.breakerReleases == 0 {
		return []byte(strconv.Itoa(e.releases))
	}
	return fmt.Appendf(nil, "%d %d %d", e.releases, e.trips, e.breakerReleases)
}

// entry returns what the ledger holds of the item (zero when nothing).
func (l *ledger) entry(ctx context.Context, wi flashpipe.WorkItem) (ledgerEntry, error) {
	e, err := l.kv.Get(ctx, ledgerKey(wi))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ledgerEntry{}, nil
	}
	if err != nil {
		return ledgerEntry{}, err
	}
	return parseLedger(e.Value())
}

// addEntry adds d to the item's entry.
func (l *ledger) addEntry(ctx context.Context, wi flashpipe.WorkItem, d ledgerEntry) error {
	key := ledgerKey(wi)
	for range 10 {
		e, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err = l.kv.Create(ctx, key, d.format()); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
				return err
			}
		case err != nil:
			return err
		default:
			n, _ := parseLedger(e.Value())
			n = ledgerEntry{n.releases + d.releases, n.trips + d.trips, n.breakerReleases + d.breakerReleases}
			if _, err = l.kv.Update(ctx, key, n.format(), e.Revision()); err == nil || !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return err
			}
		}
	}
	return errors.New("release ledger: too many concurrent updates")
}

// releaseError is errRelease from a delivery whose failed calls opened the breaker
// trips times: the ledger keeps the count for the item's result (the delivery's own
// usage is dropped with it).
type releaseError struct{ trips int }

func (e *releaseError) Error() string { return errRelease.Error() }
func (e *releaseError) Unwrap() error { return errRelease }

// tripsOf returns the breaker openings a release or requeue error carries.
func tripsOf(err error) int {
	var re *releaseError
	var rq *requeueError
	switch {
	case errors.As(err, &re):
		return re.trips
	case errors.As(err, &rq):
		return rq.trips
	}
	return 0
}
