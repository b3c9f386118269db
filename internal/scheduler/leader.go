package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/lease"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/registry"
	"github.com/flashpipe/flashpipe/internal/service"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// errLost means the leader lost its lease or its bucket was written by another.
var errLost = errors.New("lost the lead")

// leader is the state of one term of leadership; its fields are owned by the dispatch
// loop's goroutine, except where noted.
type leader struct {
	s        *Scheduler
	kv       jetstream.KeyValue
	reg      registry.Registry
	items    jetstream.Stream
	ready    jetstream.Stream
	gens     map[string]*gen // by key
	tenants  tenants
	queued   int // items fetched and held across generations
	window   int
	inflight int // items in the ready stream (last read) plus those dispatched since
	// tenantOf maps the batches with items in the ready stream (or being dispatched)
	// to their tenant, to count each tenant's items there.
	tenantOf map[string]string
	active   map[string]int // generations being dispatched, by batch
	multiGet bool

	admitted chan *gen     // from the manifest intake
	audits   chan auditMsg // from the items audit
	orphans  map[string]orphan
	manifest map[string]cachedManifest
	// held are the batches paused by a spend cap (read every heldEvery): none of
	// their items is dispatched, and those in the ready stream (waiting there for a
	// higher cap) do not count against the window, so other batches run.
	spendMu sync.Mutex // spend, opened by the intake or the dispatch loop
	spend   *spend.Ledger
	held    map[string]bool
	heldAt  time.Time
}

type auditMsg struct {
	subject string
	keys    contract.Keys
	seq     uint64 // stream sequence
}

type orphan struct {
	msg   auditMsg
	first time.Time
}

type cachedManifest struct {
	m  flashpipe.Manifest
	ok bool
	at time.Time
}

// lead runs one term: it loads the generations being dispatched, takes new ones from
// the manifests, audits the items, and dispatches until ctx ends or the lease is lost.
func (s *Scheduler) lead(ctx context.Context, le *lease.Lease, kv jetstream.KeyValue, reg registry.Registry) error {
	ctx, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(s.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := le.Renew(ctx); err != nil && ctx.Err() == nil {
					lost(fmt.Errorf("%w: %w", errLost, err))
					return
				}
			}
		}
	})
	l := &leader{s: s, kv: kv, reg: reg, gens: map[string]*gen{}, tenants: tenants{byName: map[string]*tenant{}},
		admitted: make(chan *gen, 256), audits: make(chan auditMsg, 4096), orphans: map[string]orphan{},
		manifest: map[string]cachedManifest{}, tenantOf: map[string]string{}, active: map[string]int{}, multiGet: true}
	var err error
	if l.items, err = s.js.Stream(ctx, s.c.ItemsStream()); err != nil {
		return err
	}
	if l.ready, err = s.js.Stream(ctx, s.c.ReadyStream()); err != nil {
		return err
	}
	if err := l.load(ctx); err != nil {
		return err
	}
	intake, err := l.startIntake(ctx, &wg)
	if err != nil {
		return err
	}
	defer intake.Stop()
	audit, err := l.startAudit(ctx, &wg)
	if err != nil {
		return err
	}
	defer audit.Stop()
	err = l.loop(ctx)
	l.flush(context.WithoutCancel(ctx))
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// load reads the generations being dispatched from the bucket.
func (l *leader) load(ctx context.Context) error {
	keys, err := l.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: list generations: %w", err)
	}
	for key := range keys.Keys() {
		e, err := l.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var en Entry
		if err := json.Unmarshal(e.Value(), &en); err != nil {
			l.s.log.Error("unreadable schedule entry dropped", "key", key, "err", err)
			_ = l.kv.Delete(ctx, key)
			continue
		}
		l.add(&gen{Entry: en, key: key, rev: e.Revision(), n: en.Manifest.Expected()})
	}
	l.s.log.Info("generations being dispatched", "count", len(l.gens))
	return nil
}

func (l *leader) add(g *gen) {
	if _, ok := l.gens[g.key]; ok {
		return
	}
	m := g.Manifest
	cfg := l.s.cfg
	g.tenant = l.tenants.get(m.Tenant, cfg.TenantWeights[m.Tenant], cfg.TenantRates[m.Tenant], cfg.TenantConcurrency[m.Tenant])
	g.tenant.add(g)
	l.gens[g.key] = g
	l.tenantOf[m.BatchID] = m.Tenant
	l.active[m.BatchID]++
}

func (l *leader) remove(g *gen) {
	delete(l.gens, g.key)
	l.queued -= len(g.queue)
	g.tenant.remove(g)
	if len(g.tenant.gens) == 0 {
		l.tenants.drop(g.tenant)
	}
	// tenantOf keeps the batch while its last items may still be in the ready stream;
	// refreshInflight forgets it once none are.
	if l.active[g.Manifest.BatchID]--; l.active[g.Manifest.BatchID] <= 0 {
		delete(l.active, g.Manifest.BatchID)
	}
}

