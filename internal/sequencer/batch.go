package sequencer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/encoding/json"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/refusal"
)

// maxEmitErrors bounds consecutive failed appends before a batch is handed back.
const maxEmitErrors = 5

// errStaleCursor means the ordered subject moved on without us.
var errStaleCursor = errors.New("event already appended: stale cursor")

// errIdle means a batch made no progress for Config.IdleRelease.
var errIdle = errors.New("no progress")

// run is the state of sequencing one generation of one batch.
type run struct {
	s       *Sequencer
	results jetstream.Stream
	m       flashpipe.Manifest
	subject string
	at      func(int) int
	n       int

	// The cursor: next is the index (into the generation's wanted seqs) of the next
	// result to append; lastSeq is the stream sequence of the last event on the
	// ordered subject, the expectation every append carries.
	next    int
	lastSeq uint64
	done    bool
	needMan bool

	buf   map[int]raw // out-of-order results ahead of the cursor, at most Window
	dirty bool        // the results stream may hold the wanted result: look it up
	in    *inbox
}

// raw is a result as it sits in the results stream: its subject, keys from its
// headers, body bytes, and its stream sequence.
type raw struct {
	subject string
	keys    contract.Keys
	data    []byte
	seq     uint64
}

// inbox is where the results reader routes a running batch's results: a bounded
// channel, and a flag raised when a result did not fit (the batch then looks the
// results stream up).
type inbox struct {
	ch       chan raw
	overflow atomic.Bool
}

// readResults follows the results stream, from now on, for as long as ctx lasts, and
// routes each result to the batch this replica sequences, if any. What it misses (a
// batch taken later, a result that did not fit an inbox) the batch finds by looking
// the stream up.
func (s *Sequencer) readResults(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.readResultsOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("results reader stopped; restarting it", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.PollInterval):
		}
		s.dirtyAll()
	}
}

func (s *Sequencer) readResultsOnce(ctx context.Context) error {
	oc, err := s.js.OrderedConsumer(ctx, s.c.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.c.AllResults()}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return err
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(512), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		k, err := contract.KeysOf(msg.Headers())
		if err != nil {
			continue // refused when a batch looks it up
		}
		s.mu.Lock()
		in := s.routes[k.BatchID]
		s.mu.Unlock()
		if in == nil {
			continue
		}
		r := raw{subject: msg.Subject(), keys: k, data: msg.Data()}
		if md, err := msg.Metadata(); err == nil {
			r.seq = md.Sequence.Stream
		}
		select {
		case in.ch <- r:
		default:
			in.overflow.Store(true)
		}
	}
}

// dirtyAll makes every running batch look the results stream up (the reader may
// have missed results while it restarted).
func (s *Sequencer) dirtyAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.routes {
		in.overflow.Store(true)
	}
}

// route registers the inbox of a batch this replica starts sequencing, sized for the
// results it expects (at most the window, 256); the returned function removes it. A
// small batch's inbox is small, so thousands of them active cost little memory; a
// result that does not fit is looked up in the stream instead.
func (s *Sequencer) route(batch string, expected int) (*inbox, func()) {
	in := &inbox{ch: make(chan raw, max(1, min(s.cfg.Window, 256, expected)))}
	s.mu.Lock()
	s.routes[batch] = in
	s.mu.Unlock()
	return in, func() {
		s.mu.Lock()
		if s.routes[batch] == in {
			delete(s.routes, batch)
		}
		s.mu.Unlock()
	}
}

// checkResult refuses a result whose subject, headers and body disagree: it is never
// appended. A refusal is recorded once per stored message.
func (s *Sequencer) checkResult(ctx context.Context, r raw) bool {
	err := resultAgrees(s.c, r)
	if err == nil {
		return true
	}
	id := r.subject
	if r.seq > 0 {
		id = fmt.Sprintf("%s:%d", s.c.ResultsStream(), r.seq)
	}
	h := nats.Header{}
	setRefusedKeys(h, r.keys)
	if rerr := s.refusals.Refuse(ctx, refusal.Mismatch, contract.Refusal{BatchID: r.keys.BatchID, Subject: r.subject,
		Header: h, Data: r.data, Reason: "result refused: " + err.Error(), ID: id}); rerr != nil {
		s.log.Warn("refusal not recorded", "err", rerr)
	}
	return false
}

