package envoy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tokengate/tokengate/extauthz"

	// Every typed_config in envoy.yaml must resolve; these register the
	// types the file uses that the test does not name.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
)

const (
	extAuthzFilter  = "envoy.filters.http.ext_authz"
	routerFilter    = "envoy.filters.http.router"
	authzCluster    = "tokengate"
	authzService    = "envoy.service.auth.v3.Authorization" // gRPC health service name
	maxCheckTimeout = time.Second
)

// introspectionPath is the IdP's introspection endpoint, the one route whose
// body goes to tokengate (tokengate.compose.yaml's introspection_routes).
const introspectionPath = "/oauth2/introspect"

// Routes that may turn ext_authz off: Envoy's own liveness answer.
var unauthenticatedPaths = []string{"/healthz"}

// Keys of tokengate's CheckResponse.dynamic_metadata the access log prints.
var metadataKeys = []string{"reason", "decision_id", "sub", "iss", "jti"}

func TestEnvoyBootstrap(t *testing.T) {
	b, err := loadBootstrap(readFile(t, "envoy.yaml"))
	if err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	for _, p := range checkBootstrap(b) {
		t.Errorf("envoy.yaml: %s", p)
	}
}

// TestEnvoyBootstrapChecksCatchMistakes proves the checks above can fail:
// each case breaks envoy.yaml in one way and expects it to be reported.
func TestEnvoyBootstrapChecksCatchMistakes(t *testing.T) {
	good := readFile(t, "envoy.yaml")
	tests := map[string]struct {
		old, new string
		want     string // in the load error or in one of the problems
	}{
		"fail open": {
			old: "failure_mode_allow: false", new: "failure_mode_allow: true",
			want: "failure_mode_allow",
		},
		"long timeout": {
			old: "timeout: 0.25s", new: "timeout: 5s",
			want: "grpc_service.timeout",
		},
		"no timeout": {
			old: "timeout: 0.25s", new: "initial_metadata: []",
			want: "grpc_service.timeout",
		},
		"other cluster": {
			old: "envoy_grpc: {cluster_name: tokengate}", new: "envoy_grpc: {cluster_name: upstream}",
			want: "cluster_name",
		},
		"transport API auto": {
			old: "transport_api_version: V3", new: "transport_api_version: AUTO",
			want: "transport_api_version",
		},
		"403 on error": {
			old: "status_on_error: {code: ServiceUnavailable}", new: "status_on_error: {code: Forbidden}",
			want: "status_on_error",
		},
		"HTTP/1.1 to tokengate": {
			old: "http2_protocol_options: {}", new: "http_protocol_options: {}",
			want: "HTTP/2",
		},
		"health check of another service": {
			old: "service_name: envoy.service.auth.v3.Authorization", new: "service_name: grpc.health.v1.Health",
			want: "health check",
		},
		"ext_authz disabled on /api": {
			old:  "check_settings:\n                      context_extensions:\n                        policy: partner-api",
			new:  "disabled: true",
			want: "disabled",
		},
		"unknown field": {
			old: "include_peer_certificate: false", new: "include_peer_certificates: false",
			want: "include_peer_certificates",
		},
		"invalid value": {
			old: "port_value: 9191", new: "port_value: 70000",
			want: "PortValue",
		},
		"invalid value inside a typed config": {
			old: "stat_prefix: ingress_http", new: `stat_prefix: ""`,
			want: "StatPrefix",
		},
		"invalid value two typed configs deep": {
			old: "envoy_grpc: {cluster_name: tokengate}", new: `envoy_grpc: {cluster_name: ""}`,
			want: "ClusterName",
		},
		"unregistered typed config": {
			old: "envoy.extensions.filters.http.router.v3.Router", new: "envoy.extensions.filters.http.router.v3.Routr",
			want: "Routr",
		},
		"decision id not logged": {
			old: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%", new: "-",
			want: "decision_id",
		},
		"underscored headers allowed": {
			old: "headers_with_underscores_action: REJECT_REQUEST", new: "headers_with_underscores_action: ALLOW",
			want: "headers_with_underscores_action",
		},
		"paths not normalised": {
			old: "normalize_path: true", new: "normalize_path: false",
			want: "normalize_path",
		},
		"slashes not merged": {
			old: "merge_slashes: true", new: "merge_slashes: false",
			want: "merge_slashes",
		},
		"host port kept": {
			old: "strip_any_host_port: true", new: "strip_any_host_port: false",
			want: "strip_any_host_port",
		},
		"host trailing dot kept": {
			old: "strip_trailing_host_dot: true", new: "strip_trailing_host_dot: false",
			want: "strip_trailing_host_dot",
		},
		"introspection body cut off with 413": {
			old: "allow_partial_message: true", new: "allow_partial_message: false",
			want: "allow_partial_message",
		},
		"introspection body as a string": {
			old: "pack_as_bytes: true", new: "pack_as_bytes: false",
			want: "pack_as_bytes",
		},
		"introspection body too small for a token": {
			old: "max_request_bytes: 32768", new: "max_request_bytes: 4096",
			want: "max_request_bytes",
		},
		"body sent on every route": {
			old: "include_peer_certificate: false", new: "include_peer_certificate: false\n              with_request_body: {max_request_bytes: 32768}",
			want: "with_request_body",
		},
		"body sent on another route than the introspection endpoint": {
			old: "match: {path: /oauth2/introspect}", new: "match: {path: /oauth2/introspection}",
			want: "with_request_body",
		},
		"introspection route without the marker": {
			old: "tokengate_route: introspection", new: "route: introspect",
			want: "tokengate_route",
		},
		"introspection marker on a route without the body": {
			old:  "context_extensions:\n                        policy: partner-api",
			new:  "context_extensions:\n                        tokengate_route: introspection",
			want: "tokengate_route",
		},
		"unknown marker value": {
			old: "tokengate_route: introspection", new: "tokengate_route: introspect",
			want: "tokengate_route",
		},
		"admin on every interface": {
			old: "socket_address: {address: 127.0.0.1, port_value: 9901}", new: "socket_address: {address: 0.0.0.0, port_value: 9901}",
			want: "admin",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if n := bytes.Count(good, []byte(tc.old)); n != 1 {
				t.Fatalf("envoy.yaml contains %q %d times, want 1: update this case", tc.old, n)
			}
			bad := bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1)
			b, err := loadBootstrap(bad)
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("load error %q does not mention %q", err, tc.want)
				}
				t.Logf("caught: %v", err)
				return
			}
			problems := checkBootstrap(b)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem mentions %q; got %q", tc.want, problems)
			}
			t.Logf("caught: %q", problems)
		})
	}
}

