package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/beacon"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Store, when set, is where WaitStored, Status, Batches, Results and the dead
	// letters read, and Submit checks a batch id against it too. Without it a client
	// reads the ordered stream only (enough to submit, follow and write the output).
	Store  flashpipe.Store
	Logger *slog.Logger
}

// Client is the client side of batches: what every door (the CLI, the HTTP API, a
// test) calls to submit a batch, follow it, read its results and status, retry it.
// It never creates or changes streams. It is safe for concurrent use.
type Client struct {
	js    jetstream.JetStream
	c     *contract.Contract
	store flashpipe.Store
	pub   *ingest.Publisher
	log   *slog.Logger
}

// NewClient returns a client of the pipeline behind js.
func NewClient(js jetstream.JetStream, c *contract.Contract, cfg ClientConfig) (*Client, error) {
	if js == nil || c == nil {
		return nil, errors.New("app: NewClient needs a JetStream and a contract")
	}
	log := orDiscard(cfg.Logger)
	pub, err := ingest.New(js, c, ingest.Config{Store: cfg.Store, Logger: log})
	if err != nil {
		return nil, err
	}
	return &Client{js: js, c: c, store: cfg.Store, pub: pub, log: log.With("component", "client")}, nil
}

// Contract returns the client's contract.
func (c *Client) Contract() *contract.Contract { return c.c }

// Store returns the client's store (nil when it has none).
func (c *Client) Store() flashpipe.Store { return c.store }

// ErrNoStoreConfigured is returned by the methods that need a store when the client
// has none.
var ErrNoStoreConfigured = errors.New("no database configured")

// Submit validates and publishes a batch (see ingest.Publisher.Submit): a batch id
// names one batch for ever; the same items again publish nothing new.
func (c *Client) Submit(ctx context.Context, b ingest.Batch) (*ingest.Submission, error) {
	return c.pub.Submit(ctx, b)
}

// Retry starts a generation of a complete batch's failed items (ingest.Publisher.Retry).
func (c *Client) Retry(ctx context.Context, batchID string) (*ingest.Submission, error) {
	return c.pub.Retry(ctx, batchID)
}

// Reprocess runs a complete batch again from the items stream (ingest.Publisher.Reprocess).
func (c *Client) Reprocess(ctx context.Context, batchID string) (*ingest.Submission, error) {
	return c.pub.Reprocess(ctx, batchID)
}

// Manifest returns a batch's latest manifest, or an error wrapping
// flashpipe.ErrNotFound.
func (c *Client) Manifest(ctx context.Context, batchID string) (flashpipe.Manifest, error) {
	return c.pub.Manifest(ctx, batchID)
}

// Progress is a batch's progress as its ordered log shows it, with what the results
// read so far cost.
type Progress struct {
	batchlog.Progress
	// InFlight is how many items the processors hold (of every batch).
	InFlight int
	Usage    flashpipe.Usage
	// Paused, when set, says why the batch's items are held and how to go on (a spend
	// cap reached: see SpendAccount.Reason).
	Paused string
	// ProviderBatches, for a batch in batch mode, sums up the provider batches serving
	// it (see ProviderBatchesLine); empty otherwise.
	ProviderBatches string
}

// FollowOptions say what Follow does along the way.
type FollowOptions struct {
	// OnProgress is called after every event of the log (often: keep it cheap).
	OnProgress func(Progress)
	// OnResult receives the final result of every item, in ascending Seq: while the
	// batch runs for a first generation, once it is complete for a later one (whose
	// results replace earlier ones). Nil: headers only, which is cheaper.
	OnResult func(flashpipe.Result) error
}

// Follow follows generation m of a batch to its completion in the ordered log (see
// FollowOptions) and returns its summary. It needs NATS only.
func (c *Client) Follow(ctx context.Context, m flashpipe.Manifest, opts FollowOptions) (*Summary, error) {
	sum := &Summary{BatchID: m.BatchID, Items: m.Count}
	var (
		mu sync.Mutex // pr, and the calls of OnProgress
		pr Progress
	)
	inflight := c.watchInFlight(ctx, opts.OnProgress != nil)
	onProgress := func(p batchlog.Progress) {
		if opts.OnProgress != nil {
			mu.Lock()
			defer mu.Unlock()
			pr.Progress, pr.InFlight = p, int(inflight.Load())
			if p.Complete {
				pr.InFlight, pr.Paused = 0, ""
			}
			opts.OnProgress(pr)
		}
	}
	if opts.OnProgress != nil {
		// A batch paused at a spend cap, or waiting on provider batches, sends no
		// events: say so when it happens.
		batchMode := m.Settings[flashpipe.SettingAPIMode] == flashpipe.APIModeBatch
		stop := c.watchWaits(ctx, m.BatchID, batchMode, func(paused, providers string) {
			mu.Lock()
			defer mu.Unlock()
			if (paused != pr.Paused || providers != pr.ProviderBatches) && !pr.Complete {
				pr.Paused, pr.ProviderBatches = paused, providers
				opts.OnProgress(pr)
			}
		})
		defer stop()
	}
	onResult := func(r flashpipe.Result) error {
		ours := r.Generation >= m.Generation
		sum.add(r, ours)
		if ours {
			mu.Lock() // the cap and provider-batch watchers read pr too
			pr.Usage = pr.Usage.Add(r.Usage)
			mu.Unlock()
		}
		if opts.OnResult != nil {
			return opts.OnResult(r)
		}
		return nil
	}
	var err error
	if m.Generation == 0 {
		_, err = batchlog.Follow(ctx, c.js, c.c, m, onProgress, onResult)
	} else if _, err = batchlog.Watch(ctx, c.js, c.c, m, onProgress); err == nil {
		err = batchlog.Results(ctx, c.js, c.c, m.BatchID, onResult)
	}
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", m.BatchID, err)
	}
	return sum, nil
}

