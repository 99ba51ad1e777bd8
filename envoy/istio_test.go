package envoy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The manifests under istio/, checked together because they refer to each
// other: the policies name the mesh provider, the provider names the
// Service, the Service and the probes name the Deployment's ports.
// (route-policy.yaml holds the gateway's AuthorizationPolicy.)
// network-policy.yaml and monitoring.yaml name the Deployment's pods and the
// Service's ports.
// authorization-policy-http.yaml selects another workload through the HTTP
// provider; destination-rule.yaml tunes the Envoys' connections to the
// Service.
var istioFiles = []string{"mesh-config.yaml", "authorization-policy.yaml", "authorization-policy-http.yaml", "route-policy.yaml",
	"tokengate.yaml", "network-policy.yaml", "monitoring.yaml", "destination-rule.yaml"}

func readIstioFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range istioFiles {
		files[name] = readFile(t, "istio/"+name)
	}
	return files
}

func TestIstioManifests(t *testing.T) {
	for _, p := range checkIstio(readIstioFiles(t)) {
		t.Errorf("istio: %s", p)
	}
}

// TestIstioChecksCatchMistakes proves the checks above can fail.
func TestIstioChecksCatchMistakes(t *testing.T) {
	good := readIstioFiles(t)
	tests := map[string]mutation{
		"provider renamed": {
			file: "authorization-policy.yaml", old: "    name: tokengate\n", new: "    name: tokengate-grpc\n",
			want: "provider",
		},
		"gateway's provider renamed": {
			file: "route-policy.yaml", old: "    name: tokengate\n", new: "    name: tokengate-grpc\n",
			want: "AuthorizationPolicy tokengate-gateway: provider",
		},
		"no timeout": {
			file: "mesh-config.yaml", old: "        timeout: 0.25s\n", new: "",
			want: "timeout",
		},
		"long timeout": {
			file: "mesh-config.yaml", old: "timeout: 0.25s", new: "timeout: 10s",
			want: "timeout",
		},
		"fail open": {
			file: "mesh-config.yaml", old: "failOpen: false", new: "failOpen: true",
			want: "failOpen",
		},
		"wrong service": {
			file: "mesh-config.yaml", old: "service: tokengate.tokengate.svc.cluster.local", new: "service: tokengate.default.svc.cluster.local",
			want: "service",
		},
		"no rules": {
			file: "authorization-policy.yaml", old: "  rules:\n  - to:\n    - operation:\n        notPaths: [\"/healthz\", \"/readyz\"]\n", new: "",
			want: "rules",
		},
		"readiness on /healthz": {
			file: "tokengate.yaml", old: "httpGet: {path: /readyz, port: http}", new: "httpGet: {path: /healthz, port: http}",
			want: "readinessProbe",
		},
		"grace period too short": {
			file: "tokengate.yaml", old: "terminationGracePeriodSeconds: 30", new: "terminationGracePeriodSeconds: 20",
			want: "terminationGracePeriodSeconds",
		},
		"root allowed": {
			file: "tokengate.yaml", old: "runAsNonRoot: true", new: "runAsNonRoot: false",
			want: "runAsNonRoot",
		},
		"loopback listener": {
			file: "tokengate.yaml", old: `grpc: "0.0.0.0:9191"`, new: `grpc: "127.0.0.1:9191"`,
			want: "listen.grpc",
		},
		"namespace not restricted": {
			file: "tokengate.yaml", old: "    pod-security.kubernetes.io/enforce: restricted\n", new: "",
			want: "pod-security",
		},
		"image latest": {
			file: "tokengate.yaml", old: "tokengate/tokengate:v0.1.0", new: "tokengate/tokengate:latest",
			want: "image",
		},
		"image untagged": {
			file: "tokengate.yaml", old: "tokengate/tokengate:v0.1.0", new: "tokengate/tokengate",
			want: "image",
		},
		"privilege escalation": {
			file: "tokengate.yaml", old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: true",
			want: "allowPrivilegeEscalation",
		},
		"writable root": {
			file: "tokengate.yaml", old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false",
			want: "readOnlyRootFilesystem",
		},
		"capabilities kept": {
			file: "tokengate.yaml", old: `capabilities: {drop: ["ALL"]}`, new: `capabilities: {drop: ["NET_RAW"]}`,
			want: "capabilities",
		},
		"no seccomp": {
			file: "tokengate.yaml", old: "        seccompProfile: {type: RuntimeDefault}\n", new: "",
			want: "seccompProfile",
		},
		"no memory limit": {
			file: "tokengate.yaml", old: "limits: {memory: 256Mi}", new: `limits: {cpu: "1"}`,
			want: "limits.memory",
		},
		"memory limit below the cache": {
			file: "tokengate.yaml", old: "limits: {memory: 256Mi}", new: "limits: {memory: 160Mi}",
			want: "limits.memory",
		},
		"grpc open to every namespace": {
			file: "network-policy.yaml", old: "    - namespaceSelector:\n        matchLabels: {istio-injection: enabled}\n", new: "    - namespaceSelector: {}\n",
			want: "every namespace",
		},
		"grpc without the sidecars": {
			file: "network-policy.yaml", old: "    - namespaceSelector:\n        matchLabels: {istio-injection: enabled}\n", new: "",
			want: "sidecars false",
		},
		"network policy port renamed": {
			file: "network-policy.yaml", old: "{port: grpc, protocol: TCP}", new: "{port: grpcs, protocol: TCP}",
			want: `port "grpcs"`,
		},
		"network policy rule without ports": {
			file: "network-policy.yaml", old: "  - ports:\n    - {port: http, protocol: TCP}\n    from:", new: "  - from:",
			want: "opens every port",
		},
		"network policy selects other pods": {
			file: "network-policy.yaml", old: "  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: tokengate\n", new: "  podSelector:\n    matchLabels:\n      app: tokengate\n",
			want: "NetworkPolicy: none selects",
		},
		"service monitor port": {
			file: "monitoring.yaml", old: "  - port: http\n", new: "  - port: metrics\n",
			want: "ServiceMonitor: endpoints[0].port",
		},
		"service monitor on the gRPC port": {
			file: "monitoring.yaml", old: "  - port: http\n", new: "  - port: grpc\n",
			want: "listen.http",
		},
		"service monitor selector": {
			file: "monitoring.yaml", old: "  selector:\n    matchLabels:\n      app.kubernetes.io/name: tokengate\n", new: "  selector:\n    matchLabels:\n      app: tokengate\n",
			want: "ServiceMonitor: selector",
		},
		"service monitor namespace": {
			file: "monitoring.yaml", old: "matchNames: [tokengate]", new: "matchNames: [default]",
			want: "ServiceMonitor: namespaceSelector",
		},
	}
	catchMistakes(t, good, tests, func(files map[string][]byte) []string { return checkIstio(files) })
}

