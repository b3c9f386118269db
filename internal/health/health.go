// Package health serves a service's liveness and readiness over HTTP, for container
// orchestrators (Kubernetes probes, compose healthchecks) and operators:
//
//	GET /healthz  200 while the process answers (liveness: restart it when this fails)
//	GET /readyz   200 when every check passes, 503 naming the failing checks otherwise
//	              (readiness: the service can do its work now)
//
// A check is a named function with its own timeout. /readyz runs all checks
// concurrently on each request, so it answers within the longest timeout, and writes a
// JSON report listing each check's status and error. Nothing is cached: two requests
// run the checks twice. The checks for flashpipe's parts (the NATS connection, the
// streams, a durable consumer, the database) are in this package too.
//
// A Checker is safe for concurrent use.
package health

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Defaults for Config and Check.
const (
	// DefaultTimeout bounds one run of a check that sets no Timeout. Keep the probes'
	// own timeout above it (Kubernetes timeoutSeconds, compose healthcheck timeout).
	DefaultTimeout = 2 * time.Second
)

// Paths the handlers are registered on by Checker.Register.
const (
	LivenessPath  = "/healthz"
	ReadinessPath = "/readyz"
)

// Check is one named readiness condition.
type Check struct {
	// Name names the check in the report ("nats", "consumer", "database", ...).
	// Required, unique within a Checker.
	Name string
	// Timeout bounds one run (zero: DefaultTimeout). A run that outlasts it fails.
	Timeout time.Duration
	// Run returns nil when the condition holds. It must honour ctx.
	Run func(ctx context.Context) error
}

// Config configures a Checker.
type Config struct {
	// Checks decide readiness, all of them must pass. None: always ready.
	Checks []Check
	// Logger receives a line each time readiness changes (nil: none).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	checks := make([]Check, len(c.Checks))
	for i, ch := range c.Checks {
		ch.Timeout = cmp.Or(ch.Timeout, DefaultTimeout)
		checks[i] = ch
	}
	c.Checks = checks
	return c
}

func (c Config) validate() error {
	seen := make(map[string]bool, len(c.Checks))
	for i, ch := range c.Checks {
		switch {
		case ch.Name == "":
			return fmt.Errorf("health: Config.Checks[%d].Name must not be empty", i)
		case seen[ch.Name]:
			return fmt.Errorf("health: Config.Checks[%d].Name %q is used twice", i, ch.Name)
		case ch.Run == nil:
			return fmt.Errorf("health: Config.Checks[%d] (%s).Run must not be nil", i, ch.Name)
		case ch.Timeout < 0:
			return fmt.Errorf("health: Config.Checks[%d] (%s).Timeout must not be negative", i, ch.Name)
		}
		seen[ch.Name] = true
	}
	return nil
}

// Status values of a Report and of each Result.
const (
	StatusOK       = "ok"
	StatusFail     = "fail"
	StatusReady    = "ready"
	StatusNotReady = "not ready"
	StatusAlive    = "alive"
)

// Result is the outcome of one check.
type Result struct {
	Name string `json:"name"`
	// Status is StatusOK or StatusFail.
	Status string `json:"status"`
	// Error says why the check failed (empty when it passed).
	Error string `json:"error,omitempty"`
	// Millis is how long the check took, in milliseconds.
	Millis float64 `json:"ms"`
}

// Report is the body of /readyz.
type Report struct {
	// Status is StatusReady when every check passed, else StatusNotReady.
	Status string `json:"status"`
	// Checks are the results in the order the checks were configured.
	Checks []Result `json:"checks"`
}

// Ready reports whether every check passed.
func (r Report) Ready() bool { return r.Status == StatusReady }

// Failed returns the names of the checks that failed.
func (r Report) Failed() []string {
	var names []string
	for _, c := range r.Checks {
		if c.Status != StatusOK {
			names = append(names, c.Name)
		}
	}
	return names
}

// Checker runs the checks and serves the two endpoints.
type Checker struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	ready *bool // last readiness seen, for logging changes only
}

// New returns a Checker.
func New(cfg Config) (*Checker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Checker{cfg: cfg, log: cfg.Logger.With("component", "health")}, nil
}

// Check runs every check concurrently, each under its own timeout (and ctx), and
// returns the report.
func (c *Checker) Check(ctx context.Context) Report {
	results := make([]Result, len(c.cfg.Checks))
	var wg sync.WaitGroup
	for i, ch := range c.cfg.Checks {
		wg.Go(func() { results[i] = run(ctx, ch) })
	}
	wg.Wait()
	rep := Report{Status: StatusReady, Checks: results}
	for _, r := range results {
		if r.Status != StatusOK {
			rep.Status = StatusNotReady
		}
	}
	c.logChange(rep)
	return rep
}

// run runs one check. A check that does not return by its deadline fails without
// waiting for it (a check that ignores ctx cannot hold a probe).
func run(ctx context.Context, ch Check) Result {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, ch.Timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ch.Run(cctx) }()
	var err error
	select {
	case err = <-done:
	case <-cctx.Done():
		err = cctx.Err()
	}
	if err == nil && cctx.Err() != nil {
		err = cctx.Err() // answered, but too late to count
	}
	res := Result{Name: ch.Name, Status: StatusOK, Millis: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", ch.Timeout, err)
		}
		res.Status, res.Error = StatusFail, err.Error()
	}
	return res
}

func (c *Checker) logChange(rep Report) {
	ready := rep.Ready()
	c.mu.Lock()
	changed := c.ready == nil || *c.ready != ready
	c.ready = &ready
	c.mu.Unlock()
	switch {
	case !changed:
	case ready:
		c.log.Info("ready")
	default:
		for _, r := range rep.Checks {
			if r.Status != StatusOK {
				c.log.Warn("not ready", "check", r.Name, "err", r.Error)
			}
		}
	}
}

// Register serves LivenessPath and ReadinessPath on mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+LivenessPath, c.serveLiveness)
	mux.HandleFunc("GET "+ReadinessPath, c.serveReadiness)
}

func (c *Checker) serveLiveness(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{StatusAlive})
}

func (c *Checker) serveReadiness(w http.ResponseWriter, r *http.Request) {
	rep := c.Check(r.Context())
	code := http.StatusOK
	if !rep.Ready() {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rep)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
