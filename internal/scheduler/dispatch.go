package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/refusal"
	"github.com/flashpipe/flashpipe/internal/spend"
)

// maxRound is the most items dispatched in one round (one wait for their acks).
const maxRound = 256

// loop dispatches until ctx ends: rounds of items in fair order while the window has
// room, taking new generations and audit findings in between.
func (l *leader) loop(ctx context.Context) error {
	s := l.s
	l.window = l.windowSize(ctx)
	flushAt, orphansAt, windowAt, inflightAt := time.Now(), time.Now(), time.Now(), time.Time{}
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		l.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		if now.Sub(flushAt) >= s.cfg.FlushInterval {
			flushAt = now
			if err := l.flush(ctx); err != nil {
				return err
			}
		}
		if now.Sub(orphansAt) >= time.Second {
			orphansAt = now
			l.recheckOrphans(ctx, now)
		}
		if now.Sub(windowAt) >= 10*time.Second {
			windowAt = now
			l.window = l.windowSize(ctx)
		}
		room := l.window - l.inflight
		if room <= 0 || now.Sub(inflightAt) >= time.Second || (l.tenants.anyCapped() && now.Sub(inflightAt) >= s.cfg.PollInterval) {
			inflightAt = now
			l.refreshInflight(ctx)
			if room = l.window - l.inflight; room <= 0 {
				l.wait(ctx, idle, s.cfg.PollInterval)
				continue
			}
		}
		n, err := l.round(ctx, now, min(room, maxRound))
		if err != nil {
			s.log.Warn("dispatch round failed; retrying", "err", err)
			l.wait(ctx, idle, time.Second)
			continue
		}
		if n == 0 {
			l.wait(ctx, idle, l.nextWake(now))
		}
	}
}

// drain takes the new generations and audit findings waiting, without blocking.
func (l *leader) drain(ctx context.Context) {
	for {
		select {
		case g := <-l.admitted:
			l.add(g)
		case a := <-l.audits:
			l.audit(ctx, a, time.Now())
		default:
			return
		}
	}
}

// wait blocks up to d, or until a new generation or audit finding arrives.
func (l *leader) wait(ctx context.Context, t *time.Timer, d time.Duration) {
	t.Reset(d)
	select {
	case <-ctx.Done():
	case g := <-l.admitted:
		l.add(g)
	case a := <-l.audits:
		l.audit(ctx, a, time.Now())
	case <-t.C:
	}
}

// nextWake is how long to sleep when nothing is ready: until the earliest generation
// looks for its missing item again, at most a quarter second.
func (l *leader) nextWake(now time.Time) time.Duration {
	d := 250 * time.Millisecond
	for _, g := range l.gens {
		if !g.done() && len(g.queue) == 0 {
			d = min(d, max(g.waitUntil.Sub(now), time.Millisecond))
		}
	}
	return d
}

// windowSize is how many items may wait in the ready stream: Config.Window, or twice
// the processors' MaxAckPending.
func (l *leader) windowSize(ctx context.Context) int {
	if l.s.cfg.Window > 0 {
		return l.s.cfg.Window
	}
	cons, err := l.s.js.Consumer(ctx, l.s.c.ReadyStream(), l.s.cfg.ProcessorDurable)
	if err != nil {
		return 2 * DefaultMinWindow
	}
	return max(DefaultMinWindow, 2*cons.CachedInfo().Config.MaxAckPending)
}

// refreshInflight reads which items are in the ready stream (dispatched and not yet
// acknowledged by a processor: its work-queue retention drops them on ack), in all and
// by tenant, and sets the metrics from the leader's state.
func (l *leader) refreshInflight(ctx context.Context) {
	info, err := l.ready.Info(ctx, jetstream.WithSubjectFilter(l.s.c.AllReady()))
	if err != nil {
		return
	}
	l.inflight = int(info.State.Msgs)
	byBatch := make(map[string]int, len(l.tenantOf))
	for subject, n := range info.State.Subjects {
		if batch, _, ok := l.s.c.SubjectKeys(subject); ok {
			byBatch[batch] += int(n)
		}
	}
	l.refreshHeld(ctx, byBatch)
	for batch, n := range byBatch {
		if l.held[batch] {
			l.inflight -= n // held by a spend cap: they leave room for others
			byBatch[batch] = 0
		}
	}
	byTenant := make(map[string]int, len(l.tenants.order))
	for batch, name := range l.tenantOf {
		if byBatch[batch] == 0 && l.active[batch] == 0 {
			delete(l.tenantOf, batch)
			continue
		}
		byTenant[name] += byBatch[batch]
	}
	for _, t := range l.tenants.order {
		t.inflight = byTenant[t.name]
	}
	l.observe(byTenant)
}

