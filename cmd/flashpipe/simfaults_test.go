package main

import (
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/secret"
)

// parseSimulateAPI parses args as `flashpipe simulate-api` would and returns the
// simulator configuration the command builds.
func parseSimulateAPI(t *testing.T, args ...string) llmsim.Config {
	t.Helper()
	var cmd SimulateAPICmd
	p, err := kong.New(&cmd, kong.Bind(secret.New()), simFaultVars())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return cmd.simConfig(nil)
}

// Each of the simulator's knobs is reachable from a simulate-api flag, and each flag
// sets exactly its knob.
func TestSimulateAPIFlagsReachEveryKnob(t *testing.T) {
	base := parseSimulateAPI(t)
	want := llmsim.Config{Faults: llmsim.Faults{TimeoutDelay: llmsim.DefaultTimeoutDelay}}
	if !reflect.DeepEqual(base, want) {
		t.Fatalf("no flags: config %+v, want %+v (the simulator's defaults)", base, want)
	}
	cases := []struct {
		flag string
		set  func(*llmsim.Config)
	}{
		{"--sim-latency=150ms", func(c *llmsim.Config) { c.Latency = 150 * time.Millisecond }},
		{"--sim-jitter=20ms", func(c *llmsim.Config) { c.LatencyJitter = 20 * time.Millisecond }},
		{"--sim-rpm=120", func(c *llmsim.Config) { c.RPM = 120 }},
		{"--sim-burst=7", func(c *llmsim.Config) { c.Burst = 7 }},
		{"--sim-seed=42", func(c *llmsim.Config) { c.Seed = 42 }},
		{"--sim-require-key=sk-rehearsal", func(c *llmsim.Config) { c.RequireKey = "sk-rehearsal" }},
		{"--sim-rate-5xx=0.1", func(c *llmsim.Config) { c.Faults.Rate5xx = 0.1 }},
		{"--sim-rate-429=0.2", func(c *llmsim.Config) { c.Faults.Rate429 = 0.2 }},
		{"--sim-rate-402-transient=0.03", func(c *llmsim.Config) { c.Faults.Rate402Transient = 0.03 }},
		{"--sim-rate-402-credits=0.04", func(c *llmsim.Config) { c.Faults.Rate402Credits = 0.04 }},
		{"--sim-rate-timeout=0.05", func(c *llmsim.Config) { c.Faults.RateTimeout = 0.05 }},
		{"--sim-timeout-delay=2s", func(c *llmsim.Config) { c.Faults.TimeoutDelay = 2 * time.Second }},
		{"--sim-rate-malformed=0.06", func(c *llmsim.Config) { c.Faults.RateMalformed = 0.06 }},
		{"--sim-rate-fenced=0.07", func(c *llmsim.Config) { c.Faults.RateFenced = 0.07 }},
		{"--sim-rate-error-body=0.08", func(c *llmsim.Config) { c.Faults.RateErrorBody = 0.08 }},
		{"--sim-rate-empty=0.09", func(c *llmsim.Config) { c.Faults.RateEmpty = 0.09 }},
		{"--sim-rate-invalid-answer=0.11", func(c *llmsim.Config) { c.Faults.RateInvalidAnswer = 0.11 }},
		{"--sim-rate-echo-key=0.12", func(c *llmsim.Config) { c.Faults.RateEchoKey = 0.12 }},
		{"--sim-fail-term=학교=400,사과=503", func(c *llmsim.Config) { c.Faults.FailTerms = map[string]int{"학교": 400, "사과": 503} }},
	}
	all := base
	var allFlags []string
	for _, tc := range cases {
		want := base
		tc.set(&want)
		if got := parseSimulateAPI(t, tc.flag); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: config\n%+v, want\n%+v", tc.flag, got, want)
		}
		tc.set(&all)
		allFlags = append(allFlags, tc.flag)
	}
	got := parseSimulateAPI(t, allFlags...)
	if !reflect.DeepEqual(got, all) {
		t.Errorf("every flag at once: config\n%+v, want\n%+v", got, all)
	}
	// A knob added to llmsim without a flag fails here: every field of Config and
	// Faults is set by some flag, except the logger and the prices (not faults).
	unset := zeroFields(reflect.ValueOf(got), "Config", map[string]bool{
		"Config.Logger": true, "Config.PricePromptPerM": true, "Config.PriceCompletionPerM": true,
	})
	if len(unset) > 0 {
		t.Errorf("simulator knobs no simulate-api flag reaches: %s", strings.Join(unset, ", "))
	}
}

// zeroFields lists the fields of the struct v (recursing into structs) left at their
// zero value, named prefix.Field, skipping those in skip.
func zeroFields(v reflect.Value, prefix string, skip map[string]bool) []string {
	var out []string
	for i := range v.NumField() {
		name := prefix + "." + v.Type().Field(i).Name
		f := v.Field(i)
		switch {
		case skip[name]:
		case f.Kind() == reflect.Struct:
			out = append(out, zeroFields(f, name, skip)...)
		case f.IsZero():
			out = append(out, name)
		}
	}
	return out
}

// A fault flag works on the running command: with --sim-rate-429 1 every chat
// completion is answered 429 with Retry-After, and with --sim-fail-term the term's
// status.
func TestSimulateAPIFaultFlagsServe(t *testing.T) {
	t.Parallel()
	sim := startChild(t, "simulate-api", "simulate-api", "--addr", "127.0.0.1:0", "--sim-rate-429", "1")
	sim.waitLog("--api-base-url", 30*time.Second)
	base := regexp.MustCompile(`--api-base-url (\S+)`).FindStringSubmatch(sim.log())
	if base == nil {
		t.Fatalf("simulate-api printed no base URL:\n%s", sim.log())
	}
	body := `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	resp, err := http.Post(base[1]+"/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("with --sim-rate-429 1: status %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
