package deploy_test

import (
	"context"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/flashpipe/flashpipe/internal/processor"
)

// loadCompose loads docker-compose.yml the way `docker compose` does (compose-go is the
// loader of Docker Compose itself), with the given profiles, without .env.api.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"},
		cli.WithWorkingDirectory(".."), cli.WithEnv([]string{}), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// flashpipeServices returns the compose services that run the flashpipe image.
func flashpipeServices(t *testing.T, p *types.Project) map[string]types.ServiceConfig {
	t.Helper()
	out := map[string]types.ServiceConfig{}
	for name, s := range p.Services {
		if s.Build != nil {
			out[name] = s
		}
	}
	return out
}

// The compose file's wiring: every flashpipe service runs the image built from
// deploy/Dockerfile with real commands, flags and variables; the long-running ones have
// the readiness healthcheck and wait for a healthy NATS; the sink waits for a healthy
// PostgreSQL and a successful migrate; processors have replicas and the simulator.
func TestComposeWiring(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	fp := flashpipeServices(t, p)
	var names []string
	for name := range fp {
		names = append(names, name)
	}
	sort.Strings(names)
	if want := []string{"migrate", "processor", "sequencer", "simulator", "sink"}; !slices.Equal(names, want) {
		t.Fatalf("flashpipe services %v, want %v", names, want)
	}
	if _, ok := p.DisabledServices["submit"]; !ok {
		t.Error("submit must be a tool (profile tools), not started by `docker compose up`")
	}
	image := ""
	for _, name := range names {
		s := fp[name]
		if s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Context != p.WorkingDir {
			t.Errorf("%s: build %s in %s, want deploy/Dockerfile in the repository root", name, s.Build.Dockerfile, s.Build.Context)
		}
		if image == "" {
			image = s.Image
		} else if s.Image != image {
			t.Errorf("%s: image %s, the others %s", name, s.Image, image)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: wants a read-only root and no capabilities", name)
		}
		checkArgs(t, "compose "+name, s.Command)
		var env []string
		for k := range s.Environment {
			env = append(env, k)
		}
		checkEnv(t, "compose "+name, s.Command[0], env)
	}

	nats, pg := p.Services["nats"], p.Services["postgres"]
	if nats.HealthCheck == nil || nats.HealthCheck.Disable || !slices.Contains(nats.Command, "--jetstream") {
		t.Error("nats: wants JetStream and a healthcheck")
	}
	if pg.HealthCheck == nil || pg.HealthCheck.Disable {
		t.Error("postgres: wants a healthcheck")
	}
	for _, name := range services {
		s := fp[name]
		want := []string{"CMD", "flashpipe", "healthcheck", "--url", "http://127.0.0.1:9090/readyz"}
		if s.HealthCheck == nil || !slices.Equal(s.HealthCheck.Test, want) {
			t.Errorf("%s: healthcheck %v, want %v", name, s.HealthCheck, want)
		}
		if addr := s.Environment["FLASHPIPE_METRICS_ADDR"]; addr == nil || *addr != ":9090" {
			t.Errorf("%s: FLASHPIPE_METRICS_ADDR must be :9090 (the healthcheck and Prometheus use it)", name)
		}
		if dep := s.DependsOn["nats"]; dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: must wait for a healthy nats, has %q", name, dep.Condition)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < processor.DefaultDrainTimeout+5*time.Second {
			t.Errorf("%s: stop_grace_period must outlast the processors' drain (%s)", name, processor.DefaultDrainTimeout)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q", name, s.Restart)
		}
	}
	sink := fp["sink"]
	if sink.DependsOn["migrate"].Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("sink must wait for migrate to complete successfully, has %q", sink.DependsOn["migrate"].Condition)
	}
	if sink.DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Error("sink must wait for a healthy postgres")
	}
	migrate := fp["migrate"]
	if migrate.Restart != types.RestartPolicyNo || migrate.DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Error("migrate must be a one-shot (restart no) after a healthy postgres")
	}
	for _, name := range []string{"sink", "migrate"} {
		if url := fp[name].Environment["FLASHPIPE_POSTGRES_URL"]; url == nil || *url == "" {
			t.Errorf("%s: no FLASHPIPE_POSTGRES_URL", name)
		}
	}
	proc := fp["processor"]
	if proc.Deploy == nil || proc.Deploy.Replicas == nil || *proc.Deploy.Replicas < 2 {
		t.Error("processor: wants deploy.replicas of at least 2")
	}
	// Without .env.api the processors call the simulator service (env_file is resolved
	// into the environment by the loader).
	if u := proc.Environment["FLASHPIPE_API_BASE_URL"]; u == nil || *u != "http://simulator:8089/api/v1" {
		t.Errorf("processor: FLASHPIPE_API_BASE_URL %v, want the simulator", u)
	}
	if proc.DependsOn["simulator"].Condition != types.ServiceConditionHealthy {
		t.Error("processor: wants a healthy simulator")
	}
	if slices.Contains(fp["simulator"].Command, "127.0.0.1:8089") || !slices.Contains(fp["simulator"].Command, ":8089") {
		t.Errorf("simulator: must listen on :8089 for the other containers, command %v", fp["simulator"].Command)
	}

	// The tools profile: submit writes the TSV to ./out.
	tools := loadCompose(t, "tools")
	submit := tools.Services["submit"]
	checkArgs(t, "compose submit", submit.Command)
	if submit.Restart != types.RestartPolicyNo {
		t.Error("submit: a one-shot")
	}
}