// heldEvery is how often the spend caps of the batches are read.
const heldEvery = 2 * time.Second

// refreshHeld reads, every heldEvery, which batches a spend cap pauses: those with
// items in the ready stream (byBatch) or being dispatched. A ledger that cannot be
// read holds nothing (the processors still enforce the caps).
func (l *leader) refreshHeld(ctx context.Context, byBatch map[string]int) {
	if time.Since(l.heldAt) < heldEvery {
		return
	}
	l.heldAt = time.Now()
	led, err := l.ledger(ctx, false)
	if err != nil {
		l.held = nil
		return
	}
	setAside, err := led.HeldCounts(ctx)
	if err != nil {
		l.s.log.Warn("items set aside by spend caps unreadable", "err", err)
	}
	seen := map[string]bool{}
	batches := make([]string, 0, len(byBatch)+len(l.active)+len(setAside))
	for _, m := range []map[string]int{byBatch, l.active, setAside} {
		for b := range m {
			if !seen[b] {
				seen[b] = true
				batches = append(batches, b)
			}
		}
	}
	held, err := led.Held(ctx, batches)
	if err != nil {
		l.s.log.Warn("spend caps unreadable: dispatching as if no batch were paused", "err", err)
		l.held = nil
		return
	}
	for b, h := range held {
		if h != l.held[b] {
			l.s.log.Info("batch paused by a spend cap: its items wait, others run", "batch", b, "paused", h)
		}
	}
	l.held = held
	// The items the processors set aside go back to the ready stream once their
	// batch is no longer paused, within the room left in the window and their
	// tenant's concurrency cap; the others wait for a next round.
	room := l.window - l.inflight
	var byTenant map[string]int
	for b := range setAside {
		if held[b] {
			continue
		}
		from, tenant, ok := l.heldFrom(ctx, b)
		if !ok {
			continue
		}
		limit := room
		if c := l.s.cfg.TenantConcurrency[tenant]; c > 0 {
			if byTenant == nil {
				byTenant = map[string]int{}
				for batch, n := range byBatch {
					byTenant[l.tenantOf[batch]] += n
				}
			}
			limit = min(limit, c-byTenant[tenant])
		}
		n, err := led.Requeue(ctx, b, from, max(limit, 0), func(ctx context.Context, msg *nats.Msg) error {
			_, err := l.s.js.PublishMsg(ctx, msg)
			return err
		})
		l.inflight += n
		room -= n
		if byTenant != nil {
			byTenant[tenant] += n
		}
		if n > 0 {
			l.s.log.Info("items held by a spend cap dispatched again", "batch", b, "items", n)
		}
		if err != nil {
			l.s.log.Warn("items held by a spend cap not all dispatched again; retried", "batch", b, "err", err)
		}
	}
}

// heldFrom is the oldest generation of batch whose set-aside items are still worth
// processing: the base of its latest manifest (a replacement drops the items before
// it), or math.MaxInt when the batch has no manifest any more (pruned or expired:
// none is); and the batch's tenant. ok is false when the manifest cannot be read;
// nothing is requeued then.
func (l *leader) heldFrom(ctx context.Context, batch string) (from int, tenant string, ok bool) {
	st, err := l.s.js.Stream(ctx, l.s.c.BatchesStream())
	if err != nil {
		return 0, "", false
	}
	raw, err := st.GetLastMsgForSubject(ctx, l.s.c.ManifestSubject(batch))
	if contract.IsNotFound(err) {
		return math.MaxInt, "", true
	}
	if err != nil {
		l.s.log.Warn("manifest unreadable: the items a spend cap set aside wait", "batch", batch, "err", err)
		return 0, "", false
	}
	m, err := contract.DecodeManifest(raw.Header, raw.Data)
	if err != nil {
		return 0, l.tenantOf[batch], true // a refused manifest: the items are judged as before, when they run
	}
	return m.Base, m.Tenant, true
}