// TestComposeConfigMatchesEnvoy checks that the tokengate started by
// docker-compose.yml listens where envoy.yaml's tokengate cluster points.
func TestComposeConfigMatchesEnvoy(t *testing.T) {
	b, err := loadBootstrap(readFile(t, "envoy.yaml"))
	if err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	c := findCluster(b, authzCluster)
	if c == nil {
		t.Fatalf("envoy.yaml: no cluster %q", authzCluster)
	}
	want := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()

	var cfg struct {
		Listen              struct{ GRPC, HTTP string } `yaml:"listen"`
		IntrospectionRoutes []struct {
			PathPrefix string `yaml:"path_prefix"`
		} `yaml:"introspection_routes"`
	}
	if err := yaml.Unmarshal(readFile(t, "tokengate.compose.yaml"), &cfg); err != nil {
		t.Fatalf("tokengate.compose.yaml: %v", err)
	}
	host, port, err := net.SplitHostPort(cfg.Listen.GRPC)
	if err != nil {
		t.Fatalf("tokengate.compose.yaml: listen.grpc: %v", err)
	}
	if host != "0.0.0.0" {
		t.Errorf("tokengate.compose.yaml: listen.grpc host: got %q, want 0.0.0.0 (Envoy connects from another container)", host)
	}
	if port != strconv.Itoa(int(want)) {
		t.Errorf("tokengate.compose.yaml: listen.grpc port: got %s, want %d (envoy.yaml cluster %q)", port, want, authzCluster)
	}

	// The route whose body Envoy sends is the one tokengate judges it on.
	if r := cfg.IntrospectionRoutes; len(r) != 1 || r[0].PathPrefix != introspectionPath {
		t.Errorf("tokengate.compose.yaml: introspection_routes: got %+v, want one with path_prefix %s (envoy.yaml sends its body)", r, introspectionPath)
	}
	var prefixes []string
	for _, r := range cfg.IntrospectionRoutes {
		prefixes = append(prefixes, r.PathPrefix)
	}
	for _, p := range checkIntrospectionRoutes(b, prefixes) {
		t.Errorf("envoy.yaml and tokengate.compose.yaml: %s", p)
	}

	// (That tokengate runs with tokengate.compose.yaml is TestComposeStack's.)
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(readFile(t, "../docker-compose.yml"), &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if vols := compose.Services["envoy"].Volumes; !slices.ContainsFunc(vols, func(v string) bool {
		return strings.HasPrefix(v, "./envoy/envoy.yaml:/etc/envoy/envoy.yaml")
	}) {
		t.Errorf("docker-compose.yml: envoy volumes: got %q, want ./envoy/envoy.yaml mounted at /etc/envoy/envoy.yaml", vols)
	}
}

// TestIntrospectionRoutesCheckCatchesMistakes: checkIntrospectionRoutes
// compares match kinds, not only strings.
func TestIntrospectionRoutesCheckCatchesMistakes(t *testing.T) {
	data := readFile(t, "envoy.yaml")
	const old = "match: {path: /oauth2/introspect}"
	cases := map[string]struct {
		new  string
		want string // "" for no problem
	}{
		"exact path":               {old, ""},
		"prefix equal to the path": {"match: {prefix: /oauth2/introspect}", ""},
		"exact path, another path": {"match: {path: /oauth2/introspect/}", "/oauth2/introspect/"},
		"shorter prefix":           {"match: {prefix: /oauth2/}", "/oauth2/"},
		"regex with the same text": {"match: {safe_regex: {regex: /oauth2/introspect}}", "match kind"},
		"separated prefix":         {"match: {path_separated_prefix: /oauth2/introspect}", "match kind"},
		"case-insensitive exact":   {"match: {path: /oauth2/introspect, case_sensitive: false}", "case_sensitive"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !bytes.Contains(data, []byte(old)) {
				t.Fatalf("envoy.yaml has no %q", old)
			}
			b, err := loadBootstrap(bytes.Replace(data, []byte(old), []byte(tc.new), 1))
			if err != nil {
				t.Fatalf("envoy.yaml: %v", err)
			}
			problems := checkIntrospectionRoutes(b, []string{introspectionPath})
			switch {
			case tc.want == "" && len(problems) > 0:
				t.Errorf("problems %q, want none", problems)
			case tc.want != "" && !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }):
				t.Errorf("problems %q, want one naming %q", problems, tc.want)
			}
		})
	}
}