// startIntake consumes the manifests: each checked one becomes a generation to
// dispatch, recorded in the bucket before its manifest is acknowledged.
func (l *leader) startIntake(ctx context.Context, wg *sync.WaitGroup) (*service.Feed, error) {
	s := l.s
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.c.BatchesStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		Description:   "flashpipe scheduler: every generation to dispatch",
		FilterSubject: s.c.AllManifests(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: manifests consumer: %w", err)
	}
	feed, err := service.Subscribe(cons, service.Config{Pull: 64, What: "manifests", Logger: s.log})
	if err != nil {
		return nil, err
	}
	wg.Go(func() {
		for msg := range feed.C {
			l.intake(ctx, msg)
		}
	})
	return feed, nil
}

// intake checks one manifest and records its generation (or refuses it).
func (l *leader) intake(ctx context.Context, msg jetstream.Msg) {
	s := l.s
	m, err := contract.DecodeManifest(msg.Headers(), msg.Data())
	code := refusal.Undecodable
	if err == nil {
		code = refusal.InvalidManifest
		if err = m.Validate(); err == nil && s.c.ManifestSubject(m.BatchID) != msg.Subject() {
			err = fmt.Errorf("batch_id %q: its subject is %s", m.BatchID, msg.Subject())
		}
	}
	if err == nil {
		code = refusal.BatchConflict
		if err = l.reg.Admit(ctx, m); err != nil && !errors.Is(err, flashpipe.ErrBatchConflict) {
			s.log.Warn("batch id registry unreachable; manifest retried", "batch", m.BatchID, "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
	}
	if err != nil {
		md, _ := msg.Metadata()
		id := msg.Subject()
		if md != nil {
			id = fmt.Sprintf("%s:%d", s.c.BatchesStream(), md.Sequence.Stream)
		}
		if rerr := s.refusals.Refuse(ctx, code, contract.Refusal{BatchID: m.BatchID, Subject: msg.Subject(),
			Header: msg.Headers(), Data: msg.Data(), Reason: "manifest refused: " + err.Error(), ID: id}); rerr != nil {
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.Ack()
		return
	}
	// A generation the ordered log already completed (a manifest redelivered, or the
	// whole stream read again by a new scheduler) has nothing left to dispatch.
	if g, complete, ok, err := batchlog.Latest(ctx, s.js, s.c, m.BatchID); err == nil && ok && (g > m.Generation || (g == m.Generation && complete)) {
		_ = msg.Ack()
		return
	}
	if err := l.capFromManifest(ctx, m); err != nil {
		s.log.Warn("batch's max_cost not recorded; manifest retried", "batch", m.BatchID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	en := Entry{Manifest: m, Admitted: time.Now().UTC()}
	data, _ := json.Marshal(en)
	key := Key(m.BatchID, m.Generation)
	rev, err := l.kv.Create(ctx, key, data)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		_ = msg.Ack() // taken before (a redelivery)
		return
	case err != nil:
		s.log.Warn("generation not recorded; manifest retried", "batch", m.BatchID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	select {
	case l.admitted <- &gen{Entry: en, key: key, rev: rev, n: m.Expected()}:
		_ = msg.Ack()
	case <-ctx.Done():
		_ = msg.Nak()
	}
}

// startAudit follows the headers of every item published: an item no manifest counts
// is refused (with a grace for a manifest published late).
func (l *leader) startAudit(ctx context.Context, wg *sync.WaitGroup) (*service.Feed, error) {
	s := l.s
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.c.ItemsStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.AuditDurable,
		Description:   "flashpipe scheduler: audit of the items published (headers only)",
		FilterSubject: s.c.AllItems(),
		AckPolicy:     jetstream.AckNonePolicy,
		HeadersOnly:   true,
		// From the start of the stream when first created (items published before any
		// scheduler ran are audited too); from where it stopped afterwards.
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: audit consumer: %w", err)
	}
	feed, err := service.Subscribe(cons, service.Config{Pull: 512, What: "item headers", Logger: s.log})
	if err != nil {
		return nil, err
	}
	wg.Go(func() {
		for msg := range feed.C {
			k, _ := contract.KeysOf(msg.Headers())
			a := auditMsg{subject: msg.Subject(), keys: k}
			if md, err := msg.Metadata(); err == nil {
				a.seq = md.Sequence.Stream
			}
			select {
			case l.audits <- a:
			case <-ctx.Done():
				return
			}
		}
	})
	return feed, nil
}

// audit checks one item's headers against the manifests.
func (l *leader) audit(ctx context.Context, a auditMsg, now time.Time) {
	batch, seq, ok := l.s.c.SubjectKeys(a.subject)
	if !ok {
		l.refuseItem(ctx, a, refusal.Mismatch, fmt.Sprintf("subject %s names no batch and seq", a.subject))
		return
	}
	if g, ok := l.gens[Key(batch, a.keys.Generation)]; ok {
		if !g.Manifest.Wants(seq) {
			l.refuseItem(ctx, a, refusal.NotInManifest, fmt.Sprintf("seq %d is not in generation %d of batch %s (count %d)", seq, g.Manifest.Generation, batch, g.Manifest.Count))
		}
		return
	}
	m, found := l.latestManifest(ctx, batch, now)
	switch {
	case found && m.Generation >= a.keys.Generation:
		if m.Generation == a.keys.Generation && !m.Wants(seq) {
			l.refuseItem(ctx, a, refusal.NotInManifest, fmt.Sprintf("seq %d is not in generation %d of batch %s (count %d)", seq, m.Generation, batch, m.Count))
		}
	case len(l.orphans) < 100_000:
		if _, ok := l.orphans[a.subject]; !ok {
			l.orphans[a.subject] = orphan{msg: a, first: now}
		}
	default:
		l.refuseItem(ctx, a, refusal.NoManifest, fmt.Sprintf("batch %s has no manifest of generation %d", batch, a.keys.Generation))
	}
}

// recheckOrphans refuses the items still without a manifest after the grace.
func (l *leader) recheckOrphans(ctx context.Context, now time.Time) {
	for subj, o := range l.orphans {
		if now.Sub(o.first) < l.s.cfg.OrphanGrace {
			continue
		}
		delete(l.orphans, subj)
		batch, _, _ := l.s.c.SubjectKeys(subj)
		delete(l.manifest, batch) // read it afresh
		if m, found := l.latestManifest(ctx, batch, now); found && m.Generation >= o.msg.keys.Generation {
			continue
		}
		l.refuseItem(ctx, o.msg, refusal.NoManifest, fmt.Sprintf("batch %s has no manifest of generation %d (waited %s): publish the manifest before the items",
			batch, o.msg.keys.Generation, l.s.cfg.OrphanGrace))
	}
}

// latestManifest reads a batch's latest manifest, cached for a few seconds.
func (l *leader) latestManifest(ctx context.Context, batch string, now time.Time) (flashpipe.Manifest, bool) {
	if c, ok := l.manifest[batch]; ok && now.Sub(c.at) < 5*time.Second {
		return c.m, c.ok
	}
	st, err := l.s.js.Stream(ctx, l.s.c.BatchesStream())
	var m flashpipe.Manifest
	found := false
	if err == nil {
		if raw, err := st.GetLastMsgForSubject(ctx, l.s.c.ManifestSubject(batch)); err == nil {
			// A manifest that is refused (it contradicts itself) is no manifest.
			if m, err = contract.DecodeManifest(raw.Header, raw.Data); err == nil && m.Validate() == nil {
				found = true
			}
		}
	}
	if len(l.manifest) > 10_000 {
		clear(l.manifest)
	}
	l.manifest[batch] = cachedManifest{m: m, ok: found, at: now}
	return m, found
}

// refuseItem records an audited item's refusal, with its body read back.
func (l *leader) refuseItem(ctx context.Context, a auditMsg, code, reason string) {
	ref := contract.Refusal{Subject: a.subject, Reason: "item refused: " + reason, ID: fmt.Sprintf("%s:%d", l.s.c.ItemsStream(), a.seq)}
	ref.BatchID, _, _ = l.s.c.SubjectKeys(a.subject)
	if raw, err := l.items.GetMsg(ctx, a.seq); err == nil {
		ref.Header, ref.Data = raw.Header, raw.Data
	}
	if err := l.s.refusals.Refuse(ctx, code, ref); err != nil {
		l.s.log.Warn("refusal not recorded", "err", err)
	}
}

// flush writes the changed cursors to the bucket, and deletes the generations fully
// dispatched. A write refused for its revision means another leader: step down.
func (l *leader) flush(ctx context.Context) error {
	keys := make([]string, 0, len(l.gens))
	for k, g := range l.gens {
		if g.dirty || g.done() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := l.gens[k]
		if g.done() {
			if err := l.kv.Delete(ctx, k, jetstream.LastRevision(g.rev)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				if isWrongRevision(err) {
					return fmt.Errorf("%w: %s was written by another scheduler", errLost, k)
				}
				return err
			}
			l.remove(g)
			continue
		}
		data, _ := json.Marshal(g.Entry)
		rev, err := l.kv.Update(ctx, k, data, g.rev)
		if err != nil {
			if isWrongRevision(err) {
				return fmt.Errorf("%w: %s was written by another scheduler", errLost, k)
			}
			return err
		}
		g.rev, g.dirty = rev, false
	}
	return nil
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		strings.Contains(err.Error(), "wrong last sequence")
}
