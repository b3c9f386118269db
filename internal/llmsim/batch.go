package llmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Defaults for BatchConfig.
const (
	// DefaultBatchPriceRate is the price of a request in a provider batch relative to
	// the same synchronous call: half, as OpenRouter and OpenAI bill batches.
	DefaultBatchPriceRate = 0.5
	// MaxBatchRequests is the most requests one batch may hold (OpenRouter's limit).
	MaxBatchRequests = 5000
	// MaxBatchBytes is the largest batch body or uploaded file accepted.
	MaxBatchBytes = 200 << 20
	// BatchKeyMetadata is the metadata key (or, without one, the custom_id prefix
	// before the last '-') the simulator counts idempotency keys by, as flashpipe's
	// batchapi sends it.
	BatchKeyMetadata = "flashpipe_key"
)

// BatchConfig configures the simulated batch APIs: OpenRouter's inline batches
// (POST /batches with a requests array) and the OpenAI file-based shape (POST /files,
// then POST /batches with an input_file_id), both under /api/v1, /v1 or the root.
type BatchConfig struct {
	// Delay is how long a batch takes to complete after its submission (0: it is
	// complete at the first poll). The first tenth of it a batch is validating.
	Delay time.Duration
	// FailRate is the fraction of requests that fail inside a completed batch (a
	// transient server error per request), drawn per custom_id (seeded by Seed).
	FailRate float64
	// ExpireRate is the fraction of batches that expire instead of completing: at
	// Delay, with only the requests at even indexes answered.
	ExpireRate float64
	// PriceRate scales the price of a request in a batch (0: DefaultBatchPriceRate).
	PriceRate float64
	// OnSubmit, if set, is called for each batch submission once its body is read and
	// checked (accepted false) and once the batch is stored, before the answer is
	// written (accepted true): a test's moment to kill its client. A submission whose
	// client went away by the time the first call returns is not accepted.
	OnSubmit func(ctx context.Context, accepted bool)
	// OnPoll, if set, is called for each GET of a batch.
	OnPoll func(id string)
}

func (b *BatchConfig) validate() error {
	for name, r := range map[string]float64{"FailRate": b.FailRate, "ExpireRate": b.ExpireRate} {
		if r < 0 || r > 1 || math.IsNaN(r) {
			return fmt.Errorf("llmsim: BatchConfig.%s %v is not in [0, 1]", name, r)
		}
	}
	if b.Delay < 0 {
		return fmt.Errorf("llmsim: BatchConfig.Delay %v is negative", b.Delay)
	}
	if b.PriceRate < 0 || b.PriceRate > 1 || math.IsNaN(b.PriceRate) {
		return fmt.Errorf("llmsim: BatchConfig.PriceRate %v is not in [0, 1]", b.PriceRate)
	}
	return nil
}

// SetBatch replaces the batch settings, effective for batches submitted from now on.
func (s *Simulator) SetBatch(b BatchConfig) error {
	if err := b.validate(); err != nil {
		return err
	}
	if b.PriceRate == 0 {
		b.PriceRate = DefaultBatchPriceRate
	}
	s.bt.mu.Lock()
	s.bt.cfg = b
	s.bt.mu.Unlock()
	return nil
}

// BatchStats counts what the batch endpoints did.
type BatchStats struct {
	// Submitted counts batches accepted; DuplicateKeys those whose idempotency key
	// (metadata flashpipe_key, or the custom_id prefix) an earlier batch had: a
	// client paying twice for one batch.
	Submitted, DuplicateKeys int64
	// Requests counts requests in accepted batches; Answered those billed; Failed
	// those failed by FailRate; Expired and Cancelled those left unanswered.
	Requests, Answered, Failed, Unanswered int64
	// Cost is what the batches were billed (USD), also in Stats.Cost.
	Cost float64
	// Keys maps each idempotency key to the number of batches submitted with it.
	Keys map[string]int
}

// BatchStats returns the batch counters so far.
func (s *Simulator) BatchStats() BatchStats {
	s.bt.mu.Lock()
	defer s.bt.mu.Unlock()
	st := s.bt.st
	st.Keys = make(map[string]int, len(s.bt.keys))
	for k, v := range s.bt.keys {
		st.Keys[k] = v
	}
	return st
}

// CancelAllBatches cancels every batch still running (an operator at the provider's
// console), for tests of the fallback to the synchronous API.
func (s *Simulator) CancelAllBatches() int {
	s.bt.mu.Lock()
	defer s.bt.mu.Unlock()
	n := 0
	now := time.Now()
	for _, b := range s.bt.batches {
		if !b.terminal(now) {
			b.cancelled = true
			n++
		}
	}
	return n
}

