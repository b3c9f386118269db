package processor

// Batch mode: the answers an item still needs are asked of the provider's batch API
// (half price, within hours) instead of the synchronous one.
//
// How. A worker holding an item in batch mode looks each stage's answer up in the
// answer cache; if it is not there it hands the request to this replica's gatherer
// and waits. The gatherer sends what it collected as one provider batch when it holds
// BatchConfig.Size requests, when the oldest waited BatchConfig.Wait, or when every
// worker of the replica is waiting (nothing more can come). Stage 2 requests are made
// only once the stage 1 answer is in, so stage 1 goes first, then stage 2 with the
// stage 1 answers. Answers go into the same cache and results into the same RESULTS
// stream as in sync mode, so ordering, the sink, status, retry and exports do not
// change.
//
// Durability: never pay twice. Each request is claimed in the PROVIDER_BATCHES
// bucket (key r.<hash of its cache key>, with the request itself) and the provider
// batch is recorded there (b.<key>) BEFORE it is submitted; the key is the batch's
// idempotency key, in its metadata and in every custom_id. The record moves
// gathering → submitting → submitted → done by compare-and-set, and every step that
// spends money is guarded by one:
//
//   - a gatherer that died before submitting leaves a record gathering (any waiter
//     abandons it after ClaimGrace, by compare-and-set, and re-asks) or submitting;
//   - a record left submitting (a crash between the submit and recording the
//     provider's id, or an answer lost on the way) is recovered by any replica after
//     SubmitTimeout: it asks the provider for a batch carrying the key (Find) and
//     adopts it; only when the provider has none does it submit, once (compare-and-set);
//   - a submitted batch is polled by every replica; the first to see it terminal
//     writes each request's outcome into its claim (answered, failed, or sync) and
//     marks the record done. Requests that failed in the batch are retried in a child
//     batch (key <key>.r<n>, created once) up to MaxRetries times; requests an expired
//     or cancelled batch left unanswered, and failures after the retries, go to the
//     synchronous API (through the cache's own claims: still paid once).
//
// Acking: an item waiting for a provider batch stays unacknowledged and is kept
// alive with progress acks (InProgress every AckWait/3), so it is not redelivered
// while its processor lives, and its waiting does not count as a delivery. If the
// processor dies, the item is redelivered after AckWait to any replica, which finds
// the request's claim and waits for the same provider batch: nothing is submitted
// twice. The trade-off: held items count against the consumer's MaxAckPending
// (ConcurrentMax), so a provider batch holds at most ConcurrentMax items across
// replicas, and while a batch-mode batch waits, sync batches share what is left.
// Run batch mode with ConcurrentMax (and Workers) at least the batch size. The
// alternative, acknowledging items once their requests are claimed and publishing
// their results from the claims, frees the consumer but moves the item itself into
// the bucket and needs a second dispatcher; holding the message keeps one owner per
// item and every existing guarantee (ordering, deliveries, retry) unchanged.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchapi"
	"github.com/flashpipe/flashpipe/internal/cache"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/llm"
)

// API modes: per processor (BatchConfig.Mode) and per batch (the manifest setting
// flashpipe.SettingAPIMode, carried to the processors in the ready message's
// contract.HeaderAPIMode).
const (
	ModeSync  = flashpipe.APIModeSync
	ModeBatch = flashpipe.APIModeBatch
)

// Defaults for BatchConfig.
const (
	DefaultBatchSize          = 1000
	DefaultBatchWait          = 30 * time.Second
	DefaultBatchPollInterval  = 30 * time.Second
	DefaultBatchSubmitTimeout = 5 * time.Minute
	DefaultBatchClaimGrace    = 2 * time.Minute
	DefaultBatchMaxRetries    = 2
)