// resultAgrees checks that a result's subject, headers and body name the same item.
func resultAgrees(c *contract.Contract, r raw) error {
	batch, seq, ok := c.SubjectKeys(r.subject)
	if !ok || batch != r.keys.BatchID || seq != r.keys.Seq {
		return fmt.Errorf("subject %s disagrees with its headers (batch %q, seq %d)", r.subject, r.keys.BatchID, r.keys.Seq)
	}
	var b struct {
		BatchID    string           `json:"batch_id"`
		Seq        int              `json:"seq"`
		Position   int64            `json:"position"`
		Generation int              `json:"generation"`
		Status     flashpipe.Status `json:"status"`
	}
	if err := json.Unmarshal(r.data, &b); err != nil {
		return fmt.Errorf("undecodable body: %w", err)
	}
	if b.BatchID != r.keys.BatchID || b.Seq != r.keys.Seq || b.Position != r.keys.Position || b.Generation != r.keys.Generation ||
		(b.Status != flashpipe.StatusOK && b.Status != flashpipe.StatusFailed) || b.Status != r.keys.Status {
		return fmt.Errorf("body (batch %q, seq %d, position %d, generation %d, status %q) disagrees with its headers (batch %q, seq %d, position %d, generation %d, status %q)",
			b.BatchID, b.Seq, b.Position, b.Generation, b.Status, r.keys.BatchID, r.keys.Seq, r.keys.Position, r.keys.Generation, r.keys.Status)
	}
	return nil
}

// setRefusedKeys writes a result's keys as headers of its refusal record.
func setRefusedKeys(h nats.Header, k contract.Keys) {
	h.Set(contract.HeaderBatch, k.BatchID)
	h.Set(contract.HeaderSeq, strconv.Itoa(k.Seq))
	h.Set(contract.HeaderPosition, strconv.FormatInt(k.Position, 10))
	h.Set(contract.HeaderGeneration, strconv.Itoa(k.Generation))
	h.Set(contract.HeaderStatus, string(k.Status))
}