// checkIntrospectionRoutes: every Envoy route marked as the introspection
// route (context_extensions tokengate_route: introspection) matches what
// tokengate's introspection_routes path prefixes match, by kind as well as
// text: an exact path: equal to a path_prefix, or a prefix: equal to one
// (Envoy's prefix is by characters, so it sends tokengate no path outside
// the introspection route that tokengate would then take for one). There
// must be at least one.
func checkIntrospectionRoutes(b *bootstrapv3.Bootstrap, prefixes []string) []string {
	var problems []string
	hcms, err := connectionManagers(b)
	if err != nil {
		return []string{err.Error()}
	}
	n := 0
	for _, hcm := range hcms {
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				cfg := r.GetTypedPerFilterConfig()[extAuthzFilter]
				per := &extauthzv3.ExtAuthzPerRoute{}
				if cfg == nil || cfg.UnmarshalTo(per) != nil ||
					per.GetCheckSettings().GetContextExtensions()[extauthz.RouteMarkerKey] != extauthz.RouteMarkerIntrospection {
					continue
				}
				n++
				m := r.GetMatch()
				var value string
				switch p := m.GetPathSpecifier().(type) {
				case *routev3.RouteMatch_Path:
					value = p.Path
				case *routev3.RouteMatch_Prefix:
					value = p.Prefix
				default:
					problems = append(problems, fmt.Sprintf("introspection route %s: match kind %T: want path: or prefix: equal to an introspection_routes path_prefix %q", m, p, prefixes))
					continue
				}
				if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
					problems = append(problems, fmt.Sprintf("introspection route %s: case_sensitive false: tokengate matches paths case-sensitively", m))
				}
				if !slices.Contains(prefixes, value) {
					problems = append(problems, fmt.Sprintf("introspection route %s: %q is no introspection_routes path_prefix %q", m, value, prefixes))
				}
			}
		}
	}
	if n == 0 {
		problems = append(problems, fmt.Sprintf("no route with context_extensions %s: %s", extauthz.RouteMarkerKey, extauthz.RouteMarkerIntrospection))
	}
	return problems
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// loadBootstrap reads a YAML bootstrap the way Envoy does: YAML → JSON →
// proto with unknown fields rejected, then protoc-gen-validate's rules on the
// bootstrap and on every typed config inside it.
func loadBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := validateDeep(b); err != nil {
		return nil, err
	}
	return b, nil
}

