package llmsim_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// start runs a simulator on 127.0.0.1:0 and returns it with a client for it.
func start(t *testing.T, cfg llmsim.Config, ccfg llm.Config) (*llmsim.Simulator, *llm.Client) {
	t.Helper()
	sim, err := llmsim.New(cfg)
	if err != nil {
		t.Fatalf("llmsim.New: %v", err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/api/v1") {
		t.Errorf("URL = %q", url)
	}
	if ccfg.BaseURL == "" {
		ccfg.BaseURL = url
	}
	if ccfg.APIKey == "" {
		ccfg.APIKey = "sk-or-v1-test"
	}
	c, err := llm.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

var (
	cfg   = stages.DefaultConfig()
	nouns = flashpipe.Item{Position: 12, Term: "남성", Type: "noun"}
)

// items returns the repository's 1,000-word example list, or a few words without it.
func items(t *testing.T) []flashpipe.Item {
	t.Helper()
	f, err := os.Open("../../examples/vocabulary_1000.csv")
	if err != nil {
		return []flashpipe.Item{nouns, {Position: 1, Term: "내가", Type: "pronoun"}, {Position: 3, Term: "빠르다", Type: "adj"},
			{Position: 4, Term: "에서", Type: "particle"}, {Position: 5, Term: "OK", Type: ""}, {Position: 6, Term: "잘 부탁드립니다", Type: "phrase"}}
	}
	defer f.Close()
	var out []flashpipe.Item
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ",")
		pos, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || len(parts) != 3 {
			continue
		}
		out = append(out, flashpipe.Item{Position: pos, Term: parts[1], Type: flashpipe.NormalizeType(parts[2])})
	}
	return out
}

// complete1 runs stage 1 for it and parses the answer.
func complete1(t *testing.T, c *llm.Client, it flashpipe.Item) (*llm.Response, *flashpipe.Analysis) {
	t.Helper()
	resp, err := c.Complete(context.Background(), stages.Stage1Request(cfg, it))
	if err != nil {
		t.Fatalf("stage 1 for %q: %v", it.Term, err)
	}
	a, err := stages.ParseStage1(resp.Content, it)
	if err != nil {
		t.Fatalf("ParseStage1 for %q: %v\n%s", it.Term, err, resp.Content)
	}
	return resp, a
}

