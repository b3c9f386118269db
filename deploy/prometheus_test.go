package deploy_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// promConfig mirrors the fields of Prometheus's configuration file that
// deploy/prometheus/prometheus.yml uses, decoded strictly (an unknown or misspelt key
// fails). Prometheus's own config package would bring the AWS, Azure and Google SDKs
// (remote-write authentication) into the module for three fields.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	RuleFiles     []string       `json:"rule_files"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type scrapeConfig struct {
	JobName      string `json:"job_name"`
	DNSSDConfigs []struct {
		Names           []string `json:"names"`
		Type            string   `json:"type"`
		Port            int      `json:"port"`
		RefreshInterval string   `json:"refresh_interval"`
	} `json:"dns_sd_configs"`
	StaticConfigs []struct {
		Targets []string `json:"targets"`
	} `json:"static_configs"`
}

func loadPrometheusConfig(t *testing.T) promConfig {
	t.Helper()
	var c promConfig
	if err := yaml.UnmarshalStrict(readFile(t, "prometheus/prometheus.yml"), &c); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	for _, d := range []string{c.Global.ScrapeInterval, c.Global.EvaluationInterval} {
		if _, err := model.ParseDuration(d); err != nil {
			t.Errorf("prometheus.yml: global: %v", err)
		}
	}
	jobs := map[string]bool{}
	for _, j := range c.ScrapeConfigs {
		if j.JobName == "" || jobs[j.JobName] {
			t.Errorf("prometheus.yml: job name %q empty or repeated", j.JobName)
		}
		jobs[j.JobName] = true
	}
	for _, s := range services {
		if !jobs["flashpipe-"+s] {
			t.Errorf("prometheus.yml: no job flashpipe-%s (the alert rules use these job names)", s)
		}
	}
	return c
}

// grafanaDatasources and grafanaDashboards mirror Grafana's provisioning files (no Go
// types of Grafana are importable without Grafana itself), decoded strictly.
type grafanaDatasources struct {
	APIVersion  int `json:"apiVersion"`
	Datasources []struct {
		Name      string `json:"name"`
		UID       string `json:"uid"`
		Type      string `json:"type"`
		Access    string `json:"access"`
		URL       string `json:"url"`
		IsDefault bool   `json:"isDefault"`
		Editable  bool   `json:"editable"`
	} `json:"datasources"`
}

type grafanaDashboards struct {
	APIVersion int `json:"apiVersion"`
	Providers  []struct {
		Name                  string `json:"name"`
		Type                  string `json:"type"`
		Folder                string `json:"folder"`
		DisableDeletion       bool   `json:"disableDeletion"`
		AllowUIUpdates        bool   `json:"allowUiUpdates"`
		UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `json:"path"`
			FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
		} `json:"options"`
	} `json:"providers"`
}

func loadGrafanaDatasources(t *testing.T) grafanaDatasources {
	t.Helper()
	var d grafanaDatasources
	if err := yaml.UnmarshalStrict(readFile(t, "grafana/provisioning/datasources/prometheus.yml"), &d); err != nil {
		t.Fatalf("grafana data sources: %v", err)
	}
	if d.APIVersion != 1 {
		t.Errorf("grafana data sources: apiVersion %d", d.APIVersion)
	}
	return d
}

func loadGrafanaDashboards(t *testing.T) grafanaDashboards {
	t.Helper()
	var d grafanaDashboards
	if err := yaml.UnmarshalStrict(readFile(t, "grafana/provisioning/dashboards/flashpipe.yml"), &d); err != nil {
		t.Fatalf("grafana dashboards: %v", err)
	}
	if d.APIVersion != 1 {
		t.Errorf("grafana dashboards: apiVersion %d", d.APIVersion)
	}
	return d
}

var promqlParser = parser.NewParser(parser.Options{})

// checkQuery parses a PromQL expression and checks that every metric it reads exists.
func checkQuery(t *testing.T, where, expr string, code map[string]bool) {
	t.Helper()
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && !knownMetric(code, vs.Name) {
			t.Errorf("%s: metric %s does not exist (processor, sequencer, scheduler and sink register: see their metrics.go)", where, vs.Name)
		}
		return nil
	})
}

// The alert rules pass Prometheus's own rule-file validation (what promtool check
// rules runs), read only metrics that exist, and each has a severity, a summary and a
// description; docs/deploy.md explains every one.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	groups, errs := rulefmt.ParseFile("prometheus/alerts.yml", false, model.LegacyValidation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	code := metricNames(t)
	docs := string(readFile(t, "../docs/deploy.md"))
	seen := map[string]bool{}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			checkQuery(t, "alert "+r.Alert, r.Expr, code)
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: wants a summary and a description", r.Alert)
			}
			if !strings.Contains(docs, "`"+r.Alert+"`") {
				t.Errorf("alert %s is not explained in docs/deploy.md", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert rules")
	}
}

var exprField = regexp.MustCompile(`"expr":\s*"((?:[^"\\]|\\.)*)"`)

// The dashboard's queries parse and read only metrics that exist.
func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile("grafana/flashpipe.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("flashpipe.json: %v", err)
	}
	code := metricNames(t)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			checkQuery(t, "dashboard panel "+p.Title, tg.Expr, code)
		}
	}
	if want := len(exprField.FindAll(b, -1)); n == 0 || n != want {
		t.Errorf("read %d queries of the dashboard's %d", n, want)
	}
}