type batchStore struct {
	mu      sync.Mutex
	cfg     BatchConfig
	batches map[string]*simBatch
	order   []string
	files   map[string][]byte
	keys    map[string]int
	st      BatchStats
	n       int
}

type simRequest struct {
	CustomID string          `json:"custom_id"`
	Body     json.RawMessage `json:"body"`
}

type simBatch struct {
	id, model, endpoint, key, inputFile string
	fileShape                           bool
	metadata                            map[string]string
	created                             time.Time
	cfg                                 BatchConfig
	expire, cancelled                   bool
	requests                            []simRequest
	// results, once terminal: one JSON line per answered or failed request.
	results               []json.RawMessage
	done, failed          int
	outputFile, errorFile string
	computed              bool
}

func (b *simBatch) terminal(now time.Time) bool {
	return b.cancelled || !now.Before(b.created.Add(b.cfg.Delay))
}

func (b *simBatch) status(now time.Time) string {
	switch {
	case b.cancelled:
		return "cancelled"
	case now.Before(b.created.Add(b.cfg.Delay / 10)):
		return "validating"
	case now.Before(b.created.Add(b.cfg.Delay)):
		return "in_progress"
	case b.expire:
		return "expired"
	}
	return "completed"
}

// serveBatches serves the batch and file endpoints; false if path is none of them.
func (s *Simulator) serveBatches(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	for _, pre := range []string{"/api/v1", "/v1"} {
		if q, ok := strings.CutPrefix(p, pre); ok && (strings.HasPrefix(q, "/batches") || strings.HasPrefix(q, "/files")) {
			p = q
			break
		}
	}
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 0 || (parts[0] != "batches" && parts[0] != "files") {
		return false
	}
	if !s.authorized(w, r) {
		return true
	}
	switch {
	case parts[0] == "files" && len(parts) == 1 && r.Method == http.MethodPost:
		s.uploadFile(w, r)
	case parts[0] == "files" && len(parts) == 3 && parts[2] == "content" && r.Method == http.MethodGet:
		s.bt.mu.Lock()
		b, ok := s.bt.files[parts[1]]
		s.bt.mu.Unlock()
		if !ok {
			s.writeError(w, http.StatusNotFound, "No such file: "+parts[1], nil, false)
			return true
		}
		w.Header().Set("Content-Type", "application/jsonl")
		_, _ = w.Write(b)
	case parts[0] == "batches" && len(parts) == 1 && r.Method == http.MethodPost:
		s.submitBatch(w, r)
	case parts[0] == "batches" && len(parts) == 1 && r.Method == http.MethodGet:
		s.listBatches(w)
	case parts[0] == "batches" && len(parts) == 2 && r.Method == http.MethodGet:
		s.getBatch(w, parts[1])
	case parts[0] == "batches" && len(parts) == 3 && parts[2] == "cancel" && r.Method == http.MethodPost:
		s.bt.mu.Lock()
		b, ok := s.bt.batches[parts[1]]
		if ok && !b.terminal(time.Now()) {
			b.cancelled = true
		}
		s.bt.mu.Unlock()
		if !ok {
			s.writeError(w, http.StatusNotFound, "No such batch: "+parts[1], nil, false)
			return true
		}
		s.getBatch(w, parts[1])
	default:
		s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed: "+r.Method+" "+r.URL.Path, nil, false)
	}
	return true
}

func (s *Simulator) uploadFile(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBatchBytes+1<<20)
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid upload: "+err.Error(), nil, false)
		return
	}
	if r.FormValue("purpose") != "batch" {
		s.writeError(w, http.StatusBadRequest, "Invalid upload: purpose must be \"batch\"", nil, false)
		return
	}
	f, _, err := r.FormFile("file")
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid upload: no file", nil, false)
		return
	}
	defer f.Close()
	content, err := io.ReadAll(f)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid upload: "+err.Error(), nil, false)
		return
	}
	s.bt.mu.Lock()
	s.bt.n++
	id := "file-sim" + strconv.Itoa(s.bt.n)
	s.bt.files[id] = content
	s.bt.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "purpose": "batch", "bytes": len(content)})
}