type validator interface{ ValidateAll() error }

// validateDeep runs m's validation rules, then unpacks every Any in m (rules
// stop at an Any's boundary) and validates what it holds, recursively.
func validateDeep(m proto.Message) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	return protorange.Range(m.ProtoReflect(), func(p protopath.Values) error {
		msg, ok := p.Index(-1).Value.Interface().(protoreflect.Message)
		if !ok {
			return nil
		}
		a, ok := msg.Interface().(*anypb.Any)
		if !ok {
			return nil
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		if err := validateDeep(inner); err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		return protorange.Break // its fields are a URL and bytes, already handled
	})
}

// checkListeners checks what every bootstrap needs, whichever protocol its
// ext_authz speaks: Envoy's admin API on loopback, and at least one HTTP
// connection manager, each checked by check.
func checkListeners(b *bootstrapv3.Bootstrap, check func(*hcmv3.HttpConnectionManager) []string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); got != "127.0.0.1" {
		bad("admin address: got %q, want 127.0.0.1 (the admin API can stop Envoy)", got)
	}
	hcms, err := connectionManagers(b)
	if err != nil {
		bad("%v", err)
	}
	if len(hcms) == 0 {
		bad("http connection managers: got none, want at least one")
	}
	for _, hcm := range hcms {
		problems = append(problems, check(hcm)...)
	}
	return problems
}

// checkBootstrap reports every way b differs from what tokengate needs, each
// as "what: got X, want Y".
func checkBootstrap(b *bootstrapv3.Bootstrap) []string {
	problems := checkListeners(b, func(hcm *hcmv3.HttpConnectionManager) []string { return checkConnectionManager(b, hcm) })
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	c := findCluster(b, authzCluster)
	if c == nil {
		bad("cluster %q: missing", authzCluster)
		return problems
	}
	problems = append(problems, checkAuthzCluster(c)...)
	return problems
}

// extAuthzOf is the connection manager's ext_authz filter, which must
// come before the router, the last filter; and the filters' names. nil
// (said through bad) when there is none, or it does not decode.
// perRoute is a route's ext_authz settings, or nil (and a problem) when
// they do not decode; a route that disables the check must be one of the
// exact paths left unauthenticated.
func perRoute(r *routev3.Route, cfg *anypb.Any, where string, bad func(string, ...any)) *extauthzv3.ExtAuthzPerRoute {
	per := &extauthzv3.ExtAuthzPerRoute{}
	if err := cfg.UnmarshalTo(per); err != nil {
		bad("%s: %v", where, err)
		return nil
	}
	if per.GetDisabled() && !slices.Contains(unauthenticatedPaths, r.GetMatch().GetPath()) {
		bad("%s: ext_authz disabled: got path %q, want only exact paths %q to skip the check",
			where, r.GetMatch().GetPath(), unauthenticatedPaths)
	}
	return per
}

