package envoy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The checks of the Deployment's hardening, the NetworkPolicy and the
// ServiceMonitor, called by checkIstio: TestIstioManifests runs them and
// TestIstioChecksCatchMistakes proves each can fail.

// baseHeap is the process's own resident memory beside its caches
// (README, Sizing): runtime, gRPC, keys, metrics.
const baseHeap = 25 << 20

// checkHardening checks that the pod would be admitted under the Pod
// Security Standards' "restricted" profile, runs a pinned image, and has
// the memory its ConfigMap's bounds need.
func checkHardening(objs map[string][]object, d deploymentSpec, c container, cfg tokengateConfig) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, ns := range objs["Namespace"] {
		if got := ns.Metadata.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
			bad("Namespace %s: label pod-security.kubernetes.io/enforce: got %q, want restricted", ns.Metadata.Name, got)
		}
	}

	pod, ctr := d.Template.Spec.SecurityContext, c.SecurityContext
	if !isTrue(ctr.RunAsNonRoot) && !isTrue(pod.RunAsNonRoot) || isFalse(ctr.RunAsNonRoot) {
		bad("Deployment: securityContext.runAsNonRoot: got false or unset, want true")
	}
	seccomp := pod.SeccompProfile
	if ctr.SeccompProfile != nil {
		seccomp = ctr.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != "RuntimeDefault" && seccomp.Type != "Localhost") {
		bad("Deployment: securityContext.seccompProfile: got %v, want type RuntimeDefault", seccomp)
	}
	if !isFalse(ctr.AllowPrivilegeEscalation) {
		bad("Deployment: container securityContext.allowPrivilegeEscalation: got true or unset, want false")
	}
	if !isTrue(ctr.ReadOnlyRootFilesystem) {
		bad("Deployment: container securityContext.readOnlyRootFilesystem: got false or unset, want true")
	}
	if isTrue(ctr.Privileged) {
		bad("Deployment: container securityContext.privileged: got true, want false")
	}
	if !slices.Contains(ctr.Capabilities.Drop, "ALL") || len(ctr.Capabilities.Add) > 0 {
		bad("Deployment: container securityContext.capabilities: got drop %q add %q, want drop [ALL] and nothing added",
			ctr.Capabilities.Drop, ctr.Capabilities.Add)
	}

	if tag, ok := imageTag(c.Image); !ok || tag == "latest" {
		bad("Deployment: image %q: want a version tag or a digest, not latest", c.Image)
	} else if !strings.HasPrefix(c.Image, "ghcr.io/tokengate/tokengate:") && !strings.HasPrefix(c.Image, "ghcr.io/tokengate/tokengate@") {
		bad("Deployment: image %q: want ghcr.io/tokengate/tokengate (built from the Dockerfile)", c.Image)
	}

	// Memory: tokengate sets GOMEMLIMIT from limits.memory, so the limit
	// must be set, and hold twice the live heap the bounds allow.
	limit, err := parseQuantity(c.Resources.Limits["memory"])
	switch {
	case c.Resources.Limits["memory"] == "":
		bad("Deployment: resources.limits.memory: not set, want one (tokengate derives GOMEMLIMIT from it)")
	case err != nil:
		bad("Deployment: resources.limits.memory: %v", err)
	case limit < 2*(baseHeap+cfg.Cache.MaxBytes):
		bad("Deployment: resources.limits.memory: got %s, want at least 2 × (25 MiB + cache.max_bytes) = %d MiB (README, Sizing)",
			c.Resources.Limits["memory"], 2*(baseHeap+cfg.Cache.MaxBytes)>>20)
	}
	if got, want := c.Resources.Requests["memory"], c.Resources.Limits["memory"]; got != want {
		bad("Deployment: resources.requests.memory: got %q, want the limit %q (the heap fills it; memory cannot be throttled)", got, want)
	}
	if cpu, err := parseQuantity(c.Resources.Requests["cpu"]); err != nil || cpu <= 0 {
		bad("Deployment: resources.requests.cpu: got %q, want a share sized from the benchmarks", c.Resources.Requests["cpu"])
	}
	return problems
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }

