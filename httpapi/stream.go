package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
)

// Stream settings.
const (
	// ProgressInterval is the least time between two progress events.
	ProgressInterval = 250 * time.Millisecond
	// KeepAliveInterval is how often a quiet event stream sends a comment, so that
	// proxies keep the connection.
	KeepAliveInterval = 15 * time.Second
	// streamWriteTimeout bounds each write of a stream to a client that stopped
	// reading.
	streamWriteTimeout = time.Minute
	// rateWindow is the span of processing time the rate is measured over.
	rateWindow = 10 * time.Second
)

// Progress is a snapshot of a batch's run, as the progress stream sends it.
type Progress struct {
	BatchID    string `json:"batch_id"`
	Generation int    `json:"generation"`
	// Expected is the number of items this generation runs (the batch's count, or a
	// retry's failed items).
	Expected int     `json:"expected"`
	Done     int     `json:"done"`
	OK       int     `json:"ok"`
	Failed   int     `json:"failed"`
	InFlight int     `json:"in_flight"`
	Percent  float64 `json:"percent"`
	// ItemsPerSecond is the recent rate (over the last 10 s of processing), 0 when
	// unknown; ETASeconds the time left at that rate (null when unknown).
	ItemsPerSecond float64  `json:"items_per_second"`
	ETASeconds     *float64 `json:"eta_seconds"`
	// CostUSD is what this generation's results cost so far.
	CostUSD float64 `json:"cost_usd"`
	// Complete is true once the generation's every result is in the ordered log;
	// Stored once the store holds it complete too (the exports are ready).
	Complete bool `json:"complete"`
	Stored   bool `json:"stored"`
	// Paused is set while a spend cap holds the batch's items: why, and how to go on.
	Paused string `json:"paused,omitempty"`
}

// Completed ends a results stream of server-sent events.
type Completed struct {
	BatchID    string  `json:"batch_id"`
	Generation int     `json:"generation"`
	Items      int     `json:"items"`
	OK         int     `json:"ok"`
	Failed     int     `json:"failed"`
	Cards      int     `json:"cards"`
	CostUSD    float64 `json:"cost_usd"`
}

// streamer writes a stream of JSON values: server-sent events (event, id, data) or
// JSON Lines (the data only). It is safe for concurrent use (the keep-alive).
type streamer struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	sse bool
}

// wantsSSE reports whether the client asks for server-sent events.
func wantsSSE(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// newStreamer starts the answer (200) and, for events, the keep-alive, which stops
// with ctx.
func newStreamer(ctx context.Context, w http.ResponseWriter, sse bool) *streamer {
	st := &streamer{w: w, rc: http.NewResponseController(w), sse: sse}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass the events on as they come
	if sse {
		h.Set("Content-Type", "text/event-stream")
	} else {
		h.Set("Content-Type", "application/x-ndjson")
	}
	w.WriteHeader(http.StatusOK)
	_ = st.rc.Flush()
	if sse {
		go st.keepAlive(ctx)
	}
	return st
}

// send writes one value (an event of the kind, with the id when not empty) and
// flushes it.
func (st *streamer) send(event, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var b strings.Builder
	if st.sse {
		fmt.Fprintf(&b, "event: %s\n", event)
		if id != "" {
			fmt.Fprintf(&b, "id: %s\n", id)
		}
		fmt.Fprintf(&b, "data: %s\n\n", data)
	} else {
		b.Write(data)
		b.WriteByte('\n')
	}
	return st.write(b.String())
}

func (st *streamer) write(s string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	_ = st.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := st.w.Write([]byte(s)); err != nil {
		return err
	}
	return st.rc.Flush()
}

func (st *streamer) keepAlive(ctx context.Context) {
	t := time.NewTicker(KeepAliveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if st.write(": keep-alive\n\n") != nil {
				return
			}
		}
	}
}