// observe sets the gauges from the leader's state: per tenant, the generations with
// items left to dispatch, those items, and the items in the ready stream.
func (l *leader) observe(inReady map[string]int) {
	m := l.s.cfg.Metrics
	if m == nil {
		return
	}
	snap := make(map[string]TenantLoad, len(l.tenants.order)+len(inReady))
	for _, t := range l.tenants.order {
		tl := TenantLoad{Batches: len(t.gens)}
		for _, g := range t.gens {
			tl.Waiting += g.n - g.Next
		}
		snap[t.name] = tl
	}
	for name, n := range inReady {
		tl := snap[name]
		tl.InProcessors = n
		snap[name] = tl
	}
	m.observe(snap)
}

// dispatch is one item on its way to the ready stream.
type dispatch struct {
	g       *gen
	index   int   // its index among the generation's wanted seqs
	prevPos int64 // the generation's LastPosition before it
	msg     *nats.Msg
	msgID   string
}

// round dispatches up to n items in fair order and waits for the ready stream to
// store them. It returns how many items it moved on (dispatched or failed in place).
func (l *leader) round(ctx context.Context, now time.Time, n int) (int, error) {
	out, moved, checkErr := l.choose(ctx, now, n, func(g *gen) bool { return l.readyGen(ctx, g, now) })
	if len(out) == 0 {
		return moved, checkErr
	}
	stored := make([]bool, len(out))
	futures := make([]jetstream.PubAckFuture, 0, len(out))
	var firstErr error
	for _, d := range out {
		f, err := l.s.js.PublishMsgAsync(d.msg, jetstream.WithMsgID(d.msgID))
		if err != nil {
			firstErr = err
			break // the rest are not sent: settle takes them back
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
			stored[i] = true
		case err := <-f.Err():
			firstErr = cmp.Or(firstErr, err)
		case <-ctx.Done():
			l.settle(out, stored)
			return moved, ctx.Err()
		}
	}
	l.settle(out, stored)
	if firstErr != nil {
		return moved, fmt.Errorf("publish to the ready stream: %w", firstErr)
	}
	return moved, checkErr
}

// choose takes up to n items in fair order (tenants.pick over the generations ready
// reports) and checks each. Each item is counted at its tenant's processors as it is
// taken, so a tenant's concurrency cap holds item by item within a round; settle
// takes back what is not stored. moved counts the items dispatched or failed in place.
// A check that fails (a refusal or failed result not published) ends the choice with
// its error, the item left at its generation's cursor to be read again.
func (l *leader) choose(ctx context.Context, now time.Time, n int, ready func(*gen) bool) (out []dispatch, moved int, err error) {
	for len(out) < n {
		g := l.tenants.pick(now, ready)
		if g == nil {
			break
		}
		raw := g.queue[0]
		g.queue, l.queued = g.queue[1:], l.queued-1
		d, err := l.check(ctx, g, raw)
		if err != nil {
			l.queued -= len(g.queue)
			g.queue = nil
			return out, moved, err
		}
		moved++
		if d != nil {
			out = append(out, *d)
			l.inflight++
			g.tenant.inflight++
		}
	}
	return out, moved, nil
}

// settle accounts for a round's publishes, stored[i] telling whether out[i] is in the
// ready stream: an item stored counts as dispatched; an item not stored (refused, or
// never sent after an earlier publish failed) leaves the in-flight counts, and its
// generation starts again from its first such item (what followed it and was stored
// is dropped as a duplicate when dispatched again), so no item is skipped.
func (l *leader) settle(out []dispatch, stored []bool) {
	first := map[*gen]dispatch{}
	for i, d := range out {
		if stored[i] {
			l.s.cfg.Metrics.dispatched(d.g.Manifest.Tenant)
			continue
		}
		l.inflight--
		d.g.tenant.inflight--
		if _, ok := first[d.g]; !ok {
			first[d.g] = d
		}
	}
	for g, d := range first {
		l.queued -= len(g.queue)
		g.queue, g.Next, g.LastPosition, g.dirty = nil, d.index, d.prevPos, true
	}
}

