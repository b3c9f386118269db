package deploy_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/processor"
)

// scaledObject mirrors KEDA's ScaledObject (keda.sh/v1alpha1, apis/keda/v1alpha1/
// scaledobject_types.go of KEDA 2.20) for the fields a flashpipe file may set, with the
// same JSON names, decoded strictly. KEDA's Go module is served, but its newest release
// needs Go 1.27 and the one before brings every cloud SDK its scalers use (some 300
// modules) and a controller-runtime pinned to an older Kubernetes, for one type.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		ScaleTargetRef *struct {
			Name                   string `json:"name"`
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Advanced              *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
				Name     string                                         `json:"name,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
			MetricType autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// prometheusKeys are the metadata keys of KEDA's prometheus scaler
// (pkg/scalers/prometheus_scaler.go), true when required.
var prometheusKeys = map[string]bool{
	"serverAddress": true, "query": true, "threshold": true, "activationThreshold": false,
	"namespace": false, "customHeaders": false, "ignoreNullValues": false, "unsafeSsl": false,
	"queryParameters": false,
}

// objects are the decoded Kubernetes objects of a file or a build, by kind.
type objects struct {
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	scaled      []*scaledObject
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	services    []*corev1.Service
	accounts    []*corev1.ServiceAccount
	namespaces  []*corev1.Namespace
}

// decode decodes one YAML document strictly into the type of its apiVersion and kind:
// an unknown field, a duplicate key or an unknown kind fails.
func (o *objects) decode(t *testing.T, where string, doc []byte) {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	var into any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		into = add(&o.deployments)
	case "batch/v1 Job":
		into = add(&o.jobs)
	case "policy/v1 PodDisruptionBudget":
		into = add(&o.pdbs)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		into = add(&o.hpas)
	case "keda.sh/v1alpha1 ScaledObject":
		into = add(&o.scaled)
	case "v1 ConfigMap":
		into = add(&o.configMaps)
	case "v1 Secret":
		into = add(&o.secrets)
	case "v1 Service":
		into = add(&o.services)
	case "v1 ServiceAccount":
		into = add(&o.accounts)
	case "v1 Namespace":
		into = add(&o.namespaces)
	default:
		t.Errorf("%s: no Go type known for %s %s", where, tm.APIVersion, tm.Kind)
		return
	}
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Errorf("%s: %s %s: %v", where, tm.APIVersion, tm.Kind, err)
	}
}

// add appends a new T to list and returns it.
func add[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// Every manifest under deploy/k8s decodes strictly into its Kubernetes (or KEDA) type,
// and every kustomization decodes strictly and lists only files that exist.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	var o objects
	n := 0
	err := filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") || p == filepath.Join("k8s", "nats-values.yaml") {
			return err
		}
		b := readFile(t, p)
		if d.Name() == "kustomization.yaml" {
			checkKustomization(t, p, b)
			return nil
		}
		for i, doc := range splitDocs(b) {
			o.decode(t, fmt.Sprintf("%s (document %d)", p, i+1), doc)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || len(o.deployments) < 3 {
		t.Fatalf("decoded %d objects, %d deployments", n, len(o.deployments))
	}
}

// checkKustomization decodes a kustomization (or component) strictly and checks that
// what it lists exists.
func checkKustomization(t *testing.T, p string, b []byte) {
	t.Helper()
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if k.Kind != kusttypes.KustomizationKind && k.Kind != kusttypes.ComponentKind {
		t.Errorf("%s: kind %q", p, k.Kind)
	}
	dir := filepath.Dir(p)
	for _, r := range slices.Concat(k.Resources, k.Components) {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("%s: lists %s: %v", p, r, err)
		}
	}
	if slices.ContainsFunc(k.Components, func(c string) bool { return strings.HasSuffix(c, "keda") }) &&
		slices.ContainsFunc(k.Components, func(c string) bool { return strings.HasSuffix(c, "hpa-external") }) {
		t.Errorf("%s: uses both autoscalers (KEDA makes an HPA of its own)", p)
	}
}

// build runs kustomize (its Go API, what kubectl apply -k runs) on dir of fsys and
// decodes the result strictly.
func build(t *testing.T, fsys filesys.FileSystem, dir string) objects {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var o objects
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		o.decode(t, "build "+dir+": "+r.CurId().String(), y)
	}
	return o
}

func (o objects) deployment(name string) *appsv1.Deployment {
	for _, d := range o.deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (o objects) configMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	for _, c := range o.configMaps {
		if strings.HasPrefix(c.Name, "flashpipe-config") {
			return c
		}
	}
	t.Fatal("no flashpipe-config ConfigMap")
	return nil
}

// The example overlay builds, and what it builds is what the services need: probes on
// the health endpoints, non-root read-only containers with resources, real commands,
// flags and variables, references that resolve, disruption budgets that select the
// services, and KEDA scaling the processors on their consumer.
func TestKubernetesExampleOverlay(t *testing.T) {
	t.Parallel()
	o := build(t, filesys.MakeFsOnDisk(), "k8s/overlays/example")
	checkBuild(t, o)

	if len(o.namespaces) != 1 || o.namespaces[0].Name != "flashpipe" {
		t.Errorf("namespaces %v", o.namespaces)
	}
	cm := o.configMap(t)
	if cm.Namespace != "flashpipe" {
		t.Errorf("ConfigMap in namespace %q", cm.Namespace)
	}
	// The simulator component points the processors at its Service.
	sim := o.deployment("flashpipe-simulator")
	if sim == nil {
		t.Fatal("the simulator component adds a Deployment")
	}
	var svc *corev1.Service
	for _, s := range o.services {
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(sim.Spec.Template.Labels)) {
			svc = s
		}
	}
	if svc == nil || len(o.services) != 2 {
		t.Fatal("the simulator component adds a Deployment and a Service (beside the API's)")
	}
	checkArgs(t, "simulator", sim.Spec.Template.Spec.Containers[0].Args)
	wantURL := fmt.Sprintf("http://%s:%d/api/v1", svc.Name, svc.Spec.Ports[0].Port)
	if got := cm.Data["FLASHPIPE_API_BASE_URL"]; got != wantURL {
		t.Errorf("FLASHPIPE_API_BASE_URL %q, want the simulator's %q", got, wantURL)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sim.Spec.Template.Labels)) {
		t.Error("the simulator Service selects no simulator pod")
	}

	if len(o.scaled) != 1 || len(o.hpas) != 0 {
		t.Fatalf("%d ScaledObjects and %d HPAs, want KEDA only", len(o.scaled), len(o.hpas))
	}
	so := o.scaled[0]
	if so.Spec.ScaleTargetRef == nil || o.deployment(so.Spec.ScaleTargetRef.Name) == nil || so.Spec.ScaleTargetRef.Name != "flashpipe-processor" {
		t.Errorf("ScaledObject targets %+v, want the processor Deployment", so.Spec.ScaleTargetRef)
	}
	if so.Spec.MaxReplicaCount == nil || so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount > *so.Spec.MaxReplicaCount {
		t.Fatal("ScaledObject: min and max replica counts")
	}
	checkAssumedReplicas(t, cm, int(*so.Spec.MaxReplicaCount))
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" {
		t.Fatalf("ScaledObject triggers %+v, want one prometheus", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	for k := range md {
		if _, ok := prometheusKeys[k]; !ok {
			t.Errorf("prometheus trigger: unknown metadata %q", k)
		}
	}
	for k, required := range prometheusKeys {
		if required && md[k] == "" {
			t.Errorf("prometheus trigger: %s is required", k)
		}
	}
	for _, k := range []string{"threshold", "activationThreshold"} {
		if _, err := strconv.ParseFloat(md[k], 64); err != nil {
			t.Errorf("prometheus trigger: %s: %v", k, err)
		}
	}
	c, err := contract.New(contract.Config{Prefix: cmDefault(cm, "FLASHPIPE_PREFIX", contract.DefaultPrefix)})
	if err != nil {
		t.Fatal(err)
	}
	// The work waiting: the scheduler's undispatched items and the processors' consumer
	// of the ready stream.
	for _, want := range []string{"flashpipe_scheduler_waiting_items", `stream_name="` + c.ReadyStream() + `"`,
		`consumer_name="` + processor.DefaultDurable + `"`} {
		if !strings.Contains(md["query"], want) {
			t.Errorf("prometheus trigger query %q does not read %s", md["query"], want)
		}
	}
	if u, err := url.Parse(md["serverAddress"]); err != nil || u.Scheme != "http" || u.Port() != "9090" {
		t.Errorf("prometheus trigger serverAddress %q", md["serverAddress"])
	}
}

// The alternative autoscaler, an HPA on an external metric, builds on the base.
func TestKubernetesHPAComponent(t *testing.T) {
	t.Parallel()
	fsys := filesys.MakeFsInMemory()
	err := filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return fsys.WriteFile(path.Join("/", filepath.ToSlash(p)), readFile(t, p))
	})
	if err != nil {
		t.Fatal(err)
	}
	overlay := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../base]\ncomponents: [../../components/hpa-external]\n"
	if err := fsys.WriteFile("/k8s/overlays/hpa/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	o := build(t, fsys, "/k8s/overlays/hpa")
	checkBuild(t, o)
	if len(o.hpas) != 1 || len(o.scaled) != 0 {
		t.Fatalf("%d HPAs, %d ScaledObjects", len(o.hpas), len(o.scaled))
	}
	h := o.hpas[0]
	if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || o.deployment(ref.Name) == nil || ref.Name != "flashpipe-processor" {
		t.Errorf("HPA targets %+v, want the processor Deployment", ref)
	}
	if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Type != autoscalingv2.ExternalMetricSourceType || h.Spec.Metrics[0].External.Target.Type != autoscalingv2.AverageValueMetricType {
		t.Errorf("HPA metrics %+v, want one external metric with an average value per replica", h.Spec.Metrics)
	}
	checkAssumedReplicas(t, o.configMap(t), int(h.Spec.MaxReplicas))
	// The base alone uses the real API.
	if got := o.configMap(t).Data["FLASHPIPE_API_BASE_URL"]; !strings.HasPrefix(got, "https://") {
		t.Errorf("base FLASHPIPE_API_BASE_URL %q", got)
	}
}

func cmDefault(cm *corev1.ConfigMap, key, def string) string {
	if v, ok := cm.Data[key]; ok {
		return v
	}
	return def
}

// checkAssumedReplicas: while NATS is unreachable each processor spends budget/assumed
// replicas, so the autoscaler must not run more processors than that.
func checkAssumedReplicas(t *testing.T, cm *corev1.ConfigMap, maxReplicas int) {
	t.Helper()
	assumed, err := strconv.Atoi(cm.Data["RATE_LIMIT_ASSUMED_REPLICAS"])
	if err != nil || assumed < maxReplicas {
		t.Errorf("RATE_LIMIT_ASSUMED_REPLICAS %q must be at least the autoscaler's maximum %d (the rate limit during a NATS outage)", cm.Data["RATE_LIMIT_ASSUMED_REPLICAS"], maxReplicas)
	}
}

// checkBuild checks what every build must hold for the three services, the migrations
// Job and the references between objects.
func checkBuild(t *testing.T, o objects) {
	t.Helper()
	cm := o.configMap(t)
	secrets := map[string]*corev1.Secret{}
	for _, s := range o.secrets {
		secrets[s.Name] = s
	}
	for key := range cm.Data {
		known := false
		for _, s := range services {
			known = known || flashpipeCLI(t).env[s][key]
		}
		if !known {
			t.Errorf("ConfigMap: no service reads %s", key)
		}
	}
	nv := loadNATSValues(t)
	if r, err := strconv.Atoi(cm.Data["FLASHPIPE_STREAM_REPLICAS"]); err != nil || r > nv.Config.Cluster.Replicas || r < 1 {
		t.Errorf("FLASHPIPE_STREAM_REPLICAS %q: want 1 to the NATS cluster's %d", cm.Data["FLASHPIPE_STREAM_REPLICAS"], nv.Config.Cluster.Replicas)
	}
	if u := cm.Data["FLASHPIPE_NATS_URL"]; !strings.HasPrefix(u, "nats://nats.nats.svc.cluster.local:") {
		t.Errorf("FLASHPIPE_NATS_URL %q: want the chart's service (release nats, namespace nats)", u)
	}
	metricsPort := strings.TrimPrefix(cm.Data["FLASHPIPE_METRICS_ADDR"], ":")

	checkPod := func(where string, spec corev1.PodSpec) {
		t.Helper()
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod must run as a non-root user with the runtime's seccomp profile", where)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", where, len(spec.Containers))
		}
		c := spec.Containers[0]
		if !strings.Contains(c.Image, "flashpipe") {
			t.Errorf("%s: image %q", where, c.Image)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
			*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container must have a read-only root, no privilege escalation, no capabilities", where)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: wants CPU and memory requests and a memory limit", where)
		}
		checkArgs(t, where, c.Args)
		var env []string
		for _, e := range c.Env {
			env = append(env, e.Name)
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				s, ok := secrets[ref.SecretKeyRef.Name]
				if !ok {
					t.Errorf("%s: %s from secret %s, which the build does not have", where, e.Name, ref.SecretKeyRef.Name)
				} else if _, ok := s.Data[ref.SecretKeyRef.Key]; !ok {
					if _, ok := s.StringData[ref.SecretKeyRef.Key]; !ok {
						t.Errorf("%s: secret %s has no key %s", where, s.Name, ref.SecretKeyRef.Key)
					}
				}
			}
		}
		checkEnv(t, where, c.Args[0], env)
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil || ef.ConfigMapRef.Name != cm.Name {
				t.Errorf("%s: envFrom %+v, want the ConfigMap %s", where, ef, cm.Name)
			}
		}
	}

	for _, name := range services {
		d := o.deployment("flashpipe-" + name)
		if d == nil {
			t.Errorf("no Deployment flashpipe-%s", name)
			continue
		}
		where := "Deployment " + d.Name
		spec := d.Spec.Template.Spec
		checkPod(where, spec)
		c := spec.Containers[0]
		if c.Args[0] != name {
			t.Errorf("%s runs %v", where, c.Args)
		}
		if len(c.EnvFrom) != 1 {
			t.Errorf("%s: wants the settings from the ConfigMap", where)
		}
		if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || strconv.Itoa(int(c.Ports[0].ContainerPort)) != metricsPort {
			t.Errorf("%s: wants the port metrics on FLASHPIPE_METRICS_ADDR's %s", where, metricsPort)
		}
		for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: health.LivenessPath, c.ReadinessProbe: health.ReadinessPath, c.StartupProbe: health.LivenessPath} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s: wants a probe on %s at port metrics, has %+v", where, want, probe)
				continue
			}
			if timeout := max(probe.TimeoutSeconds, 1); int(timeout)*1e9 <= int(health.DefaultTimeout) && want == health.ReadinessPath {
				t.Errorf("%s: readiness timeout %ds must exceed a check's timeout %s", where, timeout, health.DefaultTimeout)
			}
		}
		if gp := spec.TerminationGracePeriodSeconds; gp == nil || (name == "processor" && int64(*gp)*1e9 <= int64(processor.DefaultDrainTimeout)) {
			t.Errorf("%s: terminationGracePeriodSeconds must outlast the drain (%s)", where, processor.DefaultDrainTimeout)
		}
		if spec.Containers[0].Env != nil && name == "processor" {
			limit := false
			for _, e := range c.Env {
				limit = limit || (e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory")
			}
			if !limit {
				t.Errorf("%s: GOMEMLIMIT from the memory limit", where)
			}
		}
		if spec.ServiceAccountName == "" || spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: wants the flashpipe service account without a token", where)
		}
		// One disruption budget selects the service's pods.
		pdbs := 0
		for _, p := range o.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err != nil {
				t.Fatal(err)
			}
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				pdbs++
				if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
					t.Errorf("PodDisruptionBudget %s: no budget", p.Name)
				}
			}
		}
		if pdbs != 1 {
			t.Errorf("%s: %d PodDisruptionBudgets select it, want 1", where, pdbs)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: its selector does not match its pods", where)
		}
	}
	checkAPI(t, o, checkPod, metricsPort)
	if len(o.jobs) != 1 || o.jobs[0].Spec.Template.Spec.Containers[0].Args[0] != "migrate" {
		t.Fatalf("want one migrate Job, have %d", len(o.jobs))
	}
	checkPod("Job "+o.jobs[0].Name, o.jobs[0].Spec.Template.Spec)
}

// checkAPI checks the HTTP API's Deployment and Service: `flashpipe api` on the port
// of its --api-addr, tokens from a Secret mounted as the file of
// FLASHPIPE_API_TOKENS_FILE (never a literal), the database URL from the Secret,
// startup and liveness on the API's own health endpoint, readiness on /readyz of the
// metrics port, a disruption budget, and a Service that selects its pods and reaches
// the API's port.
func checkAPI(t *testing.T, o objects, checkPod func(string, corev1.PodSpec), metricsPort string) {
	t.Helper()
	d := o.deployment("flashpipe-api")
	if d == nil {
		t.Error("no Deployment flashpipe-api")
		return
	}
	where := "Deployment " + d.Name
	spec := d.Spec.Template.Spec
	checkPod(where, spec)
	c := spec.Containers[0]
	if c.Args[0] != "api" {
		t.Fatalf("%s runs %v", where, c.Args)
	}
	apiPort := ""
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--api-addr="); ok {
			apiPort = v
		} else if a == "--api-addr" && i+1 < len(c.Args) {
			apiPort = c.Args[i+1]
		}
	}
	host, apiPort, _ := strings.Cut(apiPort, ":")
	if apiPort == "" || (host != "" && host != "0.0.0.0" && host != "[::]") {
		t.Fatalf("%s: wants --api-addr on every interface with a port, has %v", where, c.Args)
	}
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = strconv.Itoa(int(p.ContainerPort))
	}
	if ports["http"] != apiPort || ports["metrics"] != metricsPort || len(ports) != 2 {
		t.Errorf("%s: ports %v, want http on --api-addr's %s and metrics on FLASHPIPE_METRICS_ADDR's %s", where, ports, apiPort, metricsPort)
	}
	for probe, want := range map[*corev1.Probe][2]string{
		c.StartupProbe:   {httpapi.HealthPath, "http"},
		c.LivenessProbe:  {httpapi.HealthPath, "http"},
		c.ReadinessProbe: {health.ReadinessPath, "metrics"},
	} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want[0] || probe.HTTPGet.Port.String() != want[1] {
			t.Errorf("%s: wants a probe on %s at port %s, has %+v", where, want[0], want[1], probe)
			continue
		}
		if want[0] == health.ReadinessPath && int(max(probe.TimeoutSeconds, 1))*1e9 <= int(health.DefaultTimeout) {
			t.Errorf("%s: readiness timeout %ds must exceed a check's timeout %s", where, probe.TimeoutSeconds, health.DefaultTimeout)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if _, ok := env["FLASHPIPE_API_TOKENS"]; ok {
		t.Errorf("%s: tokens belong in the mounted Secret, not in FLASHPIPE_API_TOKENS", where)
	}
	if e, ok := env["FLASHPIPE_POSTGRES_URL"]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s: FLASHPIPE_POSTGRES_URL from a Secret (status, the list and the exports read the database)", where)
	}
	file := env["FLASHPIPE_API_TOKENS_FILE"].Value
	mounted := false
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(file, m.MountPath+"/") {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			key := strings.TrimPrefix(file, m.MountPath+"/")
			for _, sec := range o.secrets {
				if sec.Name == v.Secret.SecretName {
					_, inData := sec.Data[key]
					_, inString := sec.StringData[key]
					mounted = inData || inString
				}
			}
		}
	}
	if !mounted {
		t.Errorf("%s: FLASHPIPE_API_TOKENS_FILE %q is not a key of a Secret of the build mounted there", where, file)
	}
	pdbs := 0
	for _, p := range o.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			pdbs++
		}
	}
	if pdbs != 1 {
		t.Errorf("%s: %d PodDisruptionBudgets select it, want 1", where, pdbs)
	}
	var svc *corev1.Service
	for _, s := range o.services {
		if s.Name == "flashpipe-api" {
			svc = s
		}
	}
	if svc == nil {
		t.Fatal("no Service flashpipe-api")
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Error("Service flashpipe-api selects no API pod")
	}
	if len(svc.Spec.Ports) != 1 || (svc.Spec.Ports[0].TargetPort.String() != "http" && svc.Spec.Ports[0].TargetPort.String() != apiPort) {
		t.Errorf("Service flashpipe-api: ports %+v, want one to the API's port", svc.Spec.Ports)
	}
	for _, s := range o.services {
		if s != svc && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s selects the API pods too", s.Name)
		}
	}
}

// natsValues mirrors the keys of the NATS Helm chart's values.yaml (nats-io/k8s,
// helm/charts/nats, 2.14.2) that deploy/k8s/nats-values.yaml sets, decoded strictly:
// the chart ships no values.schema.json to validate against.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				PVC     struct {
					Enabled          bool    `json:"enabled"`
					Size             string  `json:"size"`
					StorageClassName *string `json:"storageClassName"`
				} `json:"pvc"`
				MaxSize *string `json:"maxSize"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool   `json:"enabled"`
				MaxSize string `json:"maxSize"`
			} `json:"memoryStore"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
	} `json:"config"`
	Container struct {
		Resources corev1.ResourceRequirements `json:"resources"`
	} `json:"container"`
	PodTemplate struct {
		// The chart makes one constraint per key (the topology key) from each value.
		TopologySpreadConstraints map[string]corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	PromExporter struct {
		Enabled bool `json:"enabled"`
	} `json:"promExporter"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
}