// Every flashpipe service of the compose file is scraped by Prometheus at its metrics
// address, and Grafana is provisioned with the dashboard and the data source.
func TestComposeMonitoring(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	prom := loadPrometheusConfig(t)
	for _, name := range services {
		found := false
		for _, job := range prom.ScrapeConfigs {
			for _, sd := range job.DNSSDConfigs {
				if slices.Contains(sd.Names, name) && sd.Port == 9090 && sd.Type == "A" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("prometheus.yml: no scrape job of %s:9090 (every replica: dns_sd_configs type A)", name)
		}
	}
	promSvc := p.Services["prometheus"]
	if !mounts(promSvc, "deploy/prometheus", "/etc/prometheus") {
		t.Error("prometheus: must mount deploy/prometheus at /etc/prometheus")
	}
	if !slices.Contains(prom.RuleFiles, "alerts.yml") {
		t.Error("prometheus.yml: must load alerts.yml")
	}
	for _, job := range prom.ScrapeConfigs {
		for _, sc := range job.StaticConfigs {
			for _, target := range sc.Targets {
				host, _, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("prometheus.yml: job %s: target %q: %v", job.JobName, target, err)
					continue
				}
				if _, ok := p.Services[host]; !ok && host != "localhost" {
					t.Errorf("prometheus.yml: job %s scrapes %s, not a compose service", job.JobName, target)
				}
			}
		}
	}

	grafana := p.Services["grafana"]
	ds := loadGrafanaDatasources(t)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" || !ds.Datasources[0].IsDefault {
		t.Errorf("grafana data source: %+v, want the compose prometheus as default", ds.Datasources)
	}
	dash := loadGrafanaDashboards(t)
	if len(dash.Providers) != 1 {
		t.Fatalf("grafana dashboard providers: %+v", dash.Providers)
	}
	if !mounts(grafana, "deploy/grafana/flashpipe.json", dash.Providers[0].Options.Path+"/flashpipe.json") {
		t.Errorf("grafana: deploy/grafana/flashpipe.json must be mounted in %s, the provider's path", dash.Providers[0].Options.Path)
	}
	if !mounts(grafana, "deploy/grafana/provisioning", "/etc/grafana/provisioning") {
		t.Error("grafana: must mount deploy/grafana/provisioning at /etc/grafana/provisioning")
	}
}

// mounts reports whether s bind-mounts the repository's source at target.
func mounts(s types.ServiceConfig, source, target string) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target && hasSuffixPath(v.Source, source) {
			return true
		}
	}
	return false
}

func hasSuffixPath(path, suffix string) bool {
	return len(path) >= len(suffix)+1 && path[len(path)-len(suffix)-1:] == "/"+suffix
}

// The HTTP API (profile api): the flashpipe image with real flags and variables, the
// readiness healthcheck, a healthy NATS and database first, a token from the
// environment (it serves a network address).
func TestComposeAPIProfile(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "api")
	s, ok := p.Services["api"]
	if !ok {
		t.Fatal("no api service in the api profile")
	}
	checkArgs(t, "compose api", s.Command)
	var env []string
	for k := range s.Environment {
		env = append(env, k)
	}
	checkEnv(t, "compose api", s.Command[0], env)
	want := []string{"CMD", "flashpipe", "healthcheck", "--url", "http://127.0.0.1:9090/readyz"}
	if s.HealthCheck == nil || !slices.Equal(s.HealthCheck.Test, want) {
		t.Errorf("api: healthcheck %v, want %v", s.HealthCheck, want)
	}
	if s.DependsOn["nats"].Condition != types.ServiceConditionHealthy || s.DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Error("api: must wait for a healthy nats and postgres")
	}
	if _, ok := s.Environment["FLASHPIPE_API_TOKENS"]; !ok {
		t.Error("api: serves a network address, so it needs FLASHPIPE_API_TOKENS")
	}
	if url := s.Environment["FLASHPIPE_POSTGRES_URL"]; url == nil || *url == "" {
		t.Error("api: no FLASHPIPE_POSTGRES_URL")
	}
}