// readyGen reports whether g has an item to dispatch now, reading the next ones from
// the items stream when it holds none; a generation whose next item stays unpublished
// past the deadline gets a failed result for it.
func (l *leader) readyGen(ctx context.Context, g *gen, now time.Time) bool {
	if g.done() || l.held[g.Manifest.BatchID] {
		return false
	}
	if len(g.queue) > 0 {
		return true
	}
	if now.Before(g.waitUntil) {
		return false
	}
	if err := l.fetch(ctx, g); err != nil {
		l.s.log.Warn("read items", "batch", g.Manifest.BatchID, "err", err)
		g.waitUntil = now.Add(time.Second)
		return false
	}
	if len(g.queue) > 0 {
		if g.MissingSince != nil {
			g.MissingSince, g.dirty = nil, true
		}
		g.backoff = 0
		return true
	}
	if g.done() {
		return false
	}
	if g.MissingSince == nil {
		t := now.UTC()
		g.MissingSince, g.dirty = &t, true
	}
	if now.Sub(*g.MissingSince) >= l.s.cfg.ItemDeadline {
		seq := g.Manifest.Seq(g.Next)
		reason := fmt.Sprintf("item never published: seq %d of batch %s generation %d was not in the items stream %s after the scheduler looked for it (submit the batch again to publish it, or replace it)",
			seq, g.Manifest.BatchID, g.Manifest.Generation, l.s.cfg.ItemDeadline)
		if err := l.failInPlace(ctx, g, flashpipe.Item{Position: -int64(seq)}, seq, reason, refusal.NeverPublished); err != nil {
			l.s.log.Warn("failed result not published", "err", err)
			g.waitUntil = now.Add(time.Second)
			return false
		}
		g.MissingSince = nil
		return false
	}
	g.backoff = min(max(2*g.backoff, minBackoff), 5*time.Second)
	g.waitUntil = now.Add(g.backoff)
	return false
}

// maxReadAhead is the most subjects read from the items stream in one request: the
// generation being served, and the next items of others still waiting for theirs.
const maxReadAhead = 256

// fetch reads the next items of g (up to Prefetch, within the bound on items held)
// from the items stream, in seq order, stopping at the first not yet published. Where
// the server reads many subjects in one request, the same request reads ahead for the
// other generations that hold no item (up to maxReadAhead subjects): with many small
// batches, one request serves dozens of them instead of one each.
func (l *leader) fetch(ctx context.Context, g *gen) error {
	budget := max(1, l.s.cfg.MaxPrefetched-l.queued)
	type part struct {
		g        *gen
		subjects []string
	}
	want := func(g *gen, n int) part {
		m := g.Manifest
		p := part{g: g, subjects: make([]string, min(l.s.cfg.Prefetch, g.n-g.Next, n))}
		for i := range p.subjects {
			p.subjects[i] = l.s.c.ItemSubject(m.BatchID, m.Seq(g.Next+i))
		}
		return p
	}
	parts := []part{want(g, budget)}
	all := parts[0].subjects
	now := time.Now()
	if l.multiGet {
		// The tenants' generations in about the order they are served: the first of
		// each tenant, then the second of each, and so on.
		for i, more := 0, true; more; i++ {
			more = false
			for _, t := range l.tenants.order {
				room := min(maxReadAhead-len(all), budget-len(all))
				if room <= 0 {
					break
				}
				if i >= len(t.gens) {
					continue
				}
				more = true
				o := t.gens[i]
				if o == g || o.done() || len(o.queue) > 0 || now.Before(o.waitUntil) || o.MissingSince != nil {
					continue
				}
				p := want(o, room)
				parts, all = append(parts, p), append(all, p.subjects...)
			}
		}
	}
	got, err := l.lastMsgs(ctx, all)
	if err != nil {
		return err
	}
	for i, p := range parts {
		if l.take(p.g, p.subjects, got) == 0 && i > 0 && !p.g.done() {
			// Read ahead and not published yet: looked for just now, like a
			// generation of its own (readyGen times its deadline when it is served).
			p.g.waitUntil = now.Add(minBackoff)
		}
	}
	return nil
}