func TestAnswersAreValidForEveryExampleWord(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{}, llm.Config{})
	list := items(t)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, it := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, a := complete1(t, c, it)
			if a.TermNumber != it.Position || !strings.HasPrefix(a.Term, it.Term+"[") || a.POS != it.Type && flashpipe.IsKnownType(it.Type) {
				t.Errorf("%q: analysis %+v", it.Term, a)
			}
			if resp.Provider != "Simulator" || resp.Model != cfg.Model1 || !strings.HasPrefix(resp.ID, "gen-") || resp.Header.Get("X-Generation-Id") != resp.ID {
				t.Errorf("%q: response id %q provider %q model %q", it.Term, resp.ID, resp.Provider, resp.Model)
			}
			resp2, err := c.Complete(context.Background(), stages.Stage2Request(cfg, it, a))
			if err != nil {
				t.Errorf("stage 2 for %q: %v", it.Term, err)
				return
			}
			cards, err := stages.ParseStage2(resp2.Content, it, a)
			if err != nil {
				t.Errorf("ParseStage2 for %q: %v\n%s", it.Term, err, resp2.Content)
				return
			}
			if len(cards) != 3 || cards[0].TabName != stages.TabScene || cards[1].TabName != stages.TabUsageComparison || cards[2].TabName != stages.TabHanja {
				t.Errorf("%q: cards %+v", it.Term, cards)
			}
			for _, card := range cards {
				if n := len(strings.Fields(card.Front)); n < 15 || n > 30 {
					t.Errorf("%q %s: front has %d words: %q", it.Term, card.TabName, n, card.Front)
				}
				if n := len(strings.Fields(card.Back)); n < 80 || n > 150 {
					t.Errorf("%q %s: back has %d words: %q", it.Term, card.TabName, n, card.Back)
				}
				if card.Primer != stages.Primer(a.POS, it.Position, it.Term, card.TabName) {
					t.Errorf("%q: primer %q", it.Term, card.Primer)
				}
			}
			mu.Lock()
			defer mu.Unlock()
		}()
	}
	wg.Wait()
	st := sim.Stats()
	n := int64(len(list))
	if st.Stage1Calls != n || st.Stage2Calls != n || st.Stage1OK != n || st.Stage2OK != n || st.Requests != 2*n || st.Responses[200] != 2*n {
		t.Errorf("stats %+v, want %d calls per stage", st, n)
	}
	if st.PromptTokens == 0 || st.CompletionTokens == 0 || st.Cost <= 0 || st.FaultsTotal() != 0 {
		t.Errorf("usage stats %+v", st)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	_, c1 := start(t, llmsim.Config{Seed: 1}, llm.Config{})
	_, c2 := start(t, llmsim.Config{Seed: 2}, llm.Config{})
	r1, a := complete1(t, c1, nouns)
	r2, _ := complete1(t, c2, nouns)
	if r1.Content != r2.Content || r1.Usage != r2.Usage {
		t.Errorf("same input, different answers:\n%s\n%s", r1.Content, r2.Content)
	}
	if r1.ID == r2.ID && r1.ID != "" {
		// ids may repeat across simulators (same counter and second); not an error.
		t.Logf("ids %q %q", r1.ID, r2.ID)
	}
	s1, _ := c1.Complete(context.Background(), stages.Stage2Request(cfg, nouns, a))
	s2, _ := c2.Complete(context.Background(), stages.Stage2Request(cfg, nouns, a))
	if s1.Content != s2.Content {
		t.Error("same stage 2 input, different answers")
	}
	other, _ := complete1(t, c1, flashpipe.Item{Position: 12, Term: "여성", Type: "noun"})
	if other.Content == r1.Content {
		t.Error("different terms, same answer")
	}
}

func TestUsageAndCost(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{PricePromptPerM: 3, PriceCompletionPerM: 15}, llm.Config{})
	resp, _ := complete1(t, c, nouns)
	u := resp.Usage
	wantCompletion := int64(len(resp.Content)+3) / 4
	if u.CompletionTokens != wantCompletion || u.PromptTokens < 500 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage %+v, want completion %d", u, wantCompletion)
	}
	want := float64(u.PromptTokens)*3/1e6 + float64(u.CompletionTokens)*15/1e6
	if d := u.Cost - want; d > 1e-12 || d < -1e-12 {
		t.Errorf("cost %v, want %v", u.Cost, want)
	}
	st := sim.Stats()
	if st.PromptTokens != u.PromptTokens || st.CompletionTokens != u.CompletionTokens || st.Cost != u.Cost {
		t.Errorf("stats %+v vs usage %+v", st, u)
	}
	k, err := c.Key(context.Background())
	if err != nil || k.Usage != u.Cost || k.Limit != nil {
		t.Errorf("Key() = %+v, %v", k, err)
	}
}

func TestMaxTokensCutsTheAnswer(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{}, llm.Config{})
	req := stages.Stage1Request(cfg, nouns)
	req.MaxTokens = 20
	resp, err := c.Complete(context.Background(), req)
	if !errors.Is(err, llm.ErrMaxTokens) || !flashpipe.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent ErrMaxTokens", err)
	}
	if resp == nil || resp.Usage.CompletionTokens != 20 || len(resp.Content) > 80 {
		t.Errorf("response %+v", resp)
	}
}

// faultCase is one injected fault and what the client must make of it.
type faultCase struct {
	name   string
	faults llmsim.Faults
	ccfg   llm.Config
	kind   string
	check  func(t *testing.T, resp *llm.Response, err error)
}

