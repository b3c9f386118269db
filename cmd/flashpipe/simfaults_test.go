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
	cfg, _ := simulateAPIParser(t, args...)
	return cfg
}

// simulateAPIParser parses args into a SimulateAPICmd and returns its simulator
// configuration and the parser. Defaults taken from kong variables main defines for
// other flags than the fault flags are "0" here (the tests compare configurations
// with and without a flag).
func simulateAPIParser(t *testing.T, args ...string) (llmsim.Config, *kong.Kong) {
	t.Helper()
	var cmd SimulateAPICmd
	vars := kong.Vars{}
	for _, name := range defaultVars(reflect.TypeOf(cmd)) {
		vars[name] = "0"
	}
	p, err := kong.New(&cmd, kong.Bind(secret.New()), vars, simFaultVars())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return cmd.simConfig(nil), p
}

// defaultVars lists the kong variables the default tags of a struct's fields name.
func defaultVars(typ reflect.Type) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Anonymous {
			out = append(out, defaultVars(f.Type)...)
			continue
		}
		for _, m := range regexp.MustCompile(`\$\{(\w+)\}`).FindAllStringSubmatch(f.Tag.Get("default"), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// Each of the simulator's knobs is reachable from a simulate-api flag, and each flag
// sets exactly its knob.
func TestSimulateAPIFlagsReachEveryKnob(t *testing.T) {
	base := parseSimulateAPI(t)
	if want := (llmsim.Faults{TimeoutDelay: llmsim.DefaultTimeoutDelay}); !reflect.DeepEqual(base.Faults, want) ||
		base.Seed != 0 || base.Burst != 0 || base.RequireKey != "" {
		t.Fatalf("no flags: config %+v, want no faults (the simulator's defaults)", base)
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

	// A knob added to llmsim without a flag fails here: each --sim-* flag of the
	// command, given a value of its own, changes some knobs; together they change
	// every field of Config (and of the structs in it), except the logger, hooks
	// (functions) and the price list (prices are no fault: the spend flags own them).
	_, p := simulateAPIParser(t)
	reached := map[string]bool{}
	for _, f := range p.Model.Node.Flags {
		if !strings.HasPrefix(f.Name, "sim-") {
			continue
		}
		var value string
		switch f.Target.Kind() {
		case reflect.Int, reflect.Int64:
			if f.Target.Type() == reflect.TypeOf(time.Duration(0)) {
				value = "1234ms"
			} else {
				value = "7"
			}
		case reflect.Float64:
			value = "0.01"
		case reflect.String:
			value = "rehearsal"
		case reflect.Map:
			value = "rehearsal=503"
		default:
			t.Fatalf("--%s: no test value for a %s", f.Name, f.Target.Type())
		}
		for _, name := range changedFields(reflect.ValueOf(base), reflect.ValueOf(parseSimulateAPI(t, "--"+f.Name+"="+value)), "Config") {
			reached[name] = true
		}
	}
	skip := map[string]bool{"Config.Logger": true, "Config.PricePromptPerM": true, "Config.PriceCompletionPerM": true, "Config.Models": true}
	for _, name := range leafFields(reflect.TypeOf(base), "Config") {
		if !reached[name] && !skip[name] {
			t.Errorf("simulator knob %s: no simulate-api flag reaches it", name)
		}
	}
}

// leafFields names the fields of a struct type that are not structs (recursing into
// those) nor functions: prefix.Field.Sub.
func leafFields(typ reflect.Type, prefix string) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := prefix + "." + f.Name
		switch {
		case !f.IsExported() || f.Type.Kind() == reflect.Func:
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}):
			out = append(out, leafFields(f.Type, name)...)
		default:
			out = append(out, name)
		}
	}
	return out
}

// changedFields names the leaf fields (see leafFields) where a and b differ.
func changedFields(a, b reflect.Value, prefix string) []string {
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		name := prefix + "." + f.Name
		switch {
		case !f.IsExported() || f.Type.Kind() == reflect.Func:
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}):
			out = append(out, changedFields(a.Field(i), b.Field(i), name)...)
		case !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()):
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