// imageTag returns an image reference's tag (or digest) and whether it has
// one. A colon before the last slash belongs to a registry's port.
func imageTag(image string) (string, bool) {
	if _, digest, ok := strings.Cut(image, "@"); ok {
		return digest, digest != ""
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || i < strings.LastIndex(image, "/") {
		return "", false
	}
	return image[i+1:], image[i+1:] != ""
}

var quantityRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi)?$`)

// parseQuantity reads the Kubernetes quantities the manifest uses: bytes
// with a binary or decimal suffix, and CPU in cores or millicores
// (returned in millicores for "m", else in units).
func parseQuantity(q string) (int64, error) {
	m := quantityRE.FindStringSubmatch(q)
	if m == nil {
		return 0, fmt.Errorf("quantity %q: not understood", q)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"": 1, "m": 1, "k": 1e3, "Ki": 1 << 10, "M": 1e6, "Mi": 1 << 20, "G": 1e9, "Gi": 1 << 30}[m[2]]
	return int64(n * mult), nil
}

// deployment decodes the one Deployment; ok is false when there is not
// exactly one (checkDeployment reports that).
func deployment(objs map[string][]object) (deploymentSpec, container, bool) {
	var d deploymentSpec
	if len(objs["Deployment"]) != 1 || objs["Deployment"][0].Spec.Decode(&d) != nil || len(d.Template.Spec.Containers) != 1 {
		return d, container{}, false
	}
	return d, d.Template.Spec.Containers[0], true
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []any             `yaml:"matchExpressions"`
}

func (s *labelSelector) empty() bool {
	return s == nil || len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

type networkPolicySpec struct {
	PodSelector labelSelector `yaml:"podSelector"`
	PolicyTypes []string      `yaml:"policyTypes"`
	Ingress     []struct {
		Ports []struct {
			Port     string `yaml:"port"` // a name or a number
			Protocol string `yaml:"protocol"`
		} `yaml:"ports"`
		From []peer `yaml:"from"`
	} `yaml:"ingress"`
}

type peer struct {
	NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	PodSelector       *labelSelector `yaml:"podSelector"`
	IPBlock           *struct {
		CIDR string `yaml:"cidr"`
	} `yaml:"ipBlock"`
}

func (p peer) String() string {
	var parts []string
	if p.NamespaceSelector != nil {
		parts = append(parts, fmt.Sprintf("namespaceSelector %v", p.NamespaceSelector.MatchLabels))
	}
	if p.PodSelector != nil {
		parts = append(parts, fmt.Sprintf("podSelector %v", p.PodSelector.MatchLabels))
	}
	if p.IPBlock != nil {
		parts = append(parts, "ipBlock "+p.IPBlock.CIDR)
	}
	return strings.Join(parts, " ")
}

// checkNetworkPolicy checks that a NetworkPolicy selects tokengate's pods,
// opens each port the Service serves to named peers only, and lets the
// ext_authz ports be reached by the mesh's gateways and sidecars alone.
func checkNetworkPolicy(objs map[string][]object, svc serviceSpec) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	d, c, ok := deployment(objs)
	if !ok {
		return nil
	}
	podLabels := d.Template.Metadata.Labels
	var np *networkPolicySpec
	for _, o := range objs["NetworkPolicy"] {
		var s networkPolicySpec
		if err := o.Spec.Decode(&s); err != nil {
			bad("NetworkPolicy %s: %v", o.Metadata.Name, err)
			continue
		}
		if !s.PodSelector.empty() && subset(s.PodSelector.MatchLabels, podLabels) {
			np = &s
		}
	}
	if np == nil {
		bad("NetworkPolicy: none selects the Deployment's pods %v", podLabels)
		return problems
	}
	if !slices.Contains(np.PolicyTypes, "Ingress") {
		bad("NetworkPolicy: policyTypes: got %q, want Ingress", np.PolicyTypes)
	}

	covered := map[int]bool{}
	for i, r := range np.Ingress {
		where := fmt.Sprintf("NetworkPolicy: ingress[%d]", i)
		if len(r.Ports) == 0 {
			bad("%s: no ports: it opens every port, want the ports named", where)
		}
		if len(r.From) == 0 {
			bad("%s: no from: it admits every source, want the peers named", where)
		}
		var ports []int
		for _, p := range r.Ports {
			n := resolvePort(c.Ports, p.Port)
			if n == 0 {
				bad("%s: port %q: not a port of the container (%v)", where, p.Port, c.Ports)
				continue
			}
			covered[n] = true
			ports = append(ports, n)
		}
		for j, f := range r.From {
			switch {
			case f.IPBlock != nil && f.IPBlock.CIDR == "0.0.0.0/0":
				bad("%s: from[%d]: ipBlock 0.0.0.0/0 admits everyone", where, j)
			case f.IPBlock == nil && f.NamespaceSelector == nil:
				// A podSelector alone: pods of tokengate's own namespace.
			case f.IPBlock == nil && f.NamespaceSelector.empty() && f.PodSelector.empty():
				bad("%s: from[%d]: an empty namespaceSelector admits every pod of every namespace", where, j)
			}
		}
		// Both ext_authz ports, gRPC and HTTP, face the mesh's Envoys alone.
		if slices.Contains(ports, resolvePort(c.Ports, "grpc")) || slices.Contains(ports, resolvePort(c.Ports, "http-authz")) {
			problems = append(problems, checkMeshPeers(where, r.From)...)
		}
	}
	for _, sp := range svc.Ports {
		if n := resolvePort(c.Ports, sp.TargetPort); n != 0 && !covered[n] {
			bad("NetworkPolicy: Service port %q (container port %d): no ingress rule, want its callers named", sp.Name, n)
		}
	}
	return problems
}

// checkMeshPeers checks the peers of the ext_authz ports (gRPC and HTTP):
// only Istio's gateways (pods selected in istio-system) and the namespaces
// Istio injects.
func checkMeshPeers(where string, from []peer) []string {
	var problems []string
	var gateways, sidecars bool
	for j, f := range from {
		ns := f.NamespaceSelector
		switch {
		case ns != nil && ns.MatchLabels["kubernetes.io/metadata.name"] == "istio-system" && !f.PodSelector.empty():
			gateways = true
		case ns != nil && (ns.MatchLabels["istio-injection"] == "enabled" || ns.MatchLabels["istio.io/rev"] != ""):
			sidecars = true
		default:
			problems = append(problems, fmt.Sprintf("%s: from[%d]: an ext_authz port (gRPC or HTTP) admits %v, want only the gateways in istio-system and namespaces with istio-injection=enabled", where, j, f))
		}
	}
	if !gateways || !sidecars {
		problems = append(problems, fmt.Sprintf("%s: the ext_authz ports admit gateways %t, sidecars %t: want both", where, gateways, sidecars))
	}
	return problems
}

type serviceMonitorSpec struct {
	Selector          labelSelector `yaml:"selector"`
	NamespaceSelector struct {
		Any        bool     `yaml:"any"`
		MatchNames []string `yaml:"matchNames"`
	} `yaml:"namespaceSelector"`
	Endpoints []struct {
		Port string `yaml:"port"`
		Path string `yaml:"path"`
	} `yaml:"endpoints"`
}

// checkServiceMonitor checks that the ServiceMonitor selects the Service by
// its labels and namespace, and scrapes /metrics on the Service port that
// leads to listen.http.
func checkServiceMonitor(objs map[string][]object, svc *object, svcSpec serviceSpec) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	sms := objs["ServiceMonitor"]
	if len(sms) != 1 {
		bad("ServiceMonitor: got %d, want 1", len(sms))
		return problems
	}
	_, c, ok := deployment(objs)
	if svc == nil || !ok {
		return problems
	}
	var s serviceMonitorSpec
	if err := sms[0].Spec.Decode(&s); err != nil {
		bad("ServiceMonitor: %v", err)
		return problems
	}
	if s.Selector.empty() || !subset(s.Selector.MatchLabels, svc.Metadata.Labels) {
		bad("ServiceMonitor: selector.matchLabels: got %v, want a subset of the Service's labels %v", s.Selector.MatchLabels, svc.Metadata.Labels)
	}
	switch ns := s.NamespaceSelector; {
	case ns.Any, slices.Contains(ns.MatchNames, svc.Metadata.Namespace):
	case len(ns.MatchNames) == 0 && sms[0].Metadata.Namespace == svc.Metadata.Namespace:
	default:
		bad("ServiceMonitor: namespaceSelector: got %v, want the Service's namespace %q", ns.MatchNames, svc.Metadata.Namespace)
	}
	if len(s.Endpoints) == 0 {
		bad("ServiceMonitor: endpoints: none")
	}
	httpPort := resolvePort(c.Ports, "http")
	for i, e := range s.Endpoints {
		sp := findPort(svcSpec.Ports, e.Port)
		if sp == nil {
			bad("ServiceMonitor: endpoints[%d].port: got %q, want a Service port name (%v)", i, e.Port, svcSpec.Ports)
		} else if resolvePort(c.Ports, sp.TargetPort) != httpPort {
			bad("ServiceMonitor: endpoints[%d].port %q: targets container port %d, want %d (listen.http, where /metrics is)", i, e.Port, resolvePort(c.Ports, sp.TargetPort), httpPort)
		}
		if e.Path != "" && e.Path != "/metrics" {
			bad("ServiceMonitor: endpoints[%d].path: got %q, want /metrics", i, e.Path)
		}
	}
	return problems
}

// subset reports whether every label of sel is in labels, with its value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// TestReadmeKubernetesMatchesManifest keeps the README's Kubernetes section
// saying what the manifest does: the image, the CPU request and the memory
// limit it quotes are the Deployment's.
func TestReadmeKubernetesMatchesManifest(t *testing.T) {
	readme := string(readFile(t, "../README.md"))
	_, section, ok := strings.Cut(readme, "\n### Kubernetes\n")
	if !ok {
		t.Fatal(`README has no "### Kubernetes" section`)
	}
	section, _, _ = strings.Cut(section, "\n### ")
	docs, err := decodeAll(readFile(t, "istio/tokengate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string][]object{}
	for _, o := range docs {
		objs[o.Kind] = append(objs[o.Kind], o)
	}
	_, c, ok := deployment(objs)
	if !ok {
		t.Fatal("tokengate.yaml: want one Deployment with one container")
	}
	for what, v := range map[string]string{
		"image":                   c.Image,
		"resources.requests.cpu":  c.Resources.Requests["cpu"],
		"resources.limits.memory": c.Resources.Limits["memory"],
	} {
		if v == "" || !strings.Contains(section, v) {
			t.Errorf("README, Kubernetes: does not mention the Deployment's %s %q", what, v)
		}
	}
}