func (s *Sequencer) sequence(ctx context.Context, results jetstream.Stream, m flashpipe.Manifest) error {
	in, unroute := s.route(m.BatchID, m.Expected())
	defer unroute()
	r := &run{s: s, results: results, m: m, subject: s.c.OrderedSubject(m.BatchID), at: m.Seq, n: m.Expected(),
		buf: make(map[int]raw), dirty: true, in: in}
	defer r.drop()
	if err := r.sync(ctx); err != nil {
		return err
	}
	if r.done {
		return nil
	}
	log := s.log.With("batch", m.BatchID, "generation", m.Generation)
	log.Debug("sequencing batch", "expected", r.n, "from", r.next)
	start := time.Now()

	failures := 0
	lastProgress := time.Now()
	poll := time.NewTimer(s.cfg.PollInterval)
	defer poll.Stop()
	for !r.done {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(lastProgress) > s.cfg.IdleRelease {
			return fmt.Errorf("batch %s generation %d at %d of %d: %w for %s", m.BatchID, m.Generation, r.next, r.n, errIdle, s.cfg.IdleRelease)
		}
		if r.in.overflow.Swap(false) {
			r.dirty = true
		}
		progressed, err := r.step(ctx)
		if err != nil {
			failures++
			if failures >= maxEmitErrors {
				return err
			}
			log.Warn("append failed; resyncing", "err", err)
			s.cfg.Metrics.resync()
			if err := r.sync(ctx); err != nil {
				return err
			}
			continue
		}
		failures = 0
		if progressed {
			lastProgress = time.Now()
			continue
		}
		// Nothing to append: wait for the next result to arrive.
		poll.Reset(s.cfg.PollInterval)
		select {
		case res := <-r.in.ch:
			r.offer(ctx, res)
		case <-poll.C:
			r.dirty = true
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	log.Debug("batch sequenced", "emitted", r.n, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// sync reads the cursor back from the ordered subject.
func (r *run) sync(ctx context.Context) error {
	ordered, err := r.s.js.Stream(ctx, r.s.c.OrderedStream())
	if err != nil {
		return fmt.Errorf("ordered stream: %w", err)
	}
	last, err := ordered.GetLastMsgForSubject(ctx, r.subject)
	if contract.IsNotFound(err) {
		r.lastSeq, r.next, r.needMan = 0, 0, true
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cursor: %w", err)
	}
	k, err := contract.KeysOf(last.Header)
	if err != nil {
		return fmt.Errorf("read cursor: %w", err)
	}
	r.lastSeq, r.needMan = last.Sequence, false
	switch {
	case k.Generation > r.m.Generation:
		r.done = true
	case k.Generation < r.m.Generation:
		if k.Kind != flashpipe.EventComplete {
			return fmt.Errorf("batch %s generation %d: %w", r.m.BatchID, k.Generation, errPreviousGeneration)
		}
		r.next, r.needMan = 0, true
	case k.Kind == flashpipe.EventComplete:
		r.done = true
	case k.Kind == flashpipe.EventManifest:
		r.next = 0
	case k.Kind == flashpipe.EventResult:
		i, ok := r.index(k.Seq)
		if !ok {
			return fmt.Errorf("ordered subject of batch %s ends with seq %d, which generation %d does not contain", r.m.BatchID, k.Seq, r.m.Generation)
		}
		r.next = i + 1
	default:
		return fmt.Errorf("ordered subject of batch %s ends with an event of kind %q", r.m.BatchID, k.Kind)
	}
	return nil
}

// index returns the position of seq among the generation's wanted seqs.
func (r *run) index(seq int) (int, bool) {
	if r.m.Generation == 0 || len(r.m.Seqs) == 0 {
		return seq - 1, seq >= 1 && seq <= r.n
	}
	i := sort.SearchInts(r.m.Seqs, seq)
	return i, i < len(r.m.Seqs) && r.m.Seqs[i] == seq
}

// step appends what can be appended now, as one run: the manifest if it is due, the
// contiguous results available from the buffer or (when they may be there) the results
// stream, and the completion if the run reaches the end. It reports whether it
// appended anything. On error nothing of the run is assumed stored: the caller resyncs.
func (r *run) step(ctx context.Context) (bool, error) {
	var evs []*nats.Msg
	if r.needMan {
		m := r.m
		msg, err := r.eventMsg(flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m})
		if err != nil {
			return false, err
		}
		evs = append(evs, msg)
	}
	n := 0
	for r.next+n < r.n && len(evs) < r.s.cfg.MaxRun {
		want := r.at(r.next + n)
		res, ok := r.buf[want]
		if !ok && r.dirty {
			var err error
			if res, ok, err = r.lookup(ctx, want); err != nil {
				return false, err
			}
			r.dirty = ok
			if ok {
				r.keep(want, res) // kept until stored
			}
		}
		if !ok {
			break
		}
		msg := r.s.c.ResultEventMsg(res.keys, res.data)
		msg.Header.Set(jetstream.MsgIDHeader, contract.MsgID(r.m.BatchID, res.keys.Position, res.keys.Generation))
		evs = append(evs, msg)
		n++
	}
	complete := r.next+n >= r.n && len(evs) < r.s.cfg.MaxRun
	if complete {
		c := &flashpipe.Completion{BatchID: r.m.BatchID, Generation: r.m.Generation, Emitted: r.n, CompletedAt: time.Now().UTC()}
		msg, err := r.eventMsg(flashpipe.Event{Kind: flashpipe.EventComplete, Completion: c})
		if err != nil {
			return false, err
		}
		evs = append(evs, msg)
	}
	if len(evs) == 0 {
		return false, nil
	}
	if err := r.append(ctx, evs); err != nil {
		return false, err
	}
	r.s.cfg.Metrics.append(len(evs))
	for i := range n {
		r.forget(r.at(r.next + i))
	}
	r.next += n
	r.needMan = false
	r.done = complete
	return true, nil
}

func (r *run) eventMsg(ev flashpipe.Event) (*nats.Msg, error) {
	msg, err := r.s.c.EventMsg(ev)
	if err != nil {
		return nil, err
	}
	msg.Header.Set(jetstream.MsgIDHeader, contract.EventMsgID(ev))
	return msg, nil
}

// append stores events on the ordered subject, the first expecting the last event to
// be the one at r.lastSeq: a long run as one atomic batch where the stream allows it
// (all or nothing; a commit costs a few milliseconds, so it pays only for long runs,
// as when catching up), else one by one, each expecting the one before.
func (r *run) append(ctx context.Context, evs []*nats.Msg) error {
	if r.s.atomic && len(evs) >= r.s.cfg.AtomicMinRun {
		evs[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(r.lastSeq, 10))
		ack, err := jetstreamext.PublishMsgBatch(ctx, r.s.js, evs)
		if err != nil {
			return fmt.Errorf("append %d events to %s: %w", len(evs), r.subject, err)
		}
		r.lastSeq = ack.Sequence
		return nil
	}
	for _, msg := range evs {
		ack, err := r.s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(r.lastSeq))
		if err != nil {
			return fmt.Errorf("append to %s: %w", r.subject, err)
		}
		if ack.Duplicate {
			// The event is already in the log (its sequence is not the subject's
			// last): our cursor is stale, read it again.
			return fmt.Errorf("append to %s: %w", r.subject, errStaleCursor)
		}
		r.lastSeq = ack.Sequence
	}
	return nil
}

// lookup reads the latest result for seq from the results stream; one whose subject,
// headers and body disagree is refused and read as absent.
func (r *run) lookup(ctx context.Context, seq int) (raw, bool, error) {
	r.s.cfg.Metrics.lookup()
	subject := r.s.c.ResultSubject(r.m.BatchID, seq)
	msg, err := r.results.GetLastMsgForSubject(ctx, subject)
	if contract.IsNotFound(err) {
		return raw{}, false, nil
	}
	if err != nil {
		return raw{}, false, fmt.Errorf("look up result %d: %w", seq, err)
	}
	k, err := contract.KeysOf(msg.Header)
	if err != nil {
		k = contract.Keys{BatchID: r.m.BatchID, Seq: seq}
	}
	res := raw{subject: subject, keys: k, data: msg.Data, seq: msg.Sequence}
	if k.Generation != r.m.Generation || !r.s.checkResult(ctx, res) {
		return raw{}, false, nil
	}
	return res, true, nil
}

// offer takes a result the reader routed here: appended if it is the next one,
// buffered if it is within the window and the replica's budget, otherwise dropped (it
// stays in the results stream and is looked up when its turn comes).
func (r *run) offer(ctx context.Context, res raw) {
	if res.keys.Generation != r.m.Generation {
		return
	}
	i, ok := r.index(res.keys.Seq)
	if !ok || i < r.next || !r.s.checkResult(ctx, res) {
		return
	}
	if i-r.next >= r.s.cfg.Window || r.s.buffered.Load() >= int64(r.s.cfg.MaxBuffered) {
		r.dirty = true
		return
	}
	r.keep(res.keys.Seq, res)
}

// keep holds a result for seq, counted in the replica's budget.
func (r *run) keep(seq int, res raw) {
	if _, had := r.buf[seq]; !had {
		r.s.buffered.Add(1)
	}
	r.buf[seq] = res
}

// forget drops the result held for seq.
func (r *run) forget(seq int) {
	if _, had := r.buf[seq]; had {
		delete(r.buf, seq)
		r.s.buffered.Add(-1)
	}
}

// drop releases every result the run holds.
func (r *run) drop() {
	r.s.buffered.Add(-int64(len(r.buf)))
	clear(r.buf)
}