func extAuthzOf(hcm *hcmv3.HttpConnectionManager, bad func(string, ...any)) (*extauthzv3.ExtAuthz, []string) {
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	i := slices.Index(names, extAuthzFilter)
	if i < 0 {
		bad("http_filters: got %q, want %s", names, extAuthzFilter)
		return nil, names
	}
	if r := slices.Index(names, routerFilter); r != len(names)-1 || r < i {
		bad("http_filters: got %q, want %s before %s, and %s last", names, extAuthzFilter, routerFilter, routerFilter)
	}
	ext := &extauthzv3.ExtAuthz{}
	if err := hcm.GetHttpFilters()[i].GetTypedConfig().UnmarshalTo(ext); err != nil {
		bad("%s typed_config: %v", extAuthzFilter, err)
		return nil, names
	}
	return ext, names
}

func checkConnectionManager(b *bootstrapv3.Bootstrap, hcm *hcmv3.HttpConnectionManager) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s", hcm.GetStatPrefix(), fmt.Sprintf(format, args...)))
	}

	ext, names := extAuthzOf(hcm, bad)
	if ext == nil {
		return problems
	}
	for _, p := range checkExtAuthz(b, ext) {
		bad("%s: %s", extAuthzFilter, p)
	}

	rc := hcm.GetRouteConfig()
	if rc == nil {
		bad("route_config: missing (want static routes)")
	}
	contextRoutes := 0
	var bodyRoutes []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			where := fmt.Sprintf("route %s", r.GetMatch())
			if name := r.GetRoute().GetCluster(); name != "" && findCluster(b, name) == nil {
				bad("%s: cluster %q is not defined", where, name)
			}
			for key, cfg := range r.GetTypedPerFilterConfig() {
				if !slices.Contains(names, key) {
					bad("%s: typed_per_filter_config key %q: want one of the http_filters %q", where, key, names)
				}
				if key != extAuthzFilter {
					continue
				}
				per := perRoute(r, cfg, where, bad)
				if per == nil {
					continue
				}
				if len(per.GetCheckSettings().GetContextExtensions()) > 0 {
					contextRoutes++
				}
				// tokengate judges a request as an introspection only with
				// the marker: the route that sends the body must set it,
				// and no other route may.
				marker, marked := per.GetCheckSettings().GetContextExtensions()[extauthz.RouteMarkerKey]
				wb := per.GetCheckSettings().GetWithRequestBody()
				switch {
				case marked && marker != extauthz.RouteMarkerIntrospection:
					bad("%s: check_settings.context_extensions %s: got %q, want %q or no entry",
						where, extauthz.RouteMarkerKey, marker, extauthz.RouteMarkerIntrospection)
				case marked && wb == nil:
					bad("%s: check_settings.context_extensions %s: %s without with_request_body: want it only on the route that sends the introspection body",
						where, extauthz.RouteMarkerKey, marker)
				case !marked && wb != nil:
					bad("%s: check_settings.with_request_body without context_extensions %s: %s: tokengate would check the introspection like any request",
						where, extauthz.RouteMarkerKey, extauthz.RouteMarkerIntrospection)
				}
				if wb != nil {
					bodyRoutes = append(bodyRoutes, r.GetMatch().GetPath())
					for _, p := range checkBodySettings(wb) {
						bad("%s: check_settings.with_request_body: %s", where, p)
					}
				}
			}
		}
	}
	if contextRoutes == 0 {
		bad("routes with check_settings.context_extensions: got none, want at least one")
	}
	// The body goes to tokengate on the introspection route only, and
	// nowhere else: buffering every body would cost every request.
	if !slices.Equal(bodyRoutes, []string{introspectionPath}) {
		bad("routes with check_settings.with_request_body: got %q, want exactly %q", bodyRoutes, introspectionPath)
	}

	for _, p := range checkEdgeSettings(hcm) {
		bad("%s", p)
	}
	problems = append(problems, checkAccessLog(hcm, metadataLogKeys())...)
	return problems
}