// minBackoff is the first wait before a generation whose next item is not published
// is looked up again (doubling to 5 s).
const minBackoff = 50 * time.Millisecond

// take queues the items read for g's next subjects, in seq order, up to the first
// not yet published (or of an earlier generation); an item of a later generation ends
// g (it was superseded).
// It returns how many items it queued.
func (l *leader) take(g *gen, subjects []string, got map[string]*jetstream.RawStreamMsg) int {
	m := g.Manifest
	n := 0
	for _, subj := range subjects {
		raw, ok := got[subj]
		if !ok {
			return n
		}
		k, _ := contract.KeysOf(raw.Header)
		if k.Generation < m.Generation {
			return n // this generation's item is not published yet
		}
		if k.Generation > m.Generation {
			// A later generation's items are out: this one is over (it completed
			// before a retry could start); nothing is left to dispatch.
			l.s.log.Warn("generation superseded: its dispatch ends", "batch", m.BatchID, "generation", m.Generation, "later", k.Generation)
			l.queued -= len(g.queue)
			g.queue, g.Next, g.dirty = nil, g.n, true
			return 0
		}
		g.queue = append(g.queue, raw)
		l.queued++
		n++
	}
	return n
}

// lastMsgs reads the last message of each subject in one request where the server
// can (2.11+), else one by one.
func (l *leader) lastMsgs(ctx context.Context, subjects []string) (map[string]*jetstream.RawStreamMsg, error) {
	got := make(map[string]*jetstream.RawStreamMsg, len(subjects))
	if l.multiGet && len(subjects) > 1 {
		msgs, err := jetstreamext.GetLastMsgsFor(ctx, l.s.js, l.s.c.ItemsStream(), subjects)
		if err == nil {
			for raw, err := range msgs {
				if errors.Is(err, jetstreamext.ErrNoMessages) {
					break
				}
				if err != nil {
					return nil, err
				}
				got[raw.Subject] = raw
			}
			return got, nil
		}
		l.multiGet = false // an older server: one by one from now on
		l.s.log.Info("the server reads no batch of last messages; reading items one by one", "err", err)
	}
	for _, subj := range subjects {
		raw, err := l.items.GetLastMsgForSubject(ctx, subj)
		if contract.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, err
		}
		got[subj] = raw
	}
	return got, nil
}

// check looks at the next item of g: an item whose body disagrees with its subject,
// or whose position does not follow the previous item's, is refused and fails in its
// place; an item whose term or type is no term or type fails in place (no API call);
// any other is returned, normalised, to dispatch.
func (l *leader) check(ctx context.Context, g *gen, raw *jetstream.RawStreamMsg) (*dispatch, error) {
	m := g.Manifest
	seq := m.Seq(g.Next)
	ref := func(code, reason string) (*dispatch, error) {
		if err := l.s.refusals.Refuse(ctx, code, contract.Refusal{BatchID: m.BatchID, Subject: raw.Subject, Header: raw.Header,
			Data: raw.Data, Reason: "item refused: " + reason, ID: l.s.c.ItemsStream() + ":" + strconv.FormatUint(raw.Sequence, 10)}); err != nil {
			return nil, err
		}
		return nil, l.failInPlace(ctx, g, flashpipe.Item{Position: -int64(seq)}, seq, "item refused: "+reason, "")
	}
	wi, err := contract.DecodeItem(raw.Header, raw.Data)
	switch {
	case err != nil:
		return ref(refusal.Mismatch, err.Error())
	case wi.BatchID != m.BatchID || wi.Seq != seq || wi.Generation != m.Generation:
		return ref(refusal.Mismatch, fmt.Sprintf("its body names batch %q seq %d generation %d, its subject %s (generation %d)",
			wi.BatchID, wi.Seq, wi.Generation, raw.Subject, m.Generation))
	case wi.Position <= g.LastPosition:
		return ref(refusal.PositionOrder, fmt.Sprintf("position %d does not follow the previous item's position %d: positions must ascend with seq, once each",
			wi.Position, g.LastPosition))
	}
	it, err := wi.Item.Check()
	if err != nil {
		return nil, l.failInPlace(ctx, g, wi.Item, seq, err.Error(), "")
	}
	wi.Item = it
	msg, err := l.s.c.ItemMsg(wi)
	if err != nil {
		return ref(refusal.Undecodable, err.Error())
	}
	msg.Subject = l.s.c.ReadySubject(m.BatchID, seq)
	if mode := m.Settings[flashpipe.SettingAPIMode]; mode != "" {
		msg.Header.Set(contract.HeaderAPIMode, mode)
	}
	d := &dispatch{g: g, index: g.Next, prevPos: g.LastPosition, msg: msg, msgID: contract.MsgID(m.BatchID, wi.Position, wi.Generation)}
	g.Next, g.LastPosition, g.dirty = g.Next+1, wi.Position, true
	return d, nil
}