func wantClass(t *testing.T, err error, class flashpipe.ErrorClass) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a %s one", class)
	}
	if got := flashpipe.ClassOf(err); got != class {
		t.Errorf("class %s, want %s (%v)", got, class, err)
	}
}

func apiStatus(err error) int {
	var ae *llm.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestFaultsAreClassified(t *testing.T) {
	t.Parallel()
	for _, tc := range []faultCase{
		{name: "5xx", faults: llmsim.Faults{Rate5xx: 1}, kind: llmsim.Fault5xx, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if s := apiStatus(err); s != 500 && s != 502 && s != 503 && s != 524 && s != 529 {
				t.Errorf("status %d", s)
			}
		}},
		{name: "429", faults: llmsim.Faults{Rate429: 1}, kind: llmsim.Fault429, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if apiStatus(err) != 429 || flashpipe.RetryAfterOf(err) != time.Second {
				t.Errorf("status %d retry after %v", apiStatus(err), flashpipe.RetryAfterOf(err))
			}
		}},
		{name: "402 in-flight", faults: llmsim.Faults{Rate402Transient: 1}, kind: llmsim.Fault402Transient, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if errors.Is(err, llm.ErrAccount) || flashpipe.RetryAfterOf(err) != time.Second || apiStatus(err) != 402 {
				t.Errorf("err %v", err)
			}
		}},
		{name: "402 credits", faults: llmsim.Faults{Rate402Credits: 1}, kind: llmsim.Fault402Credits, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Permanent)
			if !errors.Is(err, llm.ErrAccount) {
				t.Errorf("err %v is not ErrAccount", err)
			}
		}},
		{name: "timeout", faults: llmsim.Faults{RateTimeout: 1, TimeoutDelay: 10 * time.Second}, ccfg: llm.Config{Timeout: 150 * time.Millisecond},
			kind: llmsim.FaultTimeout, check: func(t *testing.T, _ *llm.Response, err error) {
				wantClass(t, err, flashpipe.Transient)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err %v is not a timeout", err)
				}
			}},
		{name: "slow but in time", faults: llmsim.Faults{RateTimeout: 1, TimeoutDelay: 30 * time.Millisecond}, kind: llmsim.FaultTimeout,
			check: func(t *testing.T, resp *llm.Response, err error) {
				if err != nil {
					t.Fatalf("err %v", err)
				}
				if _, err := stages.ParseStage1(resp.Content, nouns); err != nil {
					t.Error(err)
				}
			}},
		{name: "malformed", faults: llmsim.Faults{RateMalformed: 1}, kind: llmsim.FaultMalformed, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if !errors.Is(err, llm.ErrMalformedResponse) {
				t.Errorf("err %v", err)
			}
		}},
		{name: "fenced", faults: llmsim.Faults{RateFenced: 1}, kind: llmsim.FaultFenced, check: func(t *testing.T, resp *llm.Response, err error) {
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(resp.Content, "```json\n{") || strings.HasPrefix(resp.Content, "{") {
				t.Errorf("content not fenced: %q", resp.Content)
			}
			if _, err := stages.ParseStage1(resp.Content, nouns); err != nil {
				t.Errorf("fenced answer does not parse: %v", err)
			}
		}},
		{name: "error body", faults: llmsim.Faults{RateErrorBody: 1}, kind: llmsim.FaultErrorBody, check: func(t *testing.T, resp *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if apiStatus(err) != 200 || resp == nil {
				t.Errorf("err %v resp %v", err, resp)
			}
		}},
		{name: "empty", faults: llmsim.Faults{RateEmpty: 1}, kind: llmsim.FaultEmpty, check: func(t *testing.T, resp *llm.Response, err error) {
			wantClass(t, err, flashpipe.Transient)
			if !errors.Is(err, llm.ErrEmptyContent) || resp == nil || resp.Usage.PromptTokens == 0 {
				t.Errorf("err %v resp %+v", err, resp)
			}
		}},
		{name: "invalid answer", faults: llmsim.Faults{RateInvalidAnswer: 1}, kind: llmsim.FaultInvalid, check: func(t *testing.T, resp *llm.Response, err error) {
			if err != nil {
				t.Fatal(err)
			}
			_, perr := stages.ParseStage1(resp.Content, nouns)
			var ie *stages.InvalidAnswerError
			if !errors.Is(perr, stages.ErrInvalidAnswer) || !errors.As(perr, &ie) || ie.Field != "primary_meaning" || flashpipe.ClassOf(perr) != flashpipe.Transient {
				t.Errorf("ParseStage1 = %v", perr)
			}
		}},
		{name: "fail term", faults: llmsim.Faults{FailTerms: map[string]int{"남성": 400}}, kind: llmsim.FaultFailTerm, check: func(t *testing.T, _ *llm.Response, err error) {
			wantClass(t, err, flashpipe.Permanent)
			if apiStatus(err) != 400 {
				t.Errorf("err %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, c := start(t, llmsim.Config{Faults: tc.faults}, tc.ccfg)
			for i := 0; i < 2; i++ { // both variants of faults that alternate
				resp, err := c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
				tc.check(t, resp, err)
			}
			st := sim.Stats()
			if st.Faults[tc.kind] != 2 || st.FaultsTotal() != 2 {
				t.Errorf("fault stats %v, want 2 of %s", st.Faults, tc.kind)
			}
			if st.Stage1OK != 0 {
				t.Errorf("Stage1OK = %d with faults", st.Stage1OK)
			}
		})
	}
}