func (s *Simulator) submitBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBatchBytes+1<<20))
	if err != nil {
		s.writeError(w, http.StatusRequestEntityTooLarge, "Batch too large", nil, false)
		return
	}
	var in struct {
		Endpoint         string            `json:"endpoint"`
		Model            string            `json:"model"`
		CompletionWindow string            `json:"completion_window"`
		InputFileID      string            `json:"input_file_id"`
		Metadata         map[string]string `json:"metadata"`
		Requests         []simRequest      `json:"requests"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid JSON body: "+err.Error(), nil, false)
		return
	}
	if in.Endpoint != "/v1/chat/completions" {
		s.writeError(w, http.StatusBadRequest, "endpoint must be /v1/chat/completions", nil, false)
		return
	}
	b := &simBatch{model: in.Model, endpoint: in.Endpoint, metadata: in.Metadata, created: time.Now(), fileShape: in.InputFileID != ""}
	if b.fileShape {
		s.bt.mu.Lock()
		content, ok := s.bt.files[in.InputFileID]
		s.bt.mu.Unlock()
		if !ok {
			s.writeError(w, http.StatusBadRequest, "No such file: "+in.InputFileID, nil, false)
			return
		}
		b.inputFile = in.InputFileID
		for i, line := range bytes.Split(content, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var l struct {
				CustomID string          `json:"custom_id"`
				Method   string          `json:"method"`
				URL      string          `json:"url"`
				Body     json.RawMessage `json:"body"`
			}
			if err := json.Unmarshal(line, &l); err != nil || l.CustomID == "" || l.URL != in.Endpoint {
				s.writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid input file line %d", i+1), nil, false)
				return
			}
			b.requests = append(b.requests, simRequest{CustomID: l.CustomID, Body: l.Body})
			if b.model == "" {
				var m struct {
					Model string `json:"model"`
				}
				_ = json.Unmarshal(l.Body, &m)
				b.model = m.Model
			}
		}
	} else {
		if in.Model == "" {
			s.writeError(w, http.StatusBadRequest, "No model provided", nil, false)
			return
		}
		b.requests = in.Requests
	}
	if len(b.requests) == 0 || len(b.requests) > MaxBatchRequests {
		s.writeError(w, http.StatusBadRequest, fmt.Sprintf("A batch holds 1 to %d requests, not %d", MaxBatchRequests, len(b.requests)), nil, false)
		return
	}
	seen := make(map[string]bool, len(b.requests))
	for _, q := range b.requests {
		if q.CustomID == "" || seen[q.CustomID] {
			s.writeError(w, http.StatusBadRequest, "custom_id must be set and unique: "+q.CustomID, nil, false)
			return
		}
		seen[q.CustomID] = true
	}
	if on := s.batchConfig().OnSubmit; on != nil {
		on(r.Context(), false)
		if r.Context().Err() != nil {
			return // the client went away before the batch was accepted
		}
	}
	b.key = in.Metadata[BatchKeyMetadata]
	if b.key == "" {
		if i := strings.LastIndexByte(b.requests[0].CustomID, '-'); i > 0 {
			b.key = b.requests[0].CustomID[:i]
		}
	}
	s.bt.mu.Lock()
	s.bt.n++
	b.id = "batch_sim" + strconv.Itoa(s.bt.n)
	b.cfg = s.bt.cfg
	b.expire = s.unit("expire", b.id) < b.cfg.ExpireRate
	s.bt.batches[b.id] = b
	s.bt.order = append(s.bt.order, b.id)
	s.bt.st.Submitted++
	s.bt.st.Requests += int64(len(b.requests))
	if b.key != "" {
		if s.bt.keys[b.key] > 0 {
			s.bt.st.DuplicateKeys++
		}
		s.bt.keys[b.key]++
	}
	b.created = time.Now()
	view := s.batchView(b, b.created, false)
	view["status"] = "validating" // an accepted batch is validated first, as the APIs answer
	s.bt.mu.Unlock()
	if b.cfg.OnSubmit != nil {
		b.cfg.OnSubmit(r.Context(), true)
	}
	status := http.StatusAccepted // OpenRouter: 202 validating
	if b.fileShape {
		status = http.StatusOK // OpenAI: 200
	}
	writeJSON(w, status, view)
}

func (s *Simulator) batchConfig() BatchConfig {
	s.bt.mu.Lock()
	defer s.bt.mu.Unlock()
	return s.bt.cfg
}

func (s *Simulator) getBatch(w http.ResponseWriter, id string) {
	if on := s.batchConfig().OnPoll; on != nil {
		on(id)
	}
	s.bt.mu.Lock()
	b, ok := s.bt.batches[id]
	var view map[string]any
	if ok {
		now := time.Now()
		if b.terminal(now) && !b.computed {
			s.computeResults(b, now)
		}
		view = s.batchView(b, now, !b.fileShape)
	}
	s.bt.mu.Unlock()
	if !ok {
		s.writeError(w, http.StatusNotFound, "No such batch: "+id, nil, false)
		return
	}
	writeJSON(w, http.StatusOK, view)
}

func (s *Simulator) listBatches(w http.ResponseWriter) {
	s.bt.mu.Lock()
	now := time.Now()
	data := make([]map[string]any, 0, len(s.bt.order))
	for i := len(s.bt.order) - 1; i >= 0; i-- {
		b := s.bt.batches[s.bt.order[i]]
		if b.terminal(now) && !b.computed {
			s.computeResults(b, now)
		}
		data = append(data, s.batchView(b, now, false))
	}
	s.bt.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data, "has_more": false})
}

// batchView is a batch as the API shows it; withResults adds the inline results of a
// terminal batch (OpenRouter).
func (s *Simulator) batchView(b *simBatch, now time.Time, withResults bool) map[string]any {
	st := b.status(now)
	v := map[string]any{
		"id": b.id, "object": "batch", "endpoint": b.endpoint, "model": b.model, "status": st,
		"completion_window": "24h", "created_at": b.created.Unix(),
		"request_counts": map[string]int{"total": len(b.requests), "completed": b.done, "failed": b.failed},
	}
	if b.metadata != nil {
		v["metadata"] = b.metadata
	}
	if b.fileShape {
		v["input_file_id"] = b.inputFile
		if b.outputFile != "" {
			v["output_file_id"] = b.outputFile
		}
		if b.errorFile != "" {
			v["error_file_id"] = b.errorFile
		}
	}
	if withResults {
		if b.computed {
			v["results"] = b.results
		} else {
			v["results"] = nil
		}
	}
	return v
}

// computeResults answers (and bills) a batch that just became terminal. Called with
// s.bt.mu held.
func (s *Simulator) computeResults(b *simBatch, now time.Time) {
	b.computed = true
	if b.cancelled {
		s.bt.st.Unanswered += int64(len(b.requests))
		return
	}
	var out, errs bytes.Buffer
	for i, q := range b.requests {
		var line []byte
		switch {
		case b.expire && i%2 == 1:
			s.bt.st.Unanswered++
			continue
		case s.unit("fail", q.CustomID) < b.cfg.FailRate:
			b.failed++
			s.bt.st.Failed++
			line, _ = json.Marshal(map[string]any{"id": "resp-" + q.CustomID, "custom_id": q.CustomID, "response": nil,
				"error": map[string]any{"code": "server_error", "type": "server_error", "message": "The simulated provider failed this request"}})
			errs.Write(line)
			errs.WriteByte('\n')
		default:
			status, body, cost := s.batchAnswer(q.Body, b.cfg.PriceRate, now)
			if status == http.StatusOK {
				b.done++
			} else {
				b.failed++
			}
			s.bt.st.Answered++
			s.bt.st.Cost += cost
			line, _ = json.Marshal(map[string]any{"id": "resp-" + q.CustomID, "custom_id": q.CustomID,
				"response": map[string]any{"status_code": status, "request_id": "req-" + q.CustomID, "body": json.RawMessage(body)}, "error": nil})
			out.Write(line)
			out.WriteByte('\n')
		}
		b.results = append(b.results, line)
	}
	if b.fileShape {
		s.bt.n++
		if out.Len() > 0 {
			b.outputFile = "file-sim" + strconv.Itoa(s.bt.n) + "-out"
			s.bt.files[b.outputFile] = out.Bytes()
		}
		if errs.Len() > 0 {
			b.errorFile = "file-sim" + strconv.Itoa(s.bt.n) + "-err"
			s.bt.files[b.errorFile] = errs.Bytes()
		}
	}
}

// batchAnswer answers one request of a batch as a chat completion, billed at rate.
func (s *Simulator) batchAnswer(body []byte, rate float64, now time.Time) (int, []byte, float64) {
	var req chatRequest
	d := s.decoders.Get().(*wire.Decoder)
	defer func() { d.Reset(nil); s.decoders.Put(d) }()
	if err := decodeChatRequest(d, body, &req); err != nil || req.Model == "" || len(req.Messages) == 0 {
		rec := newRecorder()
		s.writeError(rec, http.StatusBadRequest, "Invalid request body", nil, false)
		return rec.code, rec.buf.Bytes(), 0
	}
	promptBytes := 0
	for i := range req.Messages {
		promptBytes += req.Messages[i].size + 16
	}
	in, inErr := stages.DecodeInput(req.User)
	stage := 0
	if inErr == nil {
		stage = in.Stage()
	}
	rec := newRecorder()
	s.answer(rec, &req, in, inErr == nil, stage, kNone, s.seq.Add(1), promptBytes, now, rate)
	var u struct {
		Usage struct {
			Cost float64 `json:"cost"`
		} `json:"usage"`
	}
	_ = json.Unmarshal(rec.buf.Bytes(), &u)
	return rec.code, rec.buf.Bytes(), u.Usage.Cost
}

// unit returns a deterministic number in [0, 1) for (what, id) under the seed.
func (s *Simulator) unit(what, id string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(what))
	_, _ = h.Write([]byte(id))
	x := splitmix64(uint64(s.cfg.Seed) ^ h.Sum64())
	return float64(x>>11) / (1 << 53)
}

type recorder struct {
	h    http.Header
	code int
	buf  bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}, code: http.StatusOK} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.buf.Write(b) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