// failInPlace publishes a failed result for the item at g's cursor (seq), which holds
// its place in the batch with the reason, and moves the cursor on. No API call is
// made. code, when set, records the failure as a refusal too (an item never
// published).
func (l *leader) failInPlace(ctx context.Context, g *gen, it flashpipe.Item, seq int, reason, code string) error {
	m := g.Manifest
	r := &flashpipe.Result{BatchID: m.BatchID, Seq: seq, Generation: m.Generation, Item: it, Status: flashpipe.StatusFailed,
		Failure:     &flashpipe.Failure{Stage: "input", Reason: reason, Class: flashpipe.Permanent, NextStep: flashpipe.NextFixInput},
		ProcessedAt: time.Now().UTC()}
	msg, err := l.s.c.ResultMsg(r)
	if err != nil {
		return err
	}
	if _, err := l.s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(contract.MsgID(m.BatchID, it.Position, m.Generation))); err != nil {
		return fmt.Errorf("publish the failed result of %s seq %d: %w", m.BatchID, seq, err)
	}
	if code != "" {
		// Recorded where the upstream sees its refusals, though no message arrived: the
		// subject names the item that never came.
		ref := contract.Refusal{BatchID: m.BatchID, Subject: l.s.c.ItemSubject(m.BatchID, seq), Reason: reason,
			ID: fmt.Sprintf("%s:%s:%d:%d", code, m.BatchID, m.Generation, seq)}
		if err := l.s.refusals.Refuse(ctx, code, ref); err != nil {
			return err
		}
	}
	g.Next, g.dirty = g.Next+1, true
	if it.Position > g.LastPosition {
		g.LastPosition = it.Position
	}
	l.s.cfg.Metrics.failedInPlace()
	return nil
}

// ledger opens the spend ledger once; create also creates its bucket when missing
// (no processor ran yet). Safe for the intake and the dispatch loop at once.
func (l *leader) ledger(ctx context.Context, create bool) (*spend.Ledger, error) {
	l.spendMu.Lock()
	defer l.spendMu.Unlock()
	if l.spend == nil {
		open := spend.Open
		if create {
			open = spend.New
		}
		led, err := open(ctx, l.s.js, l.s.c, spend.Config{Holder: "scheduler", Logger: l.s.log})
		if err != nil {
			return nil, err
		}
		l.spend = led
	}
	return l.spend, nil
}

// capFromManifest records a manifest's max_cost as its batch's cap when the batch has
// none yet, before any item of the generation is dispatched: ingest records it before
// it publishes, but a manifest published straight into NATS (the wire contract) has
// only the setting. It counts what the batch spent before (its results' cost). A cap
// already recorded (by ingest, or raised by a command) is left as it is.
func (l *leader) capFromManifest(ctx context.Context, m flashpipe.Manifest) error {
	usd, ok := m.MaxCost()
	if !ok {
		return nil
	}
	led, err := l.ledger(ctx, true)
	if err != nil {
		return err
	}
	a, found, err := led.Batch(ctx, m.BatchID)
	if err != nil {
		return err
	}
	if found && a.Capped {
		return nil
	}
	before, err := batchlog.Spent(ctx, l.s.js, l.s.c, m.BatchID)
	if err != nil {
		return err
	}
	_, err = led.SetBatchCapAfter(ctx, m.BatchID, spend.ByManifest, usd, before)
	return err
}