func TestInvalidStage2Answer(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{Faults: llmsim.Faults{RateInvalidAnswer: 1}}, llm.Config{})
	a := &flashpipe.Analysis{TermNumber: 12, Term: "남성[nam.sʌŋ]", IPA: "nam.sʌŋ", POS: "noun"}
	resp, err := c.Complete(context.Background(), stages.Stage2Request(cfg, nouns, a))
	if err != nil {
		t.Fatal(err)
	}
	_, err = stages.ParseStage2(resp.Content, nouns, a)
	var ie *stages.InvalidAnswerError
	if !errors.As(err, &ie) || ie.Field != "cards[0].front" {
		t.Errorf("ParseStage2 = %v", err)
	}
}

func TestFailTermsOnlyHitThatTerm(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{Faults: llmsim.Faults{FailTerms: map[string]int{"남성": 403}}}, llm.Config{})
	complete1(t, c, flashpipe.Item{Position: 1, Term: "여성", Type: "noun"})
	_, err := c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	if !flashpipe.IsPermanent(err) || apiStatus(err) != 403 {
		t.Errorf("err = %v", err)
	}
}

func TestOutageThenRecovery(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{}, llm.Config{})
	if err := sim.SetFaults(llmsim.Faults{Rate5xx: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	wantClass(t, err, flashpipe.Transient)
	sim.SetFaults(llmsim.Faults{})
	complete1(t, c, nouns)
	if err := sim.SetFaults(llmsim.Faults{Rate5xx: 0.7, Rate429: 0.7}); err == nil {
		t.Error("SetFaults accepted rates adding up to 1.4")
	}
}

func TestFaultRatesAreRoughlyMet(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{Seed: 7, Faults: llmsim.Faults{Rate5xx: 0.2, RateEmpty: 0.1}}, llm.Config{})
	const n = 400
	for i := 0; i < n; i++ {
		c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	}
	st := sim.Stats()
	if f := st.Faults[llmsim.Fault5xx]; f < n*0.2*0.6 || f > n*0.2*1.4 {
		t.Errorf("5xx faults %d of %d, want about %v", f, n, n*0.2)
	}
	if f := st.Faults[llmsim.FaultEmpty]; f < n*0.1*0.5 || f > n*0.1*1.5 {
		t.Errorf("empty faults %d of %d, want about %v", f, n, n*0.1)
	}
	if st.Stage1OK+st.FaultsTotal() != n {
		t.Errorf("ok %d + faults %d != %d", st.Stage1OK, st.FaultsTotal(), n)
	}
}

