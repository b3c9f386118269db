package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/internal/testutil/tcpproxy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// serve serves the checker's endpoints on a loopback port and returns the base URL.
func serve(t *testing.T, checks ...health.Check) string {
	t.Helper()
	c, err := health.New(health.Config{Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// get fetches path and decodes the JSON report.
func get(t *testing.T, base, path string) (int, health.Report) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", path, ct)
	}
	var rep health.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp.StatusCode, rep
}

// waitFor polls /readyz until it answers want with exactly the failing checks named.
func waitFor(t *testing.T, base string, want int, failing ...string) health.Report {
	t.Helper()
	var code int
	var rep health.Report
	natstest.Eventually(t, 20*time.Second, func() bool {
		code, rep = get(t, base, health.ReadinessPath)
		return code == want && slices.Equal(rep.Failed(), failing)
	}, "readyz: want %d failing %v, last %d %+v", want, failing, code, &rep)
	return rep
}

func errorOf(rep health.Report, name string) string {
	for _, r := range rep.Checks {
		if r.Name == name {
			return r.Error
		}
	}
	return ""
}

// The checks of a sink (NATS, its streams, its consumer, Postgres) against real parts:
// ready when all are up; 503 naming the check when NATS is stopped, the consumer is
// deleted or Postgres is unreachable; ready again once each comes back.
func TestReadinessFollowsNATSConsumerAndPostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.ServerAt(t, dir)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	nc, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	consumer := jetstream.ConsumerConfig{Durable: "sink", AckPolicy: jetstream.AckExplicitPolicy}
	if _, err := js.CreateOrUpdateConsumer(ctx, c.OrderedStream(), consumer); err != nil {
		t.Fatal(err)
	}

	pgURL, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.Start(t, pgURL.Host)
	pgURL.Host = proxy.Addr()
	store, err := postgres.Open(ctx, pgURL.String(), postgres.Config{AutoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	base := serve(t,
		health.NATS(nc),
		health.Streams(js, c.OrderedStream()),
		health.Consumer(js, c.OrderedStream(), "sink"),
		health.Database(store),
	)
	rep := waitFor(t, base, http.StatusOK)
	if rep.Status != health.StatusReady || len(rep.Checks) != 4 {
		t.Fatalf("all up: %+v", rep)
	}
	if code, _ := get(t, base, health.LivenessPath); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}

	t.Run("consumer deleted", func(t *testing.T) {
		if err := js.DeleteConsumer(ctx, c.OrderedStream(), "sink"); err != nil {
			t.Fatal(err)
		}
		rep := waitFor(t, base, http.StatusServiceUnavailable, health.CheckConsumer)
		if e := errorOf(rep, health.CheckConsumer); !strings.Contains(e, "sink") || !strings.Contains(e, c.OrderedStream()) {
			t.Fatalf("the error does not name the consumer and its stream: %q", e)
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, c.OrderedStream(), consumer); err != nil {
			t.Fatal(err)
		}
		waitFor(t, base, http.StatusOK)
	})

	t.Run("postgres unreachable", func(t *testing.T) {
		proxy.Cut()
		rep := waitFor(t, base, http.StatusServiceUnavailable, health.CheckDatabase)
		if e := errorOf(rep, health.CheckDatabase); e == "" {
			t.Fatal("no error for the database check")
		}
		if code, _ := get(t, base, health.LivenessPath); code != http.StatusOK {
			t.Fatalf("healthz while Postgres is down: %d (liveness must not depend on it)", code)
		}
		proxy.Restore()
		waitFor(t, base, http.StatusOK)
	})

	t.Run("nats stopped", func(t *testing.T) {
		srv.Shutdown()
		start := time.Now()
		rep := waitFor(t, base, http.StatusServiceUnavailable, health.CheckNATS, health.CheckStreams, health.CheckConsumer)
		if took := time.Since(start); took > health.DefaultTimeout {
			t.Errorf("readyz took %s to report NATS down: the JetStream checks should fail at once", took)
		}
		if e := errorOf(rep, health.CheckNATS); !strings.Contains(e, "not connected") {
			t.Fatalf("nats check error: %q", e)
		}
		// The same server again: same port, same store, so the streams and consumer
		// are back and the connection reconnects.
		back, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: dir, Port: portOf(t, u)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(back.Shutdown)
		waitFor(t, base, http.StatusOK)
	})
}

func portOf(t *testing.T, u *url.URL) int {
	t.Helper()
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("no port in %s", u)
	}
	return port
}

// The sqlite store answers the same check.
func TestDatabaseCheckOnSQLite(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/h.db"})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, health.Database(st))
	waitFor(t, base, http.StatusOK)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	rep := waitFor(t, base, http.StatusServiceUnavailable, health.CheckDatabase)
	if !strings.Contains(errorOf(rep, health.CheckDatabase), "sqlite") {
		t.Fatalf("error does not name the driver: %+v", rep)
	}
}

// A check that hangs fails at its timeout, without holding the answer or the others.
func TestCheckTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	base := serve(t,
		health.Check{Name: "stuck", Timeout: 50 * time.Millisecond, Run: func(context.Context) error {
			<-release // ignores its context on purpose
			return nil
		}},
		health.Check{Name: "fine", Run: func(context.Context) error { return nil }},
		health.Check{Name: "broken", Run: func(context.Context) error { return errors.New("boom") }},
	)
	start := time.Now()
	code, rep := get(t, base, health.ReadinessPath)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("readyz took %s with a 50ms timeout", took)
	}
	if code != http.StatusServiceUnavailable || !slices.Equal(rep.Failed(), []string{"stuck", "broken"}) {
		t.Fatalf("got %d %+v", code, rep)
	}
	if e := errorOf(rep, "stuck"); !strings.Contains(e, "no answer within 50ms") {
		t.Fatalf("stuck: %q", e)
	}
	if e := errorOf(rep, "broken"); e != "boom" {
		t.Fatalf("broken: %q", e)
	}
	if rep.Checks[1].Name != "fine" || rep.Checks[1].Status != health.StatusOK {
		t.Fatalf("results out of order or wrong: %+v", rep.Checks)
	}
}

// No checks: always ready (a process with nothing to depend on).
func TestNoChecksIsReady(t *testing.T) {
	t.Parallel()
	base := serve(t)
	if code, rep := get(t, base, health.ReadinessPath); code != http.StatusOK || !rep.Ready() {
		t.Fatalf("%d %+v", code, rep)
	}
}

func TestConfigRefusesBadChecks(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	for name, checks := range map[string][]health.Check{
		"Name must not be empty": {{Run: ok}},
		`"a" is used twice`:      {{Name: "a", Run: ok}, {Name: "a", Run: ok}},
		"Run must not be nil":    {{Name: "a"}},
		"must not be negative":   {{Name: "a", Run: ok, Timeout: -1}},
	} {
		_, err := health.New(health.Config{Checks: checks})
		if err == nil || !strings.Contains(err.Error(), name) || !strings.HasPrefix(err.Error(), "health: Config.Checks[") {
			t.Errorf("%s: got %v", name, err)
		}
	}
}
