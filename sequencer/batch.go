package sequencer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
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
}

// raw is a result as it sits in the results stream: keys from its headers, body bytes.
type raw struct {
	keys contract.Keys
	data []byte
}

func (s *Sequencer) sequence(ctx context.Context, results jetstream.Stream, m flashpipe.Manifest, md *jetstream.MsgMetadata) error {
	at, n := wanted(m)
	r := &run{s: s, results: results, m: m, subject: s.c.OrderedSubject(m.BatchID), at: at, n: n,
		buf: make(map[int]raw), dirty: true}
	if err := r.sync(ctx); err != nil {
		return err
	}
	if r.done {
		return nil
	}
	log := s.log.With("batch", m.BatchID, "generation", m.Generation)
	log.Info("sequencing batch", "expected", n, "from", r.next)
	start := time.Now()

	ocfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.c.BatchResults(m.BatchID)}}
	if m.Generation > 0 {
		// A retry generation's results all follow its manifest.
		if t := startTime(md); t != nil {
			ocfg.DeliverPolicy, ocfg.OptStartTime = jetstream.DeliverByStartTimePolicy, t
		}
	}
	oc, err := s.js.OrderedConsumer(ctx, s.c.ResultsStream(), ocfg)
	if err != nil {
		return fmt.Errorf("results consumer: %w", err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(256), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("results consumer: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	failures := 0
	lastProgress := time.Now()
	for !r.done {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(lastProgress) > s.cfg.IdleRelease {
			return fmt.Errorf("batch %s generation %d at %d of %d: %w for %s", m.BatchID, m.Generation, r.next, r.n, errIdle, s.cfg.IdleRelease)
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
		msg, err := it.Next(jetstream.NextMaxWait(s.cfg.PollInterval))
		switch {
		case err == nil:
			r.offer(msg.Headers(), msg.Data())
		case errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
			r.dirty = true
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			return fmt.Errorf("read results: %w", err)
		}
	}
	log.Info("batch sequenced", "emitted", n, "elapsed", time.Since(start).Round(time.Millisecond))
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
				r.buf[want] = res // kept until stored
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
		delete(r.buf, r.at(r.next+i))
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

// lookup reads the latest result for seq from the results stream.
func (r *run) lookup(ctx context.Context, seq int) (raw, bool, error) {
	r.s.cfg.Metrics.lookup()
	msg, err := r.results.GetLastMsgForSubject(ctx, r.s.c.ResultSubject(r.m.BatchID, seq))
	if contract.IsNotFound(err) {
		return raw{}, false, nil
	}
	if err != nil {
		return raw{}, false, fmt.Errorf("look up result %d: %w", seq, err)
	}
	k, err := contract.KeysOf(msg.Header)
	if err != nil || k.Generation != r.m.Generation {
		return raw{}, false, nil
	}
	return raw{keys: k, data: msg.Data}, true, nil
}

// offer takes a result delivered by the results consumer: appended if it is the next
// one, buffered if it is within the window, otherwise dropped (it stays in the results
// stream and is looked up when its turn comes).
func (r *run) offer(h nats.Header, data []byte) {
	k, err := contract.KeysOf(h)
	if err != nil || k.Generation != r.m.Generation {
		return
	}
	i, ok := r.index(k.Seq)
	if !ok || i < r.next {
		return
	}
	if i-r.next >= r.s.cfg.Window {
		r.dirty = true
		return
	}
	r.buf[k.Seq] = raw{keys: k, data: data}
}