func TestRPMLimitAnswers429LikeOpenRouter(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{RPM: 60, Burst: 3}, llm.Config{})
	for i := 0; i < 3; i++ {
		complete1(t, c, nouns)
	}
	before := time.Now()
	_, err := c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	wantClass(t, err, flashpipe.Transient)
	var ae *llm.APIError
	if !errors.As(err, &ae) || ae.Status != 429 {
		t.Fatalf("err = %v, want a 429", err)
	}
	if ra := flashpipe.RetryAfterOf(err); ra != time.Second {
		t.Errorf("Retry-After %v, want 1s", ra)
	}
	if ae.RateLimit.Limit != 60 || ae.RateLimit.Remaining != 0 || ae.RateLimit.Reset.Before(before) || ae.RateLimit.Reset.After(before.Add(1100*time.Millisecond)) {
		t.Errorf("RateLimit %+v", ae.RateLimit)
	}
	if hdrs, _ := ae.Metadata["headers"].(map[string]any); hdrs["X-RateLimit-Limit"] != "60" {
		t.Errorf("metadata.headers = %v", ae.Metadata)
	}
	if st := sim.Stats(); st.RateLimited != 1 || st.Responses[429] != 1 || st.Stage1Calls != 4 || st.Stage1OK != 3 {
		t.Errorf("stats %+v", st)
	}
	// The raw headers, as OpenRouter sends them.
	resp, err := http.Post(sim.URL()+"/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	reset, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("X-RateLimit-Limit") != "60" ||
		resp.Header.Get("X-RateLimit-Remaining") != "0" || reset < time.Now().UnixMilli() {
		t.Errorf("429 headers %v", resp.Header)
	}
}

// TestRPMSharedClientLimiterSeesNo429 runs clients that share one client-side token
// bucket at the simulator's rate (burst one second of traffic): the simulator must
// accept every request. Then a client without a limiter must be held to the limit.
func TestRPMSharedClientLimiterSeesNo429(t *testing.T) {
	t.Parallel()
	const rpm = 1200 // 20/s
	sim, c := start(t, llmsim.Config{RPM: rpm}, llm.Config{})
	lim := rate.NewLimiter(rate.Limit(rpm/60.0), rpm/60)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := stages.Stage1Request(cfg, nouns)
			for lim.Wait(ctx) == nil {
				sent.Add(1)
				if _, err := c.Complete(context.Background(), req); err != nil {
					failed.Add(1)
					t.Errorf("request %d: %v", sent.Load(), err)
				}
			}
		}()
	}
	wg.Wait()
	st := sim.Stats()
	if st.RateLimited != 0 || failed.Load() != 0 {
		t.Errorf("%d 429s and %d failures for %d requests within the limit", st.RateLimited, failed.Load(), sent.Load())
	}
	if sent.Load() < 30 {
		t.Errorf("only %d requests in 1.5 s at 20/s", sent.Load())
	}

	// Without a limiter: at most burst + rate*t requests get through.
	sim2, c2 := start(t, llmsim.Config{RPM: 600}, llm.Config{}) // 10/s, burst 20
	begin := time.Now()
	var ok atomic.Int64
	var wg2 sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			req := stages.Stage1Request(cfg, nouns)
			for time.Since(begin) < time.Second {
				if _, err := c2.Complete(context.Background(), req); err == nil {
					ok.Add(1)
				}
			}
		}()
	}
	wg2.Wait()
	elapsed := time.Since(begin).Seconds()
	if max := float64(llmsim.DefaultBurst(600)) + 10*elapsed + 1; float64(ok.Load()) > max {
		t.Errorf("%d requests accepted in %.2fs, limit allows %.0f", ok.Load(), elapsed, max)
	}
	if sim2.Stats().RateLimited == 0 {
		t.Error("no 429 for a client far over the limit")
	}
}