// BatchConfig configures batch mode.
type BatchConfig struct {
	// Mode is the replica's API mode for batches whose manifest chooses none:
	// ModeSync (the default) or ModeBatch.
	Mode string
	// Provider is the provider's batch API; nil means batch mode is not available
	// (items of batch-mode batches are processed in sync mode, with a warning).
	Provider batchapi.Provider
	// Size is the most requests in one provider batch (DefaultBatchSize; at most
	// batchapi.MaxRequests).
	Size int
	// Wait is the longest a request waits to be sent in a batch (DefaultBatchWait).
	Wait time.Duration
	// PollInterval is how often the replica asks the provider about its batches
	// (DefaultBatchPollInterval).
	PollInterval time.Duration
	// SubmitTimeout is how long after a record was written submitting, with no
	// provider id, another replica looks for the batch at the provider and, when it
	// is not there, submits it (DefaultBatchSubmitTimeout). It must exceed the API
	// client's timeout.
	SubmitTimeout time.Duration
	// ClaimGrace is how long a request may stay claimed by a batch still gathering
	// before a waiting item abandons that batch (DefaultBatchClaimGrace).
	ClaimGrace time.Duration
	// MaxRetries is how many child batches retry the requests that failed in a
	// provider batch before they go to the sync API (DefaultBatchMaxRetries).
	MaxRetries int
}

func (c BatchConfig) withDefaults() BatchConfig {
	c.Mode = cmp.Or(c.Mode, ModeSync)
	c.Size = cmp.Or(c.Size, DefaultBatchSize)
	c.Wait = cmp.Or(c.Wait, DefaultBatchWait)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultBatchPollInterval)
	c.SubmitTimeout = cmp.Or(c.SubmitTimeout, DefaultBatchSubmitTimeout)
	c.ClaimGrace = cmp.Or(c.ClaimGrace, DefaultBatchClaimGrace)
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultBatchMaxRetries
	}
	return c
}

func (c BatchConfig) validate() error {
	switch {
	case flashpipe.ValidateAPIMode(c.Mode) != nil:
		return fmt.Errorf("processor: Config.Batch.Mode: %w", flashpipe.ValidateAPIMode(c.Mode))
	case c.Mode == ModeBatch && c.Provider == nil:
		return errors.New("processor: Config.Batch.Mode is batch but Config.Batch.Provider is nil")
	case c.Size < 1 || c.Size > batchapi.MaxRequests:
		return fmt.Errorf("processor: Config.Batch.Size must be 1 to %d, got %d", batchapi.MaxRequests, c.Size)
	case c.Wait <= 0 || c.PollInterval <= 0 || c.SubmitTimeout <= 0 || c.ClaimGrace <= 0:
		return errors.New("processor: Config.Batch.Wait, PollInterval, SubmitTimeout and ClaimGrace must be positive")
	case c.MaxRetries < 0:
		return fmt.Errorf("processor: Config.Batch.MaxRetries must not be negative, got %d", c.MaxRetries)
	}
	return nil
}

// answerStore is the answer cache as batch mode needs it: a look-up that never waits
// and never pays (internal/cache.Cache).
type answerStore interface {
	Get(ctx context.Context, key string) (cache.Entry, bool, error)
}

// batchMode is one replica's batch machinery: the gatherer, the poller and the store.
type batchMode struct {
	p     *Processor
	cfg   BatchConfig
	api   batchapi.Provider
	store *batchStore
	get   answerStore
	log   *slog.Logger

	mu      sync.Mutex
	queue   map[groupKey]*group
	waiting int                    // workers waiting for a batch answer
	changed chan struct{}          // closed (and replaced) when a record becomes final
	final   map[string]bool        // records known final (pollLoop's own)
	holds   map[string][]heldSpend // spend reservations by provider batch key
	kick    chan struct{}          // wakes the gatherer
}

type groupKey struct {
	stage int
	model string
}

type group struct {
	since time.Time
	reqs  []pendingRequest
	seen  map[string]bool
}

type pendingRequest struct {
	hash, cacheKey, batchID string
	stage                   int
	req                     llm.Request
}

// apiModeCtx carries an item's API mode from handle to Process.
type apiModeCtx struct{}

func withAPIMode(ctx context.Context, mode string) context.Context {
	return context.WithValue(ctx, apiModeCtx{}, mode)
}

// itemMode returns the API mode of a delivery: the batch's (the ready message's
// header, from its manifest) or the replica's. Batch mode without a provider is
// sync mode.
func (p *Processor) itemMode(h nats.Header) string {
	mode := p.cfg.Batch.Mode
	if m := h.Get(contract.HeaderAPIMode); m == ModeSync || m == ModeBatch {
		mode = m
	}
	if mode == ModeBatch && p.batch == nil {
		p.noBatchOnce.Do(func() {
			p.log.Warn("a batch asks for batch mode but this replica has no batch API (--batch-provider); processing it in sync mode")
		})
		return ModeSync
	}
	return mode
}