// object is the part of a Kubernetes object every check reads first.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node         `yaml:"spec"`
	Data map[string]string `yaml:"data"`
}

type extensionProvider struct {
	Name              string `yaml:"name"`
	EnvoyExtAuthzGrpc *struct {
		Service       string `yaml:"service"`
		Port          int    `yaml:"port"`
		Timeout       string `yaml:"timeout"`
		FailOpen      bool   `yaml:"failOpen"`
		StatusOnError string `yaml:"statusOnError"`
	} `yaml:"envoyExtAuthzGrpc"`
	EnvoyExtAuthzHttp *httpProvider `yaml:"envoyExtAuthzHttp"`
}

// httpProvider is Istio's EnvoyExternalAuthorizationHttpProvider.
type httpProvider struct {
	Service                         string            `yaml:"service"`
	Port                            int               `yaml:"port"`
	Timeout                         string            `yaml:"timeout"`
	PathPrefix                      string            `yaml:"pathPrefix"`
	FailOpen                        bool              `yaml:"failOpen"`
	StatusOnError                   string            `yaml:"statusOnError"`
	IncludeRequestHeadersInCheck    []string          `yaml:"includeRequestHeadersInCheck"`
	IncludeHeadersInCheck           []string          `yaml:"includeHeadersInCheck"` // deprecated
	IncludeAdditionalHeadersInCheck map[string]string `yaml:"includeAdditionalHeadersInCheck"`
	IncludeRequestBodyInCheck       any               `yaml:"includeRequestBodyInCheck"`
	HeadersToUpstreamOnAllow        []string          `yaml:"headersToUpstreamOnAllow"`
	HeadersToDownstreamOnDeny       []string          `yaml:"headersToDownstreamOnDeny"`
}