// end finishes a stream that failed: an event stream gets an error event, a JSON
// Lines stream is broken off, so that a client never takes a cut stream for a whole
// one. A stream the client left needs nothing.
func (s *Server) end(r *http.Request, st *streamer, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Warn("stream broken off", "path", r.URL.Path, "err", err)
	if st.sse {
		msg := "the stream was interrupted; reconnect to resume"
		if e := classify(err); e.Status < 500 {
			msg = e.Message
		}
		_ = st.send("error", "", Error{Message: msg})
		return
	}
	panic(http.ErrAbortHandler)
}

// lastEventID is the seq of the last result an event stream's client received
// before it reconnected (its Last-Event-ID header), 0 when none.
func lastEventID(r *http.Request) int {
	n, err := strconv.Atoi(r.Header.Get("Last-Event-ID"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// results streams a batch's final results in ascending seq as they are produced,
// until the batch is complete: JSON Lines, or server-sent events (event result, id
// the seq; then one complete event) when the client accepts text/event-stream. A
// client that reconnects with Last-Event-ID gets the results after that seq.
func (s *Server) results(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	id := r.PathValue("id")
	if err := s.visible(ctx, principalOf(ctx), id); err != nil {
		s.fail(w, r, err)
		return
	}
	m, err := s.client.Manifest(ctx, id)
	if errors.Is(err, flashpipe.ErrNotFound) {
		s.storedResults(ctx, w, r, id) // the streams no longer hold it
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st := newStreamer(ctx, w, wantsSSE(r))
	after := lastEventID(r)
	done := Completed{BatchID: id, Generation: m.Generation, Items: m.Count}
	sum, err := s.client.Follow(ctx, m, app.FollowOptions{OnResult: func(res flashpipe.Result) error {
		done.add(res)
		if res.Seq <= after {
			return nil // sent before the client reconnected
		}
		return st.send("result", strconv.Itoa(res.Seq), res)
	}})
	if err != nil {
		s.end(r, st, err)
		return
	}
	if st.sse {
		done.CostUSD = sum.CostUSD
		_ = st.send("complete", "", done)
	}
}

// storedResults streams the results of a batch the streams no longer hold, from
// the store, when it is complete there.
func (s *Server) storedResults(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) {
	status, err := s.store.Batch(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if status.State != flashpipe.BatchComplete {
		s.fail(w, r, errorf(http.StatusConflict, "batch %q is %s but the streams no longer hold it: it cannot be followed", id, status.State))
		return
	}
	st := newStreamer(ctx, w, wantsSSE(r))
	after := lastEventID(r)
	done := Completed{BatchID: id, Generation: status.Manifest.Generation, Items: status.Manifest.Count, CostUSD: status.Usage.Cost}
	err = s.client.Results(ctx, id, flashpipe.ResultFilter{}, func(res flashpipe.Result) error {
		done.add(res)
		if res.Seq <= after {
			return nil
		}
		return st.send("result", strconv.Itoa(res.Seq), res)
	})
	if err != nil {
		s.end(r, st, err)
		return
	}
	if st.sse {
		_ = st.send("complete", "", done)
	}
}

func (c *Completed) add(r flashpipe.Result) {
	if r.Status == flashpipe.StatusOK {
		c.OK++
		c.Cards += len(r.Cards)
	} else {
		c.Failed++
	}
}

// progress streams a batch's progress (see Progress) until the store holds it
// complete: server-sent events (progress events, then one complete event) or JSON
// Lines of snapshots, the last one Stored.
func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	s.streamProgress(w, r, principalOf(r.Context()))
}

func (s *Server) streamProgress(w http.ResponseWriter, r *http.Request, p principal) {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	id := r.PathValue("id")
	if err := s.visible(ctx, p, id); err != nil {
		s.fail(w, r, err)
		return
	}
	m, err := s.client.Manifest(ctx, id)
	if errors.Is(err, flashpipe.ErrNotFound) { // the streams no longer hold it: the store's view
		status, err := s.store.Batch(ctx, id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		st := newStreamer(ctx, w, wantsSSE(r))
		_ = st.send("complete", "", storedProgress(status))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st := newStreamer(ctx, w, wantsSSE(r))
	tr := newTracker(time.Now)
	var last time.Time
	_, err = s.client.Follow(ctx, m, app.FollowOptions{
		OnProgress: func(pr app.Progress) {
			tr.progress(pr)
			if now := time.Now(); now.Sub(last) >= ProgressInterval || pr.Complete {
				last = now
				_ = st.send("progress", "", tr.snapshot())
			}
		},
		OnResult: func(res flashpipe.Result) error {
			tr.result(res)
			return nil
		},
	})
	if err == nil {
		_, err = s.client.WaitStored(ctx, id, m.Generation)
	}
	if err != nil {
		s.end(r, st, err)
		return
	}
	snap := tr.snapshot()
	snap.Stored = true
	_ = st.send("complete", "", snap)
}

// storedProgress is the progress of a batch as the store holds it.
func storedProgress(b flashpipe.BatchStatus) Progress {
	p := Progress{BatchID: b.Manifest.BatchID, Generation: b.Manifest.Generation, Expected: b.Manifest.Count, Done: b.Done,
		OK: b.OK, Failed: b.Failed, CostUSD: b.Usage.Cost, Complete: b.State == flashpipe.BatchComplete}
	p.Stored = p.Complete
	if p.Expected > 0 {
		p.Percent = 100 * float64(p.Done) / float64(p.Expected)
	}
	return p
}

// tracker turns what a follower sees into progress snapshots, with the rate measured
// over the processing times of the recent results (the processors' clocks, so a page
// opened late, which reads the earlier results at once, still sees the real rate),
// or, while a retry generation runs (its results are read at its end), over the
// follower's own observations.
type tracker struct {
	now  func() time.Time
	last app.Progress
	// recent are the processing times of the results within rateWindow of the latest.
	recent         []time.Time
	latest, oldest time.Time
	// first is the follower's first observation of a generation with done items.
	firstAt   time.Time
	firstDone int
}

func newTracker(now func() time.Time) *tracker { return &tracker{now: now} }

func (t *tracker) progress(p app.Progress) {
	t.last = p
	if t.firstAt.IsZero() {
		t.firstAt, t.firstDone = t.now(), p.Done
	}
}

func (t *tracker) result(r flashpipe.Result) {
	at := r.ProcessedAt
	if at.IsZero() {
		return
	}
	if at.After(t.latest) {
		t.latest = at
	}
	if t.oldest.IsZero() || at.Before(t.oldest) {
		t.oldest = at
	}
	t.recent = append(t.recent, at)
	if len(t.recent) > 256 { // prune now and then, not on every result
		cut := t.latest.Add(-rateWindow)
		kept := t.recent[:0]
		for _, x := range t.recent {
			if x.After(cut) {
				kept = append(kept, x)
			}
		}
		t.recent = kept
	}
}

// rate is the recent number of items per second (0: unknown).
func (t *tracker) rate() float64 {
	if len(t.recent) > 1 {
		cut := t.latest.Add(-rateWindow)
		n := 0
		for _, x := range t.recent {
			if x.After(cut) {
				n++
			}
		}
		span := min(rateWindow, t.latest.Sub(t.oldest))
		if span >= time.Second/10 {
			return float64(n) / span.Seconds()
		}
	}
	if el := t.now().Sub(t.firstAt); !t.firstAt.IsZero() && el >= time.Second && t.last.Done > t.firstDone {
		return float64(t.last.Done-t.firstDone) / el.Seconds()
	}
	return 0
}

func (t *tracker) snapshot() Progress {
	p := t.last
	s := Progress{
		BatchID: p.BatchID, Generation: p.Generation, Expected: p.Expected, Done: p.Done, OK: p.OK, Failed: p.Failed,
		InFlight: p.InFlight, CostUSD: p.Usage.Cost, Complete: p.Complete, Paused: p.Paused,
	}
	if s.Expected > 0 {
		s.Percent = 100 * float64(s.Done) / float64(s.Expected)
	}
	if s.Complete {
		zero := 0.0
		s.ETASeconds = &zero
		s.InFlight = 0
	}
	if r := t.rate(); r > 0 {
		s.ItemsPerSecond = r
		if !s.Complete {
			eta := float64(s.Expected-s.Done) / r
			s.ETASeconds = &eta
		}
	}
	return s
}