func newBatchMode(ctx context.Context, p *Processor) (*batchMode, error) {
	cfg := p.cfg.Batch
	get, ok := p.cache.(answerStore)
	if !ok {
		return nil, errors.New("processor: batch mode needs the answer cache")
	}
	kv, err := contract.OpenKeyValue(ctx, p.js, ProviderBatchBucket(p.c), p.log)
	if err != nil {
		return nil, fmt.Errorf("processor: provider batches bucket: %w", err)
	}
	return &batchMode{p: p, cfg: cfg, api: cfg.Provider, store: &batchStore{kv: kv}, get: get,
		log: p.log.With("part", "batch"), queue: map[groupKey]*group{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1), final: map[string]bool{},
		holds: map[string][]heldSpend{}}, nil
}

// run gathers and polls until ctx ends.
func (b *batchMode) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { b.gatherLoop(ctx) })
	wg.Go(func() { b.pollLoop(ctx) })
	wg.Wait()
}

func (b *batchMode) signal() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *batchMode) changes() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// add queues a request for the next provider batch.
func (b *batchMode) add(r pendingRequest) {
	b.mu.Lock()
	k := groupKey{r.stage, r.req.Model}
	g := b.queue[k]
	if g == nil {
		g = &group{since: time.Now(), seen: map[string]bool{}}
		b.queue[k] = g
	}
	if !g.seen[r.hash] {
		g.seen[r.hash] = true
		g.reqs = append(g.reqs, r)
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// setWaiting counts the workers waiting for a batch answer (delta ±1): when all of
// them wait, no new request can come, so the gatherer sends what it holds at once.
func (b *batchMode) setWaiting(delta int) {
	b.mu.Lock()
	b.waiting += delta
	b.mu.Unlock()
	if delta > 0 {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// due takes the groups to send now: full, old enough, or everything when every
// worker is waiting on a request that is only queued.
func (b *batchMode) due(now time.Time, final bool) []*group {
	b.mu.Lock()
	defer b.mu.Unlock()
	queued := 0
	for _, g := range b.queue {
		queued += len(g.reqs)
	}
	all := final || (queued > 0 && b.waiting >= b.p.cfg.Workers)
	var out []*group
	for k, g := range b.queue {
		for len(g.reqs) >= b.cfg.Size {
			out = append(out, &group{reqs: g.reqs[:b.cfg.Size]})
			g.reqs = g.reqs[b.cfg.Size:]
		}
		if len(g.reqs) > 0 && (all || now.Sub(g.since) >= b.cfg.Wait) {
			out = append(out, &group{reqs: g.reqs})
			g.reqs = nil
		}
		if len(g.reqs) == 0 {
			delete(b.queue, k)
		}
	}
	return out
}

func (b *batchMode) gatherLoop(ctx context.Context) {
	t := time.NewTicker(min(b.cfg.Wait/4+time.Millisecond, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		for _, g := range b.due(time.Now(), false) {
			b.send(ctx, g.reqs)
		}
	}
}

// send records a provider batch of reqs, claims its requests, then submits it.
func (b *batchMode) send(ctx context.Context, reqs []pendingRequest) {
	key := newBatchKey()
	now := time.Now().UTC()
	rec := &ProviderBatch{Key: key, Provider: b.api.Name(), Stage: reqs[0].stage, Model: reqs[0].req.Model,
		State: RecordGathering, By: b.p.cfg.ID, CreatedAt: now}
	rev, ok, err := b.store.createRecord(ctx, rec)
	if err != nil || !ok {
		b.log.Warn("provider batch not recorded; its items will ask again", "key", key, "err", err)
		return
	}
	// Claim the requests, many at a time (each is a round trip to NATS).
	claimed := make([]bool, len(reqs))
	var cwg sync.WaitGroup
	sem := make(chan struct{}, claimConcurrency)
	for i, r := range reqs {
		sem <- struct{}{}
		cwg.Go(func() {
			defer func() { <-sem }()
			c := &requestClaim{Batch: key, Index: i, Stage: r.stage, CacheKey: r.cacheKey, BatchID: r.batchID,
				Req: r.req, State: ClaimPending, At: now}
			ok, err := b.store.createClaim(ctx, r.hash, c)
			if err != nil {
				b.log.Warn("request not claimed; its item will ask again", "key", key, "err", err)
			}
			claimed[i] = ok // false: another batch carries it already
		})
	}
	cwg.Wait()
	var reqsSent []batchapi.Request
	var owners []string
	batches := map[string]bool{}
	for i, r := range reqs {
		if !claimed[i] {
			continue
		}
		rec.Claims = append(rec.Claims, r.hash)
		reqsSent = append(reqsSent, batchapi.Request{CustomID: batchapi.CustomID(key, i), Body: r.req})
		owners = append(owners, r.batchID)
		if !batches[r.batchID] {
			batches[r.batchID] = true
			rec.Batches = append(rec.Batches, r.batchID)
		}
	}
	if len(rec.Claims) == 0 {
		rec.State, rec.Outcome = RecordAbandoned, "every request was claimed by another batch"
		_, _ = b.store.updateRecord(ctx, rec, rev)
		return
	}
	rec.State, rec.Total = RecordSubmitting, len(rec.Claims)
	if rev, err = b.store.updateRecord(ctx, rec, rev); err != nil {
		// Abandoned by a waiter meanwhile (or NATS failed): nothing was sent.
		b.log.Warn("provider batch abandoned before its submission", "key", key, "err", err)
		return
	}
	b.submit(ctx, rec, rev, reqsSent, owners)
}

// submit sends a record's requests and records the provider's id. The record is
// submitting at rev, and this caller won it by compare-and-set.
func (b *batchMode) submit(ctx context.Context, rec *ProviderBatch, rev uint64, reqs []batchapi.Request, owners []string) {
	if reqs, _ = b.reserveBatch(ctx, rec, reqs, owners); len(reqs) == 0 {
		rec.State, rec.Outcome = RecordAbandoned, "held by a spend cap: nothing sent"
		_, _ = b.store.updateRecord(ctx, rec, rev)
		return
	}
	// Reserving may take long (a reservation per flashpipe batch, or per request at
	// a cap): stamp the record again, by compare-and-set, so that no replica's
	// recovery takes it over while it is being sent. If one already did, it sends the
	// batch: this one releases its reservations and sends nothing.
	r, err := b.store.updateRecord(ctx, rec, rev)
	if err != nil {
		b.log.Warn("provider batch taken over while its spend was reserved; not sent by this replica", "key", rec.Key, "err", err)
		b.settle(ctx, rec.Key, nil)
		return
	}
	rev = r
	if hookBeforeSubmit != nil {
		hookBeforeSubmit(rec.Key)
	}
	// A submission never outlasts half of SubmitTimeout, so no other replica looks
	// for the batch (and maybe submits it) while this one may still be sending it.
	sctx, cancel := context.WithTimeout(ctx, b.cfg.SubmitTimeout/2)
	pb, err := b.api.Submit(sctx, batchapi.Spec{Key: rec.Key, Model: rec.Model, Requests: reqs,
		Metadata: map[string]string{"flashpipe_stage": fmt.Sprint(rec.Stage)}})
	cancel()
	if err != nil {
		if flashpipe.IsPermanent(err) {
			b.log.Error("provider refused the batch; its requests go to the sync API", "key", rec.Key, "err", b.p.cfg.Redactor.Redact(err.Error()))
			b.settle(ctx, rec.Key, nil)
			b.finishClaims(ctx, rec, nil, ClaimSync)
			rec.State, rec.Outcome = RecordFailed, "refused: "+b.p.cfg.Redactor.Redact(err.Error())
			_, _ = b.store.updateRecord(ctx, rec, rev)
			return
		}
		// Unknown whether the provider took it: recovery looks for it after
		// SubmitTimeout and submits only if it is not there.
		b.log.Warn("provider batch submission unconfirmed; it will be looked for", "key", rec.Key, "err", b.p.cfg.Redactor.Redact(err.Error()))
		return
	}
	b.metricsBatch("submitted")
	if hookAfterSubmit != nil {
		hookAfterSubmit(rec.Key)
	}
	rec.State, rec.ProviderID, rec.ProviderState = RecordSubmitted, pb.ID, string(pb.State)
	if _, err := b.store.updateRecord(ctx, rec, rev); err != nil {
		b.log.Warn("provider batch id not recorded; recovery will find it by its key", "key", rec.Key, "id", pb.ID, "err", err)
		return
	}
	b.log.Info("provider batch submitted", "key", rec.Key, "id", pb.ID, "stage", rec.Stage, "requests", len(reqs))
}

// claimConcurrency bounds the claims a gatherer writes at once.
const claimConcurrency = 64

// Test hooks: kill points of the crash tests (nil in production).
var hookBeforeSubmit, hookAfterSubmit func(key string)

func (b *batchMode) metricsBatch(string) {}

// pollLoop looks after every unfinished record, this replica's or not.
func (b *batchMode) pollLoop(ctx context.Context) {
	t := time.NewTicker(b.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if b.pollOnce(ctx) {
			b.signal()
		}
	}
}

// pollOnce looks at every record not known final; it reports whether a record
// became final (this replica's work or another's): the waiting items then look again.
func (b *batchMode) pollOnce(ctx context.Context) (changed bool) {
	keys, err := b.store.recordKeys(ctx)
	if err != nil {
		b.log.Warn("provider batches unreadable", "err", err)
		return false
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			return changed
		}
		if b.final[k] {
			continue
		}
		rec, rev, err := b.store.getRecord(ctx, k)
		if err != nil || rec == nil {
			continue
		}
		if rec.Final() {
			// Another replica applied it (or gave it up): settle what this one
			// reserved for it to the costs recorded.
			b.settle(ctx, k, rec.Costs)
			b.final[k], changed = true, true
			continue
		}
		switch {
		case rec.State == RecordSubmitting && time.Since(rec.UpdatedAt) > b.cfg.SubmitTimeout:
			b.recover(ctx, rec, rev)
		case rec.State == RecordSubmitted:
			b.poll(ctx, rec, rev)
		}
	}
	return changed
}

// recover finishes a record left submitting: adopt the provider's batch carrying its
// key, or, if there is none, submit it (once: compare-and-set first).
func (b *batchMode) recover(ctx context.Context, rec *ProviderBatch, rev uint64) {
	found, err := b.api.Find(ctx, rec.Key, rec.CreatedAt, b.knownIDs(ctx))
	if err != nil {
		b.log.Warn("cannot tell yet whether a provider batch was accepted; asking again later", "key", rec.Key, "err", b.p.cfg.Redactor.Redact(err.Error()))
		return
	}
	if found != nil {
		rec.State, rec.ProviderID, rec.ProviderState = RecordSubmitted, found.ID, string(found.State)
		if _, err := b.store.updateRecord(ctx, rec, rev); err == nil {
			b.log.Info("provider batch found after a crash; polling it", "key", rec.Key, "id", found.ID)
		}
		return
	}
	rec.By = b.p.cfg.ID
	rev, err = b.store.updateRecord(ctx, rec, rev) // take it over: its UpdatedAt restarts
	if err != nil {
		return // another replica took it
	}
	reqs := make([]batchapi.Request, 0, len(rec.Claims))
	var owners []string
	for _, h := range rec.Claims {
		c, _, err := b.store.getClaim(ctx, h)
		if err != nil {
			b.log.Warn("claim of an unsent batch unreadable; trying later", "key", rec.Key, "err", err)
			return
		}
		if c == nil || c.Batch != rec.Key {
			continue // released (a spend cap) or moved on
		}
		reqs = append(reqs, batchapi.Request{CustomID: batchapi.CustomID(rec.Key, c.Index), Body: c.Req})
		owners = append(owners, c.BatchID)
	}
	b.log.Info("provider batch never reached the provider; submitting it", "key", rec.Key)
	b.submit(ctx, rec, rev, reqs, owners)
}

// knownIDs returns the provider ids of every recorded batch: they carry other keys.
func (b *batchMode) knownIDs(ctx context.Context) map[string]bool {
	ids := map[string]bool{}
	keys, err := b.store.recordKeys(ctx)
	if err != nil {
		return ids
	}
	for _, k := range keys {
		if r, _, err := b.store.getRecord(ctx, k); err == nil && r != nil && r.ProviderID != "" {
			ids[r.ProviderID] = true
		}
	}
	return ids
}

// poll asks the provider about a submitted batch and, once it is terminal, applies
// its results.
func (b *batchMode) poll(ctx context.Context, rec *ProviderBatch, rev uint64) {
	pb, err := b.api.Get(ctx, rec.ProviderID)
	if err != nil {
		b.log.Warn("provider batch state unknown", "key", rec.Key, "id", rec.ProviderID, "err", b.p.cfg.Redactor.Redact(err.Error()))
		return
	}
	if string(pb.State) != rec.ProviderState || pb.Completed != rec.Completed || pb.Failed != rec.Failed {
		rec.ProviderState, rec.Completed, rec.Failed = string(pb.State), pb.Completed, pb.Failed
		if pb.Total > 0 {
			rec.Total = pb.Total
		}
		if !pb.State.Terminal() {
			if r, err := b.store.updateRecord(ctx, rec, rev); err == nil {
				rev = r
			}
		}
	}
	if !pb.State.Terminal() {
		return
	}
	results, err := b.api.Results(ctx, rec.ProviderID)
	if err != nil {
		b.log.Warn("provider batch results unreadable; trying later", "key", rec.Key, "err", b.p.cfg.Redactor.Redact(err.Error()))
		return
	}
	b.apply(ctx, rec, rev, pb.State, results)
}

// apply writes every request's outcome into its claim, retries the failed ones in a
// child batch, and marks the record done. It is idempotent: a replica that dies
// halfway leaves the record submitted, and the next poll applies it again.
func (b *batchMode) apply(ctx context.Context, rec *ProviderBatch, rev uint64, state batchapi.State, results []batchapi.Result) {
	byID := make(map[string]batchapi.Result, len(results))
	// costs, by custom_id, settle the spend reservations: every result with a
	// response, whatever its claim's state, so that an apply that runs again after
	// stopping partway still counts the requests the first run applied.
	costs := map[string]float64{}
	for _, r := range results {
		byID[r.CustomID] = r
		if r.Response != nil {
			costs[r.CustomID] = b.resultCost(ctx, rec.Model, r.Response.Usage)
		}
	}
	var retry []string
	answered, failed, toSync := 0, 0, 0
	for _, h := range rec.Claims {
		c, _, err := b.store.getClaim(ctx, h)
		if err != nil {
			b.log.Warn("claim unreadable; applying later", "key", rec.Key, "err", err)
			return
		}
		if c == nil || c.Batch != rec.Key || c.State != ClaimPending {
			continue // already applied, or moved on
		}
		r, ok := byID[batchapi.CustomID(rec.Key, c.Index)]
		switch {
		case !ok:
			c.State = ClaimSync
			toSync++
		case r.Err == nil && r.Response != nil:
			c.State, c.Content, c.Usage = ClaimAnswered, r.Response.Content, r.Response.Usage
			c.Usage.Cost = costs[r.CustomID] // priced from tokens where the provider reports no cost
			answered++
		case flashpipe.IsPermanent(r.Err):
			c.State, c.Err = ClaimFailed, b.p.cfg.Redactor.Redact(r.Err.Error())
			if r.Response != nil {
				c.Usage = r.Response.Usage
				c.Usage.Cost = costs[r.CustomID]
			}
			failed++
		default:
			retry = append(retry, h)
			continue
		}
		if err := b.store.putClaim(ctx, h, c); err != nil {
			b.log.Warn("claim not written; applying later", "key", rec.Key, "err", err)
			return
		}
	}
	outcome := fmt.Sprintf("%s: %d answered, %d refused, %d to the sync API", state, answered, failed, toSync)
	if len(retry) > 0 {
		if rec.Attempt < b.cfg.MaxRetries {
			child := fmt.Sprintf("%s.r%d", baseKey(rec.Key), rec.Attempt+1)
			if !b.retry(ctx, rec, child, retry) {
				return
			}
			outcome += fmt.Sprintf(", %d failed and retried in %s", len(retry), child)
		} else {
			b.finishClaims(ctx, &ProviderBatch{Key: rec.Key, Claims: retry}, nil, ClaimSync)
			outcome += fmt.Sprintf(", %d failed %d times and go to the sync API", len(retry), rec.Attempt+1)
		}
	}
	b.settle(ctx, rec.Key, costs)
	rec.State, rec.ProviderState, rec.Outcome, rec.Costs = RecordDone, string(state), outcome, costs
	if _, err := b.store.updateRecord(ctx, rec, rev); err == nil {
		b.log.Info("provider batch done", "key", rec.Key, "id", rec.ProviderID, "outcome", outcome)
	}
}

func baseKey(k string) string {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '.' {
			return k[:i]
		}
	}
	return k
}

// retry sends the failed requests of rec, and only them, as the child batch (created
// once: a second applier finds it and moves the claims to it, nothing more).
func (b *batchMode) retry(ctx context.Context, rec *ProviderBatch, child string, hashes []string) bool {
	crec := &ProviderBatch{Key: child, Provider: rec.Provider, Stage: rec.Stage, Model: rec.Model, State: RecordSubmitting,
		Claims: hashes, Attempt: rec.Attempt + 1, Parent: rec.Key, Batches: rec.Batches, Total: len(hashes),
		By: b.p.cfg.ID, CreatedAt: time.Now().UTC()}
	crev, created, err := b.store.createRecord(ctx, crec)
	if err != nil {
		b.log.Warn("retry batch not recorded; applying later", "key", rec.Key, "err", err)
		return false
	}
	if !created {
		existing, _, err := b.store.getRecord(ctx, child)
		if err != nil || existing == nil {
			return false
		}
		crec = existing
	}
	reqs := make([]batchapi.Request, 0, len(crec.Claims))
	var owners []string
	for j, h := range crec.Claims {
		c, _, err := b.store.getClaim(ctx, h)
		if err != nil || c == nil {
			return false
		}
		if c.Batch != child {
			c.Batch, c.Index, c.State = child, j, ClaimPending
			if err := b.store.putClaim(ctx, h, c); err != nil {
				return false
			}
		}
		reqs = append(reqs, batchapi.Request{CustomID: batchapi.CustomID(child, j), Body: c.Req})
		owners = append(owners, c.BatchID)
	}
	if created {
		b.submit(ctx, crec, crev, reqs, owners)
	}
	return true
}

// finishClaims sets the claims of rec still pending in it to state.
func (b *batchMode) finishClaims(ctx context.Context, rec *ProviderBatch, _ []string, state string) {
	for _, h := range rec.Claims {
		c, _, err := b.store.getClaim(ctx, h)
		if err != nil || c == nil || c.Batch != rec.Key || c.State != ClaimPending {
			continue
		}
		c.State = state
		_ = b.store.putClaim(ctx, h, c)
	}
}

// batchStage returns a stage's answer in batch mode: from the cache, or from the
// provider batch carrying its request (sending it in one if none does), or from the
// sync API when the batch could not answer it. It waits as long as that takes, the
// item kept alive meanwhile.
func batchStage[T any](ctx context.Context, p *Processor, s stageSpec[T], usage *flashpipe.Usage) (T, error) {
	var zero T
	b := p.batch
	ck := cache.Key(s.n, s.model, s.key)
	h := claimHash(ck)
	queued := time.Time{}
	for {
		wake := b.changes()
		e, found, err := b.get.Get(ctx, ck)
		if err != nil {
			return zero, fmt.Errorf("%w: %w", errRequeue, err)
		}
		if found {
			var v T
			if err := json.Unmarshal(e.Value, &v); err != nil {
				return zero, fmt.Errorf("%w: decode cached %s answer: %w", errRequeue, s.name, err)
			}
			usage.CacheHits++
			p.metrics.lookup(s.name, true)
			return s.reuse(v), nil
		}
		c, rev, err := b.store.getClaim(ctx, h)
		if err != nil {
			return zero, fmt.Errorf("%w: provider batches: %w", errRequeue, err)
		}
		switch {
		case c == nil:
			// Asked, and its gathering window gone by unclaimed: a spend cap may have
			// refused it (reserveBatch released its claim). Then it is held as in
			// sync mode (set aside, its consumer slot freed) rather than waiting here.
			if !queued.IsZero() && time.Since(queued) > b.cfg.Wait && b.paused(ctx, batchOf(ctx)) {
				return zero, fmt.Errorf("%w: its provider batch request was refused by a spend cap", errCapped)
			}
			// Not asked yet (or asked by a gatherer that gave up): queue it, once per
			// gathering window.
			if queued.IsZero() || time.Since(queued) > b.cfg.Wait+b.cfg.ClaimGrace {
				b.add(pendingRequest{hash: h, cacheKey: ck, batchID: batchOf(ctx), stage: s.n, req: s.req()})
				queued = time.Now()
			}
		case c.State == ClaimAnswered:
			v, err := s.parse(c.Content)
			if err != nil {
				// An answer that fails validation: ask the sync API (whose retries
				// handle it as in sync mode).
				b.log.Debug("batch answer invalid; asking the sync API", "stage", s.name, "err", err)
				v, err = runStage(ctx, p, s, usage)
				if err == nil {
					_ = b.store.deleteClaim(ctx, h, rev)
				}
				return v, err
			}
			return storeBatchAnswer(ctx, p, s, ck, h, rev, c, v, usage)
		case c.State == ClaimSync:
			v, err := runStage(ctx, p, s, usage)
			if err == nil {
				_ = b.store.deleteClaim(ctx, h, rev)
			}
			return v, err
		case c.State == ClaimFailed:
			_ = b.store.deleteClaim(ctx, h, rev)
			usage.CacheMisses++
			addBatchUsage(usage, s.n, c.Usage)
			return zero, flashpipe.AsPermanent(errors.New(c.Err))
		default: // pending
			if err := b.checkPending(ctx, h, c, rev); err != nil {
				return zero, fmt.Errorf("%w: provider batches: %w", errRequeue, err)
			}
		}
		b.setWaiting(1)
		select {
		case <-ctx.Done():
			b.setWaiting(-1)
			return zero, ctx.Err()
		case <-wake:
		case <-time.After(b.cfg.ClaimGrace / 2):
		}
		b.setWaiting(-1)
	}
}

// storeBatchAnswer puts a batch's answer into the cache (through Do, so that exactly
// one item counts what it cost) and releases its claim.
func storeBatchAnswer[T any](ctx context.Context, p *Processor, s stageSpec[T], ck, h string, rev uint64, c *requestClaim, v T, usage *flashpipe.Usage) (T, error) {
	var zero T
	var spent flashpipe.Usage
	addBatchUsage(&spent, s.n, c.Usage)
	raw, err := json.Marshal(v)
	if err != nil {
		return zero, flashpipe.AsPermanent(fmt.Errorf("encode %s answer: %w", s.name, err))
	}
	entry, hit, err := p.cache.Do(ctx, ck, func() (cache.Entry, error) {
		return cache.Entry{Stage: s.n, Model: s.model, Value: raw, Usage: spent}, nil
	})
	if err != nil {
		return zero, fmt.Errorf("%w: %w", errRequeue, err)
	}
	_ = p.batch.store.deleteClaim(ctx, h, rev)
	p.metrics.lookup(s.name, hit)
	if hit {
		usage.CacheHits++
		var cached T
		if err := json.Unmarshal(entry.Value, &cached); err != nil {
			return zero, fmt.Errorf("%w: decode cached %s answer: %w", errRequeue, s.name, err)
		}
		return s.reuse(cached), nil
	}
	usage.CacheMisses++
	*usage = usage.Add(spent)
	return v, nil
}

func addBatchUsage(u *flashpipe.Usage, stage int, lu llm.Usage) {
	countCall(u, stage, &llm.Response{Usage: lu})
}

// checkPending unblocks a request whose batch will never be sent: a record still
// gathering after ClaimGrace is abandoned (compare-and-set: its gatherer, if alive,
// then fails to move it on and sends nothing), and the claims of an abandoned or
// missing record are released, so the request is asked again.
func (b *batchMode) checkPending(ctx context.Context, h string, c *requestClaim, rev uint64) error {
	if time.Since(c.At) < b.cfg.ClaimGrace {
		return nil
	}
	rec, rrev, err := b.store.getRecord(ctx, c.Batch)
	if err != nil {
		return err
	}
	switch {
	case rec == nil, rec.State == RecordAbandoned, rec.State == RecordDone:
		return b.store.deleteClaim(ctx, h, rev)
	case rec.State == RecordFailed:
		c.State = ClaimSync
		return b.store.putClaim(ctx, h, c)
	case rec.State == RecordGathering && time.Since(rec.UpdatedAt) > b.cfg.ClaimGrace:
		rec.State, rec.Outcome = RecordAbandoned, "its gatherer stopped before submitting it"
		if _, err := b.store.updateRecord(ctx, rec, rrev); err == nil {
			b.log.Info("provider batch abandoned before submission; its requests are asked again", "key", rec.Key)
			return b.store.deleteClaim(ctx, h, rev)
		}
	}
	return nil
}

type batchIDCtx struct{}

func withBatchID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, batchIDCtx{}, id)
}

func batchOf(ctx context.Context) string {
	s, _ := ctx.Value(batchIDCtx{}).(string)
	return s
}

// runStageMode runs a stage in the item's API mode.
func runStageMode[T any](ctx context.Context, p *Processor, s stageSpec[T], usage *flashpipe.Usage) (T, error) {
	if m, _ := ctx.Value(apiModeCtx{}).(string); m == ModeBatch && p.batch != nil {
		return batchStage(ctx, p, s, usage)
	}
	return runStage(ctx, p, s, usage)
}