// checkEdgeSettings checks the connection manager settings an edge Envoy in
// front of tokengate needs, whichever protocol ext_authz speaks.
func checkEdgeSettings(hcm *hcmv3.HttpConnectionManager) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// A client's x_auth_subject is not x-auth-subject to Envoy, so ext_authz
	// neither overwrites nor removes it; CGI, WSGI and PHP upstreams read
	// both as HTTP_X_AUTH_SUBJECT. Refuse such requests at the edge.
	if got := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_REJECT_REQUEST {
		bad("common_http_protocol_options.headers_with_underscores_action: got %s, want REJECT_REQUEST", got)
	}
	// Logout routes match paths literally: /oauth2//logout or
	// /oauth2/./logout must reach tokengate as /oauth2/logout.
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
		bad("normalize_path %v, merge_slashes %v: want both true (logout routes match normalised paths)",
			hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes())
	}

	// The route policy matches hosts without their port and trailing dot;
	// Envoy's virtual hosts must be chosen the same way.
	if !hcm.GetStripAnyHostPort() || !hcm.GetStripTrailingHostDot() {
		bad("strip_any_host_port %v, strip_trailing_host_dot %v: want both true (the route policy reads hosts without port or trailing dot)",
			hcm.GetStripAnyHostPort(), hcm.GetStripTrailingHostDot())
	}
	return problems
}

func checkExtAuthz(b *bootstrapv3.Bootstrap, ext *extauthzv3.ExtAuthz) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	gs := ext.GetGrpcService()
	if gs == nil {
		bad("grpc_service: missing (got http_service %v); tokengate serves gRPC", ext.GetHttpService() != nil)
		return problems
	}
	if got := gs.GetEnvoyGrpc().GetClusterName(); got != authzCluster {
		bad("grpc_service.envoy_grpc.cluster_name: got %q, want %q", got, authzCluster)
	}
	switch d := gs.GetTimeout(); {
	case d == nil:
		bad("grpc_service.timeout: not set, want an explicit deadline ≤ %s", maxCheckTimeout)
	case d.AsDuration() <= 0 || d.AsDuration() > maxCheckTimeout:
		bad("grpc_service.timeout: got %s, want > 0 and ≤ %s", d.AsDuration(), maxCheckTimeout)
	}
	if ext.GetFailureModeAllow() {
		bad("failure_mode_allow: got true, want false (fail closed)")
	}
	if got := ext.GetTransportApiVersion(); got != corev3.ApiVersion_V3 {
		bad("transport_api_version: got %s, want V3", got)
	}
	if got := ext.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		bad("status_on_error: got %s, want ServiceUnavailable", got)
	}
	if ext.GetWithRequestBody() != nil {
		bad("with_request_body: set for every route, want it only on the introspection route (check_settings)")
	}
	if ext.GetIncludePeerCertificate() {
		bad("include_peer_certificate: got true, want false")
	}
	return problems
}

// checkBodySettings: the introspection route's body reaches tokengate
// whole for a form around a token of tokens.max_bytes (16 KiB by default),
// a larger one goes on (partial: tokengate passes it to the IdP unjudged)
// instead of Envoy's 413, and as bytes, so that a body that is not UTF-8
// cannot break the CheckRequest.
func checkBodySettings(wb *extauthzv3.BufferSettings) []string {
	var problems []string
	if got := wb.GetMaxRequestBytes(); got < 20<<10 {
		problems = append(problems, fmt.Sprintf("max_request_bytes: got %d, want at least %d (a 16 KiB token and the rest of the form)", got, 20<<10))
	}
	if !wb.GetAllowPartialMessage() {
		problems = append(problems, "allow_partial_message: got false, want true (an oversized body goes on to the IdP, not a 413 from Envoy)")
	}
	if !wb.GetPackAsBytes() {
		problems = append(problems, "pack_as_bytes: got false, want true (raw_body: a non-UTF-8 body must not break the Check)")
	}
	return problems
}

