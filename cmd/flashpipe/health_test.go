package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// Every service serves /healthz and /readyz on --metrics-addr with the checks of its
// parts; readiness follows NATS going away and coming back, and `flashpipe
// healthcheck` turns it into an exit code for container healthchecks.
func TestServicesServeHealth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	natsPort := freePorts(t, 1)[0]
	startNATS := func() *natsx.Embedded {
		srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: dir, Port: natsPort})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}
	srv := startNATS()
	prefix := natstest.UniquePrefix(t)
	common := []string{"--nats-url", srv.ClientURL(), "--prefix", prefix}
	services := []struct {
		args   []string
		checks []string
	}{
		{append([]string{"processor", "--api-base-url", "http://127.0.0.1:1/v1"}, common...), []string{"nats", "streams", "consumer"}},
		{append([]string{"sequencer"}, common...), []string{"nats", "streams", "consumer"}},
		{append([]string{"sink", "--sqlite", filepath.Join(dir, "h.db")}, common...), []string{"nats", "streams", "consumer", "database"}},
	}
	ports := freePorts(t, len(services))
	urls := make([]string, len(services))
	for i, s := range services {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		urls[i] = "http://" + addr
		cmd := exec.Command(binary, append(s.args, "--metrics-addr", addr)...)
		cmd.Env = cleanEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	readyz := func(i int) (int, health.Report) {
		resp, err := http.Get(urls[i] + health.ReadinessPath)
		if err != nil {
			return 0, health.Report{}
		}
		defer resp.Body.Close()
		var rep health.Report
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		return resp.StatusCode, rep
	}
	healthcheck := func(i int, path string) int {
		_, _, code := flashpipeCmd(t, dir, "healthcheck", "--url", urls[i]+path, "--timeout", "3s")
		return code
	}

	// waitReadyz waits until service i's /readyz answers code and the report
	// satisfies ok, and returns the report.
	waitReadyz := func(i, code int, ok func(health.Report) bool, msg string) health.Report {
		var rep health.Report
		natstest.Eventually(t, 30*time.Second, func() bool {
			var got int
			got, rep = readyz(i)
			return got == code && ok(rep)
		}, "%s: %s: %+v", services[i].args[0], msg, &rep)
		return rep
	}
	anyReport := func(health.Report) bool { return true }

	for i, s := range services {
		rep := waitReadyz(i, http.StatusOK, anyReport, "/readyz never answered 200")
		var names []string
		for _, c := range rep.Checks {
			names = append(names, c.Name)
		}
		if !slices.Equal(names, s.checks) {
			t.Errorf("%s: checks %v, want %v", s.args[0], names, s.checks)
		}
		if code := healthcheck(i, health.ReadinessPath); code != 0 {
			t.Errorf("%s: healthcheck on a ready service exited %d", s.args[0], code)
		}
	}

	srv.Shutdown()
	for i, s := range services {
		waitReadyz(i, http.StatusServiceUnavailable, func(r health.Report) bool { return slices.Contains(r.Failed(), "nats") },
			"/readyz does not say NATS is down")
		if code := healthcheck(i, health.ReadinessPath); code != 1 {
			t.Errorf("%s: healthcheck while NATS is down exited %d, want 1", s.args[0], code)
		}
		if code := healthcheck(i, health.LivenessPath); code != 0 {
			t.Errorf("%s: liveness failed while NATS is down (it must not: a restart does not bring NATS back)", s.args[0])
		}
	}

	startNATS()
	for i := range services {
		waitReadyz(i, http.StatusOK, anyReport, "not ready again after NATS came back")
	}
	if _, stderr, code := flashpipeCmd(t, dir, "healthcheck", "--url", "http://127.0.0.1:1/readyz"); code != 1 || !strings.Contains(stderr, "healthcheck http://127.0.0.1:1/readyz") {
		t.Errorf("healthcheck of nothing: exit %d, %s", code, stderr)
	}
}
