package llmsim

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
	"github.com/flashpipe/flashpipe/internal/stages"
)

func (s *Simulator) chat(w http.ResponseWriter, r *http.Request) {
	c := &s.st
	c.requests.Add(1)
	n := s.seq.Add(1)
	if !s.authorized(w, r) {
		return
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.putBuf(bp)
	body, err := readBody(r, (*bp)[:0])
	*bp = body[:0]
	if err != nil {
		if errors.Is(err, errTooLarge) {
			s.writeError(w, http.StatusRequestEntityTooLarge, "Request body too large", nil, false)
			return
		}
		c.countStatus(499) // the client went away
		return
	}
	var req chatRequest
	d := s.decoders.Get().(*wire.Decoder)
	defer func() { d.Reset(nil); s.decoders.Put(d) }() // req.User may point into d
	if err := decodeChatRequest(d, body, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid JSON body: "+err.Error(), nil, false)
		return
	}
	switch {
	case req.Model == "":
		s.writeError(w, http.StatusBadRequest, "No model provided", nil, false)
		return
	case len(req.Messages) == 0:
		s.writeError(w, http.StatusBadRequest, "Input required: specify \"messages\"", nil, false)
		return
	case req.Stream:
		s.writeError(w, http.StatusBadRequest, "The simulator does not stream: set \"stream\": false", nil, false)
		return
	}
	promptBytes := 0
	for i := range req.Messages {
		promptBytes += req.Messages[i].size + 16
	}
	in, inErr := stages.DecodeInput(req.User)
	stage := 0
	if inErr == nil {
		stage = in.Stage()
		n, _ := s.termCalls.LoadOrStore(in.Term, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	switch stage {
	case 1:
		c.calls1.Add(1)
	case 2:
		c.calls2.Add(1)
	default:
		c.other.Add(1)
	}

	now := time.Now()
	if s.limiter != nil && !s.limiter.AllowN(now, 1) {
		c.limited.Add(1)
		s.writeRateLimited(w, now)
		return
	}

	f := s.faults.Load()
	u, u2 := s.draw(n)
	kind := f.pick(u)
	if status, ok := f.FailTerms[in.Term]; ok && inErr == nil {
		c.faults[kFailTerm].Add(1)
		if !s.sleep(r.Context(), s.latency(u2)) {
			return
		}
		s.writeFailTerm(w, status, in.Term)
		return
	}
	if kind != kNone {
		c.faults[kind].Add(1)
	}
	if !s.sleep(r.Context(), s.latency(u2)) {
		return
	}

	switch kind {
	case k5xx:
		codes := [...]int{500, 502, 503, 524, 529}
		code := codes[n%uint64(len(codes))]
		if code == 503 {
			w.Header()["Retry-After"] = hdrOne
		}
		s.writeError(w, code, "Provider returned error", map[string]any{"error_type": "provider_unavailable", "provider_name": ProviderName}, false)
		return
	case k429:
		w.Header()["Retry-After"] = hdrOne
		s.writeError(w, http.StatusTooManyRequests, "Provider returned error: rate limited upstream",
			map[string]any{"error_type": "rate_limit_exceeded", "provider_name": ProviderName}, false)
		return
	case k402T:
		w.Header()["Retry-After"] = hdrOne
		s.writeError(w, http.StatusPaymentRequired,
			"This request would exceed your available credits given your current in-flight requests. Retry after in-flight requests settle, or add credits.",
			map[string]any{"reason": "in_flight_budget_exhausted", "limit_source": "openrouter_in_flight_budget",
				"remedy_hint": "Retry after your in-flight requests settle (see the Retry-After header)."}, true)
		return
	case k402C:
		s.writeError(w, http.StatusPaymentRequired, "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
			map[string]any{"limit_source": "openrouter_credits"}, true)
		return
	case kTimeout:
		if !s.sleep(r.Context(), f.TimeoutDelay) {
			return
		}
	case kEchoKey:
		s.writeEchoKey(w, r)
		return
	}
	s.answer(w, &req, in, inErr == nil, stage, kind, n, promptBytes, now, 1)
}

var errTooLarge = errors.New("request body too large")

// readBody reads r's body into b (grown as needed), up to MaxRequestBytes.
func readBody(r *http.Request, b []byte) ([]byte, error) {
	if r.ContentLength > MaxRequestBytes {
		return b, errTooLarge
	}
	if r.ContentLength > 0 && int(r.ContentLength) > cap(b) {
		b = make([]byte, 0, r.ContentLength)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if len(b) > MaxRequestBytes {
			return b, errTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func (s *Simulator) latency(u float64) time.Duration {
	d := s.cfg.Latency
	if j := s.cfg.LatencyJitter; j > 0 {
		d += time.Duration(u * float64(j))
	}
	return d
}

func (s *Simulator) putBuf(b *[]byte) {
	if cap(*b) <= 1<<20 {
		s.bufs.Put(b)
	}
}

func (s *Simulator) appendContent(b []byte, in stages.Input, stage int, skip string) []byte {
	if stage == 2 {
		sp := s.bufs.Get().(*[]byte)
		b, *sp = appendStage2(b, in, skip != "", (*sp)[:0])
		s.putBuf(sp)
		return b
	}
	return appendStage1(b, in, skip)
}

// answer writes a 200 chat completion for the request, with the content faults.
// rate scales the price: 1 for a synchronous call, the batch rate for a request of
// a provider batch.
func (s *Simulator) answer(w http.ResponseWriter, req *chatRequest, in stages.Input, haveInput bool, stage, kind int, n uint64, promptBytes int, now time.Time, rate float64) {
	c := &s.st
	bp := s.bufs.Get().(*[]byte)
	defer s.putBuf(bp)
	content := (*bp)[:0]
	switch {
	case kind == kEmpty:
	case !haveInput:
		content = append(content, "Simulated answer: the simulator answers flashpipe's stage prompts; this message had no input block."...)
	case kind == kFenced:
		content = append(content, "Here is the answer you asked for:\n\n```json\n"...)
		content = s.appendContent(content, in, stage, "")
		content = append(content, "\n```\n\nLet me know if you need anything else."...)
	case kind == kInvalid:
		content = s.appendContent(content, in, stage, "primary_meaning")
	default:
		content = s.appendContent(content, in, stage, "")
	}
	*bp = content[:0]
	finish := "stop"
	completionTokens := int64(0)
	if len(content) > 0 {
		completionTokens = int64(len(content)+3) / 4
	}
	if req.MaxTokens > 0 && completionTokens > int64(req.MaxTokens) {
		// Cut the answer where max_tokens ends it, like a real model.
		cut := req.MaxTokens * 4
		for cut > 0 && cut < len(content) && content[cut]&0xC0 == 0x80 {
			cut--
		}
		content = content[:cut]
		completionTokens = int64(req.MaxTokens)
		finish = "length"
	}
	promptTokens := int64(promptBytes+3) / 4
	promptCost := float64(promptTokens) * s.cfg.PricePromptPerM / 1e6 * rate
	completionCost := float64(completionTokens) * s.cfg.PriceCompletionPerM / 1e6 * rate
	cost := promptCost + completionCost

	out := s.bufs.Get().(*[]byte)
	defer s.putBuf(out)
	b := (*out)[:0]
	created := now.Unix()
	var idBuf [48]byte
	id := appendGenID(idBuf[:0], created, n)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","provider":"`+ProviderName+`","model":`...)
	b = wire.AppendString(b, req.Model)
	b = append(b, `,"object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	if kind == kErrorBody && n%2 == 0 {
		// Top-level error object, no choices.
		b = append(b, `,"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable","provider_name":"`+ProviderName+`"}}`...)
	} else {
		b = append(b, `,"choices":[{"logprobs":null,"finish_reason":`...)
		if kind == kErrorBody {
			b = append(b, `"error","native_finish_reason":"error","index":0,"message":{"role":"assistant","content":`...)
			b = wire.AppendBytes(b, content[:len(content)/3])
			b = append(b, `,"refusal":null,"reasoning":null},"error":{"code":502,"message":"Provider disconnected mid-stream","metadata":{"error_type":"provider_unavailable"}}}]`...)
		} else {
			b = append(b, '"')
			b = append(b, finish...)
			b = append(b, `","native_finish_reason":"`...)
			b = append(b, finish...)
			b = append(b, `","index":0,"message":{"role":"assistant","content":`...)
			b = wire.AppendBytes(b, content)
			b = append(b, `,"refusal":null,"reasoning":null}}]`...)
		}
	}
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, promptTokens, 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, completionTokens, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, promptTokens+completionTokens, 10)
	b = append(b, `,"cost":`...)
	b = strconv.AppendFloat(b, cost, 'g', -1, 64)
	b = append(b, `,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":`...)
	b = strconv.AppendFloat(b, promptCost, 'g', -1, 64)
	b = append(b, `,"upstream_inference_completions_cost":`...)
	b = strconv.AppendFloat(b, completionCost, 'g', -1, 64)
	b = append(b, `}}}`...)
	*out = b[:0]
	if kind == kMalformed {
		b = b[:len(b)/2]
	}

	c.promptTokens.Add(promptTokens)
	c.completionTokens.Add(completionTokens)
	c.addCost(cost)
	if kind == kNone && finish == "stop" && haveInput {
		switch stage {
		case 1:
			c.ok1.Add(1)
		case 2:
			c.ok2.Add(1)
		}
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["X-Generation-Id"] = []string{string(id)}
	w.WriteHeader(http.StatusOK)
	c.countStatus(http.StatusOK)
	_, _ = w.Write(b)
}

func appendGenID(b []byte, created int64, n uint64) []byte {
	b = append(b, "gen-"...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, n, 36)
	return b
}

// writeRateLimited answers the RPM limit's 429 like OpenRouter.
func (s *Simulator) writeRateLimited(w http.ResponseWriter, now time.Time) {
	wait := time.Duration(0)
	if tokens := s.limiter.TokensAt(now); tokens < 1 {
		wait = time.Duration((1 - tokens) / float64(s.limiter.Limit()) * float64(time.Second))
	}
	reset := now.Add(wait)
	secs := max(1, int(math.Ceil(wait.Seconds())))
	limit := strconv.Itoa(s.cfg.RPM)
	resetMs := strconv.FormatInt(reset.UnixMilli(), 10)
	h := w.Header()
	h["Retry-After"] = []string{strconv.Itoa(secs)}
	h["X-Ratelimit-Limit"] = []string{limit}
	h["X-Ratelimit-Remaining"] = []string{"0"}
	h["X-Ratelimit-Reset"] = []string{resetMs}
	s.writeError(w, http.StatusTooManyRequests, "Rate limit exceeded: limit_rpm/simulator/"+limit, map[string]any{
		"headers": map[string]string{
			"X-RateLimit-Limit":     limit,
			"X-RateLimit-Remaining": "0",
			"X-RateLimit-Reset":     resetMs,
		},
		"provider_name": nil,
	}, true)
}

func (s *Simulator) writeFailTerm(w http.ResponseWriter, status int, term string) {
	msg := "Simulated failure for term " + strconv.Quote(term)
	var meta map[string]any
	switch status {
	case http.StatusPaymentRequired:
		meta = map[string]any{"limit_source": "openrouter_credits"}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		w.Header()["Retry-After"] = hdrOne
	case http.StatusForbidden:
		meta = map[string]any{"reasons": []string{"simulated"}, "flagged_input": term, "provider_name": ProviderName, "model_slug": "simulator"}
	}
	s.writeError(w, status, msg, meta, true)
}

// writeEchoKey answers 403 echoing fragments of the presented key, like a provider
// that names the key it refuses.
func (s *Simulator) writeEchoKey(w http.ResponseWriter, r *http.Request) {
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	head, tail, mid := key, key, key
	if len(key) >= 24 {
		head, tail, mid = key[:12], key[len(key)-10:], key[len(key)/2-4:len(key)/2+5]
	}
	s.writeError(w, http.StatusForbidden, "Key "+head+"..."+tail+" may not use this model",
		map[string]any{"key_hint": mid, "provider_name": ProviderName}, true)
}

// writeError writes OpenRouter's error body {"error":{"code","message","metadata"}}.
func (s *Simulator) writeError(w http.ResponseWriter, status int, msg string, meta map[string]any, userID bool) {
	e := struct {
		Code     int            `json:"code"`
		Message  string         `json:"message"`
		Metadata map[string]any `json:"metadata,omitempty"`
	}{status, msg, meta}
	body := struct {
		Error  any    `json:"error"`
		UserID string `json:"user_id,omitempty"`
	}{Error: e}
	if userID {
		body.UserID = "user_simulator"
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	s.st.countStatus(status)
	_, _ = w.Write(b)
}

// key answers GET /key with OpenRouter's key-info shape.
func (s *Simulator) key(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	usage := math.Float64frombits(s.st.costBits.Load())
	b, _ := json.Marshal(map[string]any{"data": map[string]any{
		"label":                 "sk-or-v1-sim...",
		"limit":                 nil,
		"limit_reset":           nil,
		"limit_remaining":       nil,
		"include_byok_in_limit": false,
		"usage":                 usage,
		"usage_daily":           usage,
		"usage_weekly":          usage,
		"usage_monthly":         usage,
		"byok_usage":            0,
		"byok_usage_daily":      0,
		"byok_usage_weekly":     0,
		"byok_usage_monthly":    0,
		"is_free_tier":          false,
	}})
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