func TestRequireKey(t *testing.T) {
	t.Parallel()
	const key = "sk-or-v1-right"
	sim, good := start(t, llmsim.Config{RequireKey: key}, llm.Config{APIKey: key})
	complete1(t, good, nouns)
	bad, _ := llm.New(llm.Config{BaseURL: sim.URL(), APIKey: "sk-or-v1-wrong"})
	_, err := bad.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	if !errors.Is(err, llm.ErrAccount) || apiStatus(err) != 401 {
		t.Errorf("wrong key: %v", err)
	}
	none, _ := llm.New(llm.Config{BaseURL: sim.URL()})
	if _, err := none.Key(context.Background()); !errors.Is(err, llm.ErrAccount) {
		t.Errorf("no key on /key: %v", err)
	}
	if _, err := good.Key(context.Background()); err != nil {
		t.Errorf("Key: %v", err)
	}
}

func TestEndpointsAndBadRequests(t *testing.T) {
	t.Parallel()
	sim, _ := start(t, llmsim.Config{}, llm.Config{})
	base := strings.TrimSuffix(sim.URL(), "/api/v1")
	body, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]any{
		{"role": "system", "content": "s"},
		{"role": "user", "content": []map[string]string{{"type": "text", "text": stages.Stage1Request(cfg, nouns).Messages[1].Content}}},
	}, "provider": map[string]any{"order": []string{"x"}}, "usage": map[string]bool{"include": true}})
	for _, p := range []string{"/chat/completions", "/v1/chat/completions", "/api/v1/chat/completions"} {
		resp, err := http.Post(base+p, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(out.Choices) != 1 || !strings.HasPrefix(out.Choices[0].Message.Content, `{"term_number":12,`) {
			t.Errorf("POST %s: %d %+v", p, resp.StatusCode, out)
		}
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/api/v1/chat/completions", "", 405},
		{"POST", "/api/v1/nope", "{}", 404},
		{"POST", "/api/v1/chat/completions", "{", 400},
		{"POST", "/api/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400},
		{"POST", "/api/v1/chat/completions", `{"model":"m","messages":[]}`, 400},
		{"POST", "/api/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`, 400},
		{"POST", "/api/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"free text"}]}`, 200},
		{"GET", "/api/v1/key", "", 200},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s %s: %d %s, want %d", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.status)
		}
		if tc.status >= 400 && !bytes.Contains(b, []byte(`"error":{"code":`+strconv.Itoa(tc.status))) {
			t.Errorf("%s %s: body %s is not an OpenRouter error", tc.method, tc.path, b)
		}
	}
	if st := sim.Stats(); st.OtherCalls != 1 {
		t.Errorf("OtherCalls = %d", st.OtherCalls)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{Latency: 80 * time.Millisecond, LatencyJitter: 40 * time.Millisecond}, llm.Config{})
	begin := time.Now()
	complete1(t, c, nouns)
	if d := time.Since(begin); d < 80*time.Millisecond {
		t.Errorf("answer after %v, want at least 80ms", d)
	}
}

func TestCloseEndsStalledRequests(t *testing.T) {
	t.Parallel()
	sim, c := start(t, llmsim.Config{Faults: llmsim.Faults{RateTimeout: 1, TimeoutDelay: time.Minute}}, llm.Config{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for sim.Stats().Requests == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	begin := time.Now()
	if err := sim.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("Close took %v", d)
	}
	select {
	case err := <-done:
		wantClass(t, err, flashpipe.Transient)
		if errors.Is(err, llm.ErrMalformedResponse) {
			t.Errorf("the stalled request got an empty answer, not a dropped connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the stalled request did not end")
	}
	if err := sim.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := sim.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]llmsim.Config{
		"negative latency": {Latency: -1},
		"negative rpm":     {RPM: -1},
		"negative price":   {PricePromptPerM: -1},
		"rate over 1":      {Faults: llmsim.Faults{Rate5xx: 1.5}},
		"rates sum":        {Faults: llmsim.Faults{Rate5xx: 0.6, RateEmpty: 0.6}},
		"fail status":      {Faults: llmsim.Faults{FailTerms: map[string]int{"x": 200}}},
	} {
		if _, err := llmsim.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if b := llmsim.DefaultBurst(6000); b != 200 {
		t.Errorf("DefaultBurst(6000) = %d", b)
	}
	if b := llmsim.DefaultBurst(60); b != 5 {
		t.Errorf("DefaultBurst(60) = %d", b)
	}
}

func TestIPA(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"남성": "nam.sʌŋ", "내가": "nɛ.ka", "빠르다": "p͈a.ɾɯ.ta", "OK 좋아": "ok tɕot̚.a", "": "?"} {
		if got := llmsim.IPA(in); got != want {
			t.Errorf("IPA(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKeywordsAreDistinct(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{}, llm.Config{})
	list := items(t)
	for _, it := range list[:min(50, len(list))] {
		_, a := complete1(t, c, it)
		seen := map[string]bool{}
		for _, k := range a.KoreanKeywords {
			if seen[k] {
				t.Errorf("%q: keyword %q twice in %v", it.Term, k, a.KoreanKeywords)
			}
			seen[k] = true
		}
	}
}

func TestStage2FromLongAnalysisStaysInRange(t *testing.T) {
	t.Parallel()
	_, c := start(t, llmsim.Config{}, llm.Config{})
	long := strings.Repeat("very long meaning ", 11) // 33 words, ~200 characters
	a := &flashpipe.Analysis{TermNumber: 12, Term: "남성[nam.sʌŋ]", IPA: "nam.sʌŋ", POS: "noun", PrimaryMeaning: long,
		AnchorSensory: long, MetaphorNoun: long, SuggestedLocation: long, AnchorObject: long}
	resp, err := c.Complete(context.Background(), stages.Stage2Request(cfg, nouns, a))
	if err != nil {
		t.Fatal(err)
	}
	cards, err := stages.ParseStage2(resp.Content, nouns, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, card := range cards {
		if n := len(strings.Fields(card.Back)); n < 80 || n > 150 {
			t.Errorf("%s back has %d words", card.TabName, n)
		}
	}
}

// The echo fault names fragments of the presented key in its error body, as
// providers do; the client redacts every one of them from its error.
func TestEchoKeyFault(t *testing.T) {
	t.Parallel()
	const key = "sk-or-v1-echo0123456789abcdefghijKLMN"
	sim, c := start(t, llmsim.Config{Faults: llmsim.Faults{RateEchoKey: 1}}, llm.Config{APIKey: key})
	req, _ := http.NewRequest(http.MethodPost, sim.URL()+"/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), key[:12]) ||
		!strings.Contains(string(body), key[len(key)-10:]) || strings.Contains(string(body), key) {
		t.Fatalf("echo fault answered %d %s, want a 403 with fragments of the key", resp.StatusCode, body)
	}
	_, err = c.Complete(context.Background(), stages.Stage1Request(cfg, nouns))
	wantClass(t, err, flashpipe.Permanent)
	var ae *llm.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err %v is no APIError", err)
	}
	for _, text := range []string{err.Error(), ae.Body, fmt.Sprint(ae.Metadata)} {
		for i := 0; i+secret.MinFragment <= len(key); i++ {
			if strings.Contains(text, key[i:i+secret.MinFragment]) {
				t.Fatalf("the client kept %q of the key: %s", key[i:i+secret.MinFragment], text)
			}
		}
	}
	if st := sim.Stats(); st.Faults[llmsim.FaultEchoKey] != 2 {
		t.Errorf("fault stats %v", st.Faults)
	}
}