// metadataLogKeys are the access log operators for tokengate's
// CheckResponse.dynamic_metadata keys.
func metadataLogKeys() []string {
	var ops []string
	for _, key := range metadataKeys {
		ops = append(ops, fmt.Sprintf("%%DYNAMIC_METADATA(%s:%s)%%", extAuthzFilter, key))
	}
	return ops
}

// checkAccessLog checks that a stdout access log prints every operator in
// ops and no credential.
func checkAccessLog(hcm *hcmv3.HttpConnectionManager, ops []string) []string {
	var formats []string
	for _, al := range hcm.GetAccessLog() {
		out := &streamv3.StdoutAccessLog{}
		if al.GetTypedConfig().UnmarshalTo(out) != nil {
			continue
		}
		for _, v := range out.GetLogFormat().GetJsonFormat().GetFields() {
			formats = append(formats, v.GetStringValue())
		}
		formats = append(formats, out.GetLogFormat().GetTextFormat())
	}
	all := strings.Join(formats, "\n")
	var problems []string
	if len(formats) == 0 {
		return []string{"access_log: got no stdout access log, want one"}
	}
	for _, op := range ops {
		if !strings.Contains(all, op) {
			problems = append(problems, fmt.Sprintf("access_log: %s not logged", op))
		}
	}
	for _, secret := range []string{"AUTHORIZATION", "COOKIE"} {
		if strings.Contains(strings.ToUpper(all), secret) {
			problems = append(problems, fmt.Sprintf("access_log: logs %s, want no credentials in logs", secret))
		}
	}
	return problems
}

func checkAuthzCluster(c *clusterv3.Cluster) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("cluster %s: %s", c.GetName(), fmt.Sprintf(format, args...)))
	}

	opts := &upstreamhttpv3.HttpProtocolOptions{}
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	if a, ok := c.GetTypedExtensionProtocolOptions()[key]; !ok {
		bad("typed_extension_protocol_options[%s]: missing, want explicit HTTP/2 (gRPC)", key)
	} else if err := a.UnmarshalTo(opts); err != nil {
		bad("typed_extension_protocol_options[%s]: %v", key, err)
	} else if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		bad("upstream protocol: got %s, want explicit_http_config.http2_protocol_options (HTTP/2, for gRPC)", protocolName(opts))
	}

	var services []string
	for _, hc := range c.GetHealthChecks() {
		if g := hc.GetGrpcHealthCheck(); g != nil {
			services = append(services, g.GetServiceName())
		}
	}
	if !slices.Contains(services, authzService) {
		bad("gRPC health check services: got %q, want %q", services, authzService)
	}
	return problems
}

func protocolName(o *upstreamhttpv3.HttpProtocolOptions) string {
	switch e := o.GetExplicitHttpConfig(); {
	case e.GetHttpProtocolOptions() != nil:
		return "explicit HTTP/1.1"
	case e.GetHttp3ProtocolOptions() != nil:
		return "explicit HTTP/3"
	case o.GetUseDownstreamProtocolConfig() != nil:
		return "the downstream's protocol"
	case o.GetAutoConfig() != nil:
		return "auto (ALPN)"
	}
	return "none"
}

// connectionManagers returns the HTTP connection manager of every filter chain.
func connectionManagers(b *bootstrapv3.Bootstrap) ([]*hcmv3.HttpConnectionManager, error) {
	var out []*hcmv3.HttpConnectionManager
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if !f.GetTypedConfig().MessageIs(&hcmv3.HttpConnectionManager{}) {
					continue
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				out = append(out, hcm)
			}
		}
	}
	return out, nil
}

func findCluster(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}