type meshSpec struct {
	MeshConfig struct {
		ExtensionProviders []extensionProvider `yaml:"extensionProviders"`
	} `yaml:"meshConfig"`
}

type policySpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Action   string `yaml:"action"`
	Provider struct {
		Name string `yaml:"name"`
	} `yaml:"provider"`
	Rules []any `yaml:"rules"`
}

type port struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Port          int    `yaml:"port"`
	TargetPort    string `yaml:"targetPort"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a name or a number
	} `yaml:"httpGet"`
}

type deploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int             `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               securityContext `yaml:"securityContext"`
			Containers                    []container     `yaml:"containers"`
			Volumes                       []struct {
				Name     string `yaml:"name"`
				EmptyDir any    `yaml:"emptyDir"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Args            []string        `yaml:"args"`
	Ports           []port          `yaml:"ports"`
	ReadinessProbe  probe           `yaml:"readinessProbe"`
	LivenessProbe   probe           `yaml:"livenessProbe"`
	SecurityContext securityContext `yaml:"securityContext"`
	Resources       struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

// securityContext holds the fields of a pod's and a container's
// securityContext the checks read; a nil pointer is a field not set.
type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	Privileged               *bool `yaml:"privileged"`
	Capabilities             struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile *struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type serviceSpec struct {
	Ports []port `yaml:"ports"`
}

// tokengateConfig is the part of tokengate's configuration the manifests
// must agree with.
type tokengateConfig struct {
	Listen struct {
		GRPC      string `yaml:"grpc"`
		HTTP      string `yaml:"http"`
		AuthzHTTP string `yaml:"authz_http"`
	} `yaml:"listen"`
	Shutdown struct {
		DrainDelay time.Duration `yaml:"drain_delay"`
		Timeout    time.Duration `yaml:"timeout"`
	} `yaml:"shutdown"`
	Cache struct {
		MaxBytes int64 `yaml:"max_bytes"`
	} `yaml:"cache"`
	Revocation struct {
		MaxStaleness time.Duration `yaml:"max_staleness"`
	} `yaml:"revocation"`
}

// checkIstio reports every inconsistency or unsafe setting in the manifests,
// each as "what: got X, want Y".
func checkIstio(files map[string][]byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	objs := map[string][]object{}
	for _, name := range istioFiles {
		docs, err := decodeAll(files[name])
		if err != nil {
			bad("%s: %v", name, err)
			continue
		}
		for _, o := range docs {
			objs[o.Kind] = append(objs[o.Kind], o)
		}
	}

	// The provider every CUSTOM policy names.
	providers := map[string]extensionProvider{}
	for _, o := range objs["IstioOperator"] {
		var s meshSpec
		if err := o.Spec.Decode(&s); err != nil {
			bad("IstioOperator %s: %v", o.Metadata.Name, err)
		}
		for _, p := range s.MeshConfig.ExtensionProviders {
			providers[p.Name] = p
		}
	}
	var used []extensionProvider
	bySelector := map[string]string{} // selector → provider
	policies := objs["AuthorizationPolicy"]
	if len(policies) == 0 {
		bad("AuthorizationPolicy: got none, want one with action CUSTOM")
	}
	for _, o := range policies {
		var s policySpec
		if err := o.Spec.Decode(&s); err != nil {
			bad("AuthorizationPolicy %s: %v", o.Metadata.Name, err)
			continue
		}
		where := "AuthorizationPolicy " + o.Metadata.Name
		if s.Action != "CUSTOM" {
			bad("%s: action: got %q, want CUSTOM", where, s.Action)
		}
		if len(s.Selector.MatchLabels) == 0 {
			bad("%s: selector.matchLabels: got none, want the protected workload's labels", where)
		}
		if len(s.Rules) == 0 {
			bad("%s: rules: got none, want at least one (a CUSTOM policy without rules checks nothing)", where)
		}
		// Istio applies one CUSTOM provider per workload.
		sel := fmt.Sprint(s.Selector.MatchLabels)
		if other, ok := bySelector[o.Metadata.Namespace+" "+sel]; ok && other != s.Provider.Name {
			bad("%s: selector %s in %s: provider %q, and another policy there names %q: Istio takes one CUSTOM provider per workload",
				where, sel, o.Metadata.Namespace, s.Provider.Name, other)
		}
		bySelector[o.Metadata.Namespace+" "+sel] = s.Provider.Name
		p, ok := providers[s.Provider.Name]
		if !ok {
			bad("%s: provider.name: got %q, want one of the mesh extensionProviders %q", where, s.Provider.Name, keys(providers))
			continue
		}
		used = append(used, p)
	}

	// The Service and Deployment the provider points at.
	var svc *object
	var svcSpec serviceSpec
	for i, o := range objs["Service"] {
		if o.Metadata.Name == "tokengate" {
			svc = &objs["Service"][i]
			if err := o.Spec.Decode(&svcSpec); err != nil {
				bad("Service %s: %v", o.Metadata.Name, err)
			}
		}
	}
	if svc == nil {
		bad("Service tokengate: missing")
	}

	managed := []string{"x-auth-subject", "x-auth-issuer", "x-auth-token-id"}
	sources := []string{"authorization"}
	for _, o := range objs["ConfigMap"] {
		if text, ok := o.Data["tokengate.yaml"]; ok {
			names, err := managedHeaders([]byte(text))
			if err != nil {
				bad("ConfigMap %s: tokengate.yaml: %v", o.Metadata.Name, err)
			}
			managed = names
			sources, _ = sourceHeaders([]byte(text))
		}
	}
	for _, p := range used {
		where := "extensionProviders " + p.Name
		switch {
		case p.EnvoyExtAuthzGrpc != nil:
			problems = append(problems, checkGrpcProvider(where, p, svc, svcSpec)...)
		case p.EnvoyExtAuthzHttp != nil:
			problems = append(problems, checkHTTPProvider(where, p.EnvoyExtAuthzHttp, svc, svcSpec, managed, sources)...)
			problems = append(problems, checkDestinationRule(objs, svc)...)
		default:
			bad("%s: neither envoyExtAuthzGrpc nor envoyExtAuthzHttp (tokengate serves both)", where)
		}
	}

	problems = append(problems, checkDeployment(objs, svcSpec)...)
	problems = append(problems, checkNetworkPolicy(objs, svcSpec)...)
	problems = append(problems, checkServiceMonitor(objs, svc, svcSpec)...)
	return problems
}

// checkGrpcProvider checks an envoyExtAuthzGrpc provider: it points at the
// Service's grpc port and fails closed within a short deadline.
func checkGrpcProvider(where string, p extensionProvider, svc *object, svcSpec serviceSpec) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	g := p.EnvoyExtAuthzGrpc
	problems = append(problems, checkProviderCommon(where, g.Timeout, g.FailOpen, g.StatusOnError)...)
	if svc != nil {
		if want := svc.Metadata.Name + "." + svc.Metadata.Namespace + ".svc.cluster.local"; g.Service != want {
			bad("%s: service: got %q, want %q (the Service in tokengate.yaml)", where, g.Service, want)
		}
		if sp := findPort(svcSpec.Ports, "grpc"); sp == nil || sp.Port != g.Port {
			bad("%s: port: got %d, want the Service's grpc port (%v)", where, g.Port, sp)
		}
	}
	return problems
}

// checkProviderCommon checks the settings both providers share: an
// explicit short deadline, and failing closed with a retryable 503.
func checkProviderCommon(where, timeout string, failOpen bool, statusOnError string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	switch d, err := time.ParseDuration(timeout); {
	case timeout == "":
		bad("%s: timeout: not set, want an explicit deadline ≤ %s (Istio's default is far longer)", where, maxCheckTimeout)
	case err != nil:
		bad("%s: timeout: %v", where, err)
	case d <= 0 || d > maxCheckTimeout:
		bad("%s: timeout: got %s, want > 0 and ≤ %s", where, d, maxCheckTimeout)
	}
	if failOpen {
		bad("%s: failOpen: got true, want false (fail closed)", where)
	}
	if statusOnError != "503" {
		bad("%s: statusOnError: got %q, want \"503\"", where, statusOnError)
	}
	return problems
}

func checkDeployment(objs map[string][]object, svc serviceSpec) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var cfg tokengateConfig
	cfg.Shutdown.DrainDelay, cfg.Shutdown.Timeout = 5*time.Second, 15*time.Second // tokengate's defaults
	var haveConfig bool
	for _, o := range objs["ConfigMap"] {
		if text, ok := o.Data["tokengate.yaml"]; ok {
			haveConfig = true
			if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
				bad("ConfigMap %s: tokengate.yaml: %v", o.Metadata.Name, err)
			}
		}
	}
	if !haveConfig {
		bad("ConfigMap with tokengate.yaml: missing")
	}

	deps := objs["Deployment"]
	if len(deps) != 1 {
		bad("Deployments: got %d, want 1", len(deps))
		return problems
	}
	var d deploymentSpec
	if err := deps[0].Spec.Decode(&d); err != nil {
		bad("Deployment: %v", err)
		return problems
	}
	if d.Replicas < 2 {
		bad("Deployment: replicas: got %d, want at least 2", d.Replicas)
	}
	pod := d.Template.Spec
	if drain := cfg.Shutdown.DrainDelay + cfg.Shutdown.Timeout; time.Duration(pod.TerminationGracePeriodSeconds)*time.Second <= drain {
		bad("Deployment: terminationGracePeriodSeconds: got %d, want more than shutdown.drain_delay + shutdown.timeout (%s)",
			pod.TerminationGracePeriodSeconds, drain)
	}
	if len(pod.Containers) != 1 {
		bad("Deployment: containers: got %d, want 1", len(pod.Containers))
		return problems
	}
	c := pod.Containers[0]
	problems = append(problems, checkHardening(objs, d, c, cfg)...)
	if len(c.Args) == 0 || c.Args[0] != "serve" || !slices.Contains(c.Args, "--config") {
		bad("Deployment: args: got %q, want serve --config FILE", c.Args)
	}

	for _, pr := range []struct {
		name, path string
		probe      probe
	}{
		{"readinessProbe", "/readyz", c.ReadinessProbe},
		{"livenessProbe", "/healthz", c.LivenessProbe},
	} {
		if pr.probe.HTTPGet == nil {
			bad("Deployment: %s: got no httpGet, want GET %s", pr.name, pr.path)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			bad("Deployment: %s path: got %q, want %q", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		if got, want := resolvePort(c.Ports, pr.probe.HTTPGet.Port), listenPort(cfg.Listen.HTTP); got != want {
			bad("Deployment: %s port %q: got container port %d, want %d (listen.http)", pr.name, pr.probe.HTTPGet.Port, got, want)
		}
	}

	for _, l := range []struct{ key, addr, port string }{
		{"listen.grpc", cfg.Listen.GRPC, "grpc"},
		{"listen.http", cfg.Listen.HTTP, "http"},
		{"listen.authz_http", cfg.Listen.AuthzHTTP, "http-authz"},
	} {
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			bad("ConfigMap: %s: got %q, want host:port", l.key, l.addr)
			continue
		}
		if host != "0.0.0.0" && host != "" {
			bad("ConfigMap: %s: got host %q, want 0.0.0.0 (the Service and the kubelet connect from outside the pod)", l.key, host)
		}
		if got, want := resolvePort(c.Ports, l.port), listenPort(l.addr); got != want {
			bad("Deployment: container port %q: got %d, want %d (%s)", l.port, got, want, l.key)
		}
		sp := findPort(svc.Ports, l.port)
		if sp == nil {
			bad("Service: port %q: missing", l.port)
		} else if got, want := resolvePort(c.Ports, sp.TargetPort), listenPort(l.addr); got != want {
			bad("Service: port %q targets container port %d, want %d (%s)", l.port, got, want, l.key)
		}
	}
	return problems
}

func decodeAll(data []byte) ([]object, error) {
	var out []object
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if o.Kind != "" {
			out = append(out, o)
		}
	}
}

func findPort(ports []port, name string) *port {
	for i := range ports {
		if ports[i].Name == name {
			return &ports[i]
		}
	}
	return nil
}

// resolvePort returns the container port a probe or Service names, by name
// or number; 0 when there is none.
func resolvePort(ports []port, ref string) int {
	if n, err := strconv.Atoi(ref); err == nil {
		return n
	}
	if p := findPort(ports, ref); p != nil {
		return p.ContainerPort
	}
	return 0
}

func listenPort(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