// pausedPoll is how often a followed batch's spend caps (and provider batches) are
// looked at.
const pausedPoll = 2 * time.Second

// watchWaits calls changed every pausedPoll, until stop is called (which waits for
// it), with why the batch is paused by a spend cap (its own or the period's; empty:
// not paused) and, with providers, ProviderBatchesLine of its provider batches.
func (c *Client) watchWaits(ctx context.Context, batchID string, providers bool, changed func(paused, providers string)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(pausedPoll)
		defer t.Stop()
		line := ""
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			reason := ""
			if a, ok, err := c.BatchSpend(ctx, batchID); err == nil && ok {
				reason = a.Reason()
			}
			if reason == "" {
				if a, ok, err := c.PeriodSpend(ctx); err == nil && ok {
					reason = a.Reason()
				}
			}
			if providers {
				if pbs, err := c.ProviderBatches(ctx, batchID); err == nil {
					line = ProviderBatchesLine(pbs)
				}
			}
			if ctx.Err() == nil {
				changed(reason, line)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// inFlight holds the processors' items in flight, polled while a batch is followed.
type inFlight struct{ n atomicInt }

// watchInFlight polls how many items the processors hold (their consumer's ack
// pending) until ctx ends; when poll is false it polls nothing.
func (c *Client) watchInFlight(ctx context.Context, poll bool) *atomicInt {
	n := new(atomicInt)
	if !poll {
		return n
	}
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := c.InFlight(ctx); err == nil {
				n.Store(int64(v))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return n
}

// InFlight returns how many items the processors hold now, across all replicas.
func (c *Client) InFlight(ctx context.Context) (int, error) {
	cons, err := c.js.Consumer(ctx, c.c.ReadyStream(), processor.DefaultDurable)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumAckPending, nil
}

// WaitStored waits until the store holds generation gen (or a later one) of a batch
// complete.
func (c *Client) WaitStored(ctx context.Context, batchID string, gen int) (flashpipe.BatchStatus, error) {
	if c.store == nil {
		return flashpipe.BatchStatus{}, ErrNoStoreConfigured
	}
	return WaitStored(ctx, c.store, batchID, gen)
}

// WaitStored waits until st holds generation gen (or a later one) of a batch
// complete, polling it.
func WaitStored(ctx context.Context, st flashpipe.Store, batchID string, gen int) (flashpipe.BatchStatus, error) {
	for {
		status, err := st.Batch(ctx, batchID)
		if err == nil && status.State == flashpipe.BatchComplete && status.Manifest.Generation >= gen {
			return status, nil
		}
		if err != nil && !errors.Is(err, flashpipe.ErrNotFound) {
			return status, err
		}
		select {
		case <-ctx.Done():
			return status, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Results calls fn with the final result of every item of a batch in ascending Seq:
// from the store when the client has one, else from the ordered log (complete
// batches only).
func (c *Client) Results(ctx context.Context, batchID string, filter flashpipe.ResultFilter, fn func(flashpipe.Result) error) error {
	if c.store != nil {
		return c.store.Results(ctx, batchID, filter, fn)
	}
	return batchlog.Results(ctx, c.js, c.c, batchID, func(r flashpipe.Result) error {
		if filter.Status != "" && r.Status != filter.Status {
			return nil
		}
		return fn(r)
	})
}

// Replay rewrites the store rows of a batch from the ordered stream (see
// sink.Sink.Replay) and returns the number of events applied.
func (c *Client) Replay(ctx context.Context, batchID string) (int, error) {
	if c.store == nil {
		return 0, ErrNoStoreConfigured
	}
	snk, err := sink.New(c.js, c.c, c.store, sink.Config{Logger: c.log})
	if err != nil {
		return 0, err
	}
	return snk.Replay(ctx, batchID)
}

// OrderedBatches lists the ids of the batches with events in the ordered stream.
func (c *Client) OrderedBatches(ctx context.Context) ([]string, error) {
	st, err := c.js.Stream(ctx, c.c.OrderedStream())
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.c.AllOrdered()))
	if err != nil {
		return nil, err
	}
	prefix := c.c.OrderedSubject("")
	ids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		ids = append(ids, strings.TrimPrefix(subj, prefix))
	}
	sortStrings(ids)
	return ids, nil
}

// ServiceState is what a live service replica says of itself (see internal/beacon).
type ServiceState = beacon.State

// Services lists the live service replicas and whether they are blocked.
func (c *Client) Services(ctx context.Context) ([]ServiceState, error) {
	return beacon.List(ctx, c.js, c.c)
}

// BatchReport is a stored batch's status with its failed items.
type BatchReport struct {
	flashpipe.BatchStatus
	// Metrics are the metrics the store keeps for the batch (nil when a store could
	// not read them: the status is shown all the same).
	Metrics     *flashpipe.BatchMetrics `json:"metrics,omitempty"`
	FailedItems []FailedItem            `json:"failed_items"`
}

// Report reads a batch's status, metrics and failed items from st.
func Report(ctx context.Context, st flashpipe.Store, batchID string) (*BatchReport, error) {
	b, err := st.Batch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	r := &BatchReport{BatchStatus: b, FailedItems: []FailedItem{}}
	m, err := st.Metrics(ctx, batchID)
	switch {
	case err == nil:
		r.Metrics = &m
	case !errors.Is(err, flashpipe.ErrNotFound):
		return nil, err
	}
	err = st.Results(ctx, batchID, flashpipe.ResultFilter{Status: flashpipe.StatusFailed}, func(res flashpipe.Result) error {
		r.FailedItems = append(r.FailedItems, FailedItemOf(res))
		return nil
	})
	return r, err
}

// Metrics reads the metrics the client's store keeps for a batch (see
// flashpipe.BatchMetrics): an error wrapping flashpipe.ErrNotFound when the batch is
// not stored.
func (c *Client) Metrics(ctx context.Context, batchID string) (flashpipe.BatchMetrics, error) {
	if c.store == nil {
		return flashpipe.BatchMetrics{}, ErrNoStoreConfigured
	}
	return c.store.Metrics(ctx, batchID)
}

// Report reads a batch's status and failed items from the client's store.
func (c *Client) Report(ctx context.Context, batchID string) (*BatchReport, error) {
	if c.store == nil {
		return nil, ErrNoStoreConfigured
	}
	return Report(ctx, c.store, batchID)
}

// DeadLetters lists the events the store set aside, of one batch or (batchID empty)
// of all.
func (c *Client) DeadLetters(ctx context.Context, batchID string) ([]flashpipe.DeadLetter, error) {
	if c.store == nil {
		return nil, ErrNoStoreConfigured
	}
	return c.store.DeadLetters(ctx, batchID)
}

// ReplayDeadLetters writes the events set aside in the client's store again (see the
// function ReplayDeadLetters).
func (c *Client) ReplayDeadLetters(ctx context.Context, batchID string) (written, refused int, err error) {
	if c.store == nil {
		return 0, 0, ErrNoStoreConfigured
	}
	return ReplayDeadLetters(ctx, c.store, batchID)
}

// ReplayDeadLetters writes the events set aside in st (of one batch, or of all) again,
// one by one, and resolves those it takes now. It returns how many were written and
// how many it still refuses (with the first refusal).
func ReplayDeadLetters(ctx context.Context, st flashpipe.Store, batchID string) (written, refused int, err error) {
	letters, err := st.DeadLetters(ctx, batchID)
	if err != nil {
		return 0, 0, err
	}
	var first error
	for _, d := range letters {
		if err := st.Apply(ctx, []flashpipe.Event{d.Event}); err != nil {
			if !flashpipe.IsPermanent(err) {
				return written, refused, err
			}
			refused++
			if first == nil {
				first = fmt.Errorf("dead letter %d (batch %s): %w", d.ID, d.Event.BatchID(), err)
			}
			continue
		}
		if err := st.Resolve(ctx, []int64{d.ID}); err != nil {
			return written, refused, err
		}
		written++
	}
	return written, refused, first
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// DefaultBatchID names a batch after its file (or "stdin") and the content hash of its
// items (ingest.Items.Hash, flashpipe.HashItems): submitting the same file again is
// the same batch (no new work), a changed file is a new one.
func DefaultBatchID(path, contentHash string) string {
	stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	stem = strings.Trim(unsafeID.ReplaceAllString(stem, "-"), "-_")
	if len(stem) > 40 {
		stem = stem[:40]
	}
	if stem == "" {
		stem = "batch"
	}
	return stem + "-" + contentHash[:10]
}