func loadNATSValues(t *testing.T) natsValues {
	t.Helper()
	var v natsValues
	if err := yaml.UnmarshalStrict(readFile(t, "k8s/nats-values.yaml"), &v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	return v
}

// The NATS chart values make a 3-node JetStream cluster on persistent volumes with the
// memory storage flashpipe's rate limit bucket needs, the monitoring port KEDA reads,
// and the exporter the alert rules read.
func TestNATSHelmValues(t *testing.T) {
	t.Parallel()
	v := loadNATSValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster: enabled %v, replicas %d, want a 3-node cluster", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	js := c.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled {
		t.Error("JetStream with file storage on persistent volumes")
	}
	if _, err := resource.ParseQuantity(js.FileStore.PVC.Size); err != nil {
		t.Errorf("fileStore.pvc.size: %v", err)
	}
	if q, err := resource.ParseQuantity(js.MemoryStore.MaxSize); !js.MemoryStore.Enabled || err != nil || q.IsZero() {
		t.Error("memoryStore must be enabled with a size: the rate limit bucket is in memory")
	}
	if !c.Monitor.Enabled || c.Monitor.Port == 0 {
		t.Error("the monitoring port (KEDA's scaler and the exporter read it)")
	}
	if !v.PromExporter.Enabled {
		t.Error("promExporter: the alert rules read nats_consumer_num_pending")
	}
	for key, tsc := range v.PodTemplate.TopologySpreadConstraints {
		if key == "" || tsc.MaxSkew < 1 || tsc.TopologyKey != "" {
			t.Errorf("topologySpreadConstraints %q: %+v", key, tsc)
		}
	}
}
