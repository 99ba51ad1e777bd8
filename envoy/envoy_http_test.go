package envoy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/policy"
)

// The response headers of tokengate's HTTP authorization endpoint that
// Envoy's access log reads, through dynamic_metadata_from_headers, and
// those a denied client must get (the challenge is always passed on).
const (
	reasonHeader     = "x-tokengate-reason"
	decisionIDHeader = "x-tokengate-decision-id"
)

// tokengateIdleTimeout is how long tokengate's HTTP servers keep an idle
// connection (cmd/tokengate's httpServer).
const tokengateIdleTimeout = 2 * time.Minute

var denyHeaders = []string{"www-authenticate", "content-type", "cache-control", "retry-after", reasonHeader}

// tokengateConfigs are the tokengate configurations whose managed headers
// envoy-http.yaml and the Istio HTTP provider must all handle: the compose
// stack's and the documented example's.
var tokengateConfigs = []string{"tokengate.compose.yaml", "../tokengate.example.yaml"}

// managedHeaders are the upstream header names a tokengate configuration
// may set on an allowed request: the identity headers, claim_headers and
// every policy rule's headers. Each must be overwritten or removed on its
// way upstream, or a client could supply it.
func managedHeaders(data []byte) ([]string, error) {
	var cfg struct {
		ClaimHeaders map[string]string `yaml:"claim_headers"`
		Policy       struct {
			Policies map[string][]struct {
				Headers map[string]string `yaml:"headers"`
			} `yaml:"policies"`
		} `yaml:"policy"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	names := []string{policy.HeaderSubject, policy.HeaderIssuer, policy.HeaderTokenID}
	for h := range cfg.ClaimHeaders {
		names = append(names, strings.ToLower(h))
	}
	for _, rules := range cfg.Policy.Policies {
		for _, r := range rules {
			for h := range r.Headers {
				names = append(names, strings.ToLower(h))
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// sourceHeaders are the request headers a tokengate configuration reads
// tokens from (tokens.sources): authorization by default, "cookie" for a
// cookie source.
func sourceHeaders(data []byte) ([]string, error) {
	var cfg struct {
		Tokens struct {
			Sources []struct {
				Header string `yaml:"header"`
				Cookie string `yaml:"cookie"`
			} `yaml:"sources"`
		} `yaml:"tokens"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	if len(cfg.Tokens.Sources) == 0 {
		return []string{"authorization"}, nil
	}
	var out []string
	for _, src := range cfg.Tokens.Sources {
		switch {
		case src.Cookie != "":
			out = append(out, "cookie")
		case src.Header != "":
			out = append(out, strings.ToLower(src.Header))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// sourceHeadersOf is sourceHeaders over every file in tokengateConfigs.
func sourceHeadersOf(files map[string][]byte) []string {
	var all []string
	for _, name := range tokengateConfigs {
		names, _ := sourceHeaders(files[name]) // managedHeadersOf reports the error
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// managedHeadersOf is managedHeaders over every file in tokengateConfigs.
func managedHeadersOf(files map[string][]byte) ([]string, []string) {
	var all, problems []string
	for _, name := range tokengateConfigs {
		names, err := managedHeaders(files[name])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all), problems
}

// underscoreVariants are the spellings of a lower-case header name with any
// of its '-' written '_': names CGI, WSGI and PHP upstreams read as the
// name itself. The name is not among them.
func underscoreVariants(name string) []string {
	var dashes []int
	for i := range len(name) {
		if name[i] == '-' {
			dashes = append(dashes, i)
		}
	}
	var out []string
	for mask := 1; mask < 1<<len(dashes); mask++ {
		b := []byte(name)
		for j, i := range dashes {
			if mask&(1<<j) != 0 {
				b[i] = '_'
			}
		}
		out = append(out, string(b))
	}
	return out
}

// matches reports whether Envoy's list matches header name h, as Envoy's
// StringMatcher does (safe_regex: the whole string).
func matches(l *matcherv3.ListStringMatcher, h string) bool {
	for _, m := range l.GetPatterns() {
		s, fold := h, m.GetIgnoreCase()
		eq := func(a, b string) bool { return a == b || fold && strings.EqualFold(a, b) }
		switch p := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			if eq(s, p.Exact) {
				return true
			}
		case *matcherv3.StringMatcher_Prefix:
			if len(s) >= len(p.Prefix) && eq(s[:len(p.Prefix)], p.Prefix) {
				return true
			}
		case *matcherv3.StringMatcher_Suffix:
			if len(s) >= len(p.Suffix) && eq(s[len(s)-len(p.Suffix):], p.Suffix) {
				return true
			}
		case *matcherv3.StringMatcher_Contains:
			if strings.Contains(s, p.Contains) || fold && strings.Contains(strings.ToLower(s), strings.ToLower(p.Contains)) {
				return true
			}
		case *matcherv3.StringMatcher_SafeRegex:
			if re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`); err == nil && re.MatchString(s) {
				return true
			}
		}
	}
	return false
}

// clientHeaderPassed reports whether Envoy passes response header h of a
// denial on to the client: every header when allowed_client_headers is
// unset, else the listed ones and those Envoy always adds
// (ext_authz_http_impl.cc, ClientConfig::toClientMatchers).
func clientHeaderPassed(l *matcherv3.ListStringMatcher, h string) bool {
	if len(l.GetPatterns()) == 0 {
		return h != "host"
	}
	return slices.Contains([]string{":status", "content-length", "www-authenticate", "location"}, h) || matches(l, h)
}

// checkHTTPBootstrap reports every way an Envoy bootstrap whose ext_authz
// speaks HTTP to tokengate differs from what tokengate needs; managed are
// the header names tokengate may set upstream, sources the request headers
// it reads tokens from.
func checkHTTPBootstrap(b *bootstrapv3.Bootstrap, managed, sources []string) []string {
	problems := checkListeners(b, func(hcm *hcmv3.HttpConnectionManager) []string {
		return checkHTTPConnectionManager(b, hcm, managed, sources)
	})
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	c := findCluster(b, authzCluster)
	if c == nil {
		bad("cluster %q: missing", authzCluster)
		return problems
	}
	return append(problems, checkHTTPAuthzCluster(c)...)
}

func checkHTTPConnectionManager(b *bootstrapv3.Bootstrap, hcm *hcmv3.HttpConnectionManager, managed, sources []string) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s", hcm.GetStatPrefix(), fmt.Sprintf(format, args...)))
	}

	ext, _ := extAuthzOf(hcm, bad)
	if ext == nil {
		return problems
	}
	for _, p := range checkHTTPExtAuthz(b, ext, managed, sources) {
		bad("%s: %s", extAuthzFilter, p)
	}

	// Per-route settings: only Envoy's own liveness skips the check, and
	// none of them means what it would over gRPC.
	rc := hcm.GetRouteConfig()
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			where := fmt.Sprintf("route %s", r.GetMatch())
			if name := r.GetRoute().GetCluster(); name != "" && findCluster(b, name) == nil {
				bad("%s: cluster %q is not defined", where, name)
			}
			cfg, ok := r.GetTypedPerFilterConfig()[extAuthzFilter]
			if !ok {
				continue
			}
			per := perRoute(r, cfg, where, bad)
			if per == nil {
				continue
			}
			cs := per.GetCheckSettings()
			if len(cs.GetContextExtensions()) > 0 {
				bad("%s: check_settings.context_extensions %v: an HTTP authorization server never gets them (gRPC only), so tokengate would judge the route by \"default\"",
					where, cs.GetContextExtensions())
			}
			if cs.GetWithRequestBody() != nil {
				bad("%s: check_settings.with_request_body: tokengate reads a body only to answer an introspection, which HTTP mode cannot carry", where)
			}
			if cs.GetServiceOverride() != nil {
				bad("%s: check_settings service override: every route asks the checked http_service", where)
			}
		}
	}

	problems = append(problems, checkEdgeSettings(hcm)...)
	var ops []string
	for _, h := range []string{reasonHeader, decisionIDHeader, policy.HeaderSubject, policy.HeaderIssuer, policy.HeaderTokenID} {
		ops = append(ops, fmt.Sprintf("%%DYNAMIC_METADATA(%s:%s)%%", extAuthzFilter, h))
	}
	return append(problems, checkAccessLog(hcm, ops)...)
}

func checkHTTPExtAuthz(b *bootstrapv3.Bootstrap, ext *extauthzv3.ExtAuthz, managed, sources []string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	hs := ext.GetHttpService()
	if hs == nil {
		bad("http_service: missing (got grpc_service %v)", ext.GetGrpcService() != nil)
		return problems
	}
	uri := hs.GetServerUri()
	if got := uri.GetCluster(); got != authzCluster || findCluster(b, got) == nil {
		bad("http_service.server_uri.cluster: got %q, want %q, a defined cluster", got, authzCluster)
	}
	switch d := uri.GetTimeout(); {
	case d == nil:
		bad("http_service.server_uri.timeout: not set, want an explicit deadline ≤ %s", maxCheckTimeout)
	case d.AsDuration() <= 0 || d.AsDuration() > maxCheckTimeout:
		bad("http_service.server_uri.timeout: got %s, want > 0 and ≤ %s", d.AsDuration(), maxCheckTimeout)
	}
	// tokengate judges the request by the path it receives: it must be the
	// client's, behind a prefix tokengate strips.
	if hs.GetPathOverride() != "" {
		bad("http_service.path_override %q: every request would reach tokengate with one path, want path_prefix or nothing", hs.GetPathOverride())
	}
	if p := hs.GetPathPrefix(); p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/")) {
		bad("http_service.path_prefix %q: want a path without a trailing '/' (the request's path begins with one)", p)
	}
	if ext.GetFailureModeAllow() {
		bad("failure_mode_allow: got true, want false (fail closed)")
	}
	if got := ext.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		bad("status_on_error: got %s, want ServiceUnavailable (tokengate's own 503 becomes this too)", got)
	}
	if ext.GetWithRequestBody() != nil {
		bad("with_request_body: set, want unset (tokengate reads no body over HTTP)")
	}

	// What tokengate gets: the token, the request id, and every managed
	// name and its '_' variants, which it refuses (header_invalid).
	allowed := ext.GetAllowedHeaders()
	if allowed == nil {
		bad("allowed_headers: not set, want the headers tokengate reads (http_service.authorization_request.allowed_headers is deprecated since Envoy 1.24)")
	}
	for _, h := range requestHeadersWanted(managed, sources) {
		switch {
		case allowed != nil && !matches(allowed, h) && h != "authorization":
			bad("allowed_headers: %s not sent to tokengate", h)
		case matches(ext.GetDisallowedHeaders(), h):
			bad("disallowed_headers: %s not sent to tokengate", h)
		}
	}

	// What the upstream gets: on a 200, every managed name tokengate fills
	// is set (a client's copy overwritten), and the others come back in
	// x-envoy-auth-headers-to-remove. A name missing here would be dropped
	// from tokengate's answer and the client's copy kept.
	resp := hs.GetAuthorizationResponse()
	for _, h := range managed {
		if !matches(resp.GetAllowedUpstreamHeaders(), h) {
			bad("authorization_response.allowed_upstream_headers: %s not set from tokengate's answer: a client-sent %s would reach the upstream", h, h)
		}
		if matches(resp.GetAllowedUpstreamHeadersToAppend(), h) {
			bad("authorization_response.allowed_upstream_headers_to_append: %s appended: a client-sent %s would stay beside tokengate's", h, h)
		}
	}
	// forward_token: false with a cookie source: tokengate answers the
	// Cookie header without the token's cookie, to be set upstream.
	if slices.Contains(sources, "cookie") && !matches(resp.GetAllowedUpstreamHeaders(), "cookie") {
		bad("authorization_response.allowed_upstream_headers: cookie not set from tokengate's answer: a rule with forward_token: false would forward the token's cookie")
	}
	// What a denied client gets: the challenge, the JSON body's type, and
	// tokengate's reason.
	for _, h := range denyHeaders {
		if !clientHeaderPassed(resp.GetAllowedClientHeaders(), h) {
			bad("authorization_response.allowed_client_headers: %s not passed to a denied client", h)
		}
	}
	for _, h := range []string{reasonHeader, decisionIDHeader} {
		if !matches(resp.GetDynamicMetadataFromHeaders(), h) {
			bad("authorization_response.dynamic_metadata_from_headers: %s missing, the access log cannot print it", h)
		}
	}
	return problems
}

// requestHeadersWanted are the request headers tokengate must get over
// HTTP: the token's sources, the request id, and every managed name and
// source header with its '_' variants, which tokengate refuses
// (header_invalid) rather than let an upstream read them as the real one.
// A token source that does not reach tokengate is worse than a missing
// token: on a public route the request goes on, token and all, unchecked.
func requestHeadersWanted(managed, sources []string) []string {
	want := []string{"x-request-id"}
	for _, h := range slices.Concat(managed, sources) {
		want = append(want, h)
		if h != "cookie" && h != "authorization" {
			want = append(want, underscoreVariants(h)...)
		}
	}
	return want
}

// checkHTTPAuthzCluster: tokengate's authz_http listener speaks HTTP/1.1,
// and its health is asked on listen.http, since on the authorization port
// every path is an authorization request.
func checkHTTPAuthzCluster(c *clusterv3.Cluster) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("cluster %s: %s", c.GetName(), fmt.Sprintf(format, args...)))
	}
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if a, ok := c.GetTypedExtensionProtocolOptions()[key]; !ok {
		bad("typed_extension_protocol_options[%s]: missing, want explicit HTTP/1.1 and an idle_timeout", key)
	} else if err := a.UnmarshalTo(opts); err != nil {
		bad("typed_extension_protocol_options[%s]: %v", key, err)
	} else if got := protocolName(opts); got != "explicit HTTP/1.1" {
		bad("upstream protocol: got %s, want explicit HTTP/1.1: tokengate's authz_http listener is plain HTTP/1.1", got)
	}
	// Envoy must give up an idle connection before tokengate closes it, or
	// a check sent as tokengate closes is reset and the client gets 503.
	if d := opts.GetCommonHttpProtocolOptions().GetIdleTimeout(); d == nil || d.AsDuration() <= 0 || d.AsDuration() >= tokengateIdleTimeout {
		bad("common_http_protocol_options.idle_timeout: got %v, want > 0 and < %s (tokengate's HTTP IdleTimeout)", d.AsDuration(), tokengateIdleTimeout)
	}
	var paths []string
	for _, hc := range c.GetHealthChecks() {
		if h := hc.GetHttpHealthCheck(); h != nil {
			paths = append(paths, h.GetPath())
		}
	}
	if !slices.Contains(paths, "/readyz") {
		bad("HTTP health check paths: got %q, want /readyz", paths)
	}
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			ep := e.GetEndpoint()
			hp, port := ep.GetHealthCheckConfig().GetPortValue(), ep.GetAddress().GetSocketAddress().GetPortValue()
			if hp == 0 || hp == port {
				bad("endpoint %s:%d: health_check_config.port_value %d: want listen.http's port (on the authorization port /readyz is an unauthenticated request: 401)",
					ep.GetAddress().GetSocketAddress().GetAddress(), port, hp)
			}
		}
	}
	return problems
}

func readHTTPFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{"envoy-http.yaml": readFile(t, "envoy-http.yaml")}
	for _, name := range tokengateConfigs {
		files[name] = readFile(t, name)
	}
	return files
}

func checkHTTPFiles(files map[string][]byte) []string {
	managed, problems := managedHeadersOf(files)
	b, err := loadBootstrap(files["envoy-http.yaml"])
	if err != nil {
		return append(problems, "envoy-http.yaml: "+err.Error())
	}
	return append(problems, checkHTTPBootstrap(b, managed, sourceHeadersOf(files))...)
}

func TestEnvoyHTTPBootstrap(t *testing.T) {
	files := readHTTPFiles(t)
	managed, _ := managedHeadersOf(files)
	t.Logf("managed headers: %q; token sources: %q", managed, sourceHeadersOf(files))
	for _, p := range checkHTTPFiles(files) {
		t.Errorf("envoy-http.yaml: %s", p)
	}
}

// TestEnvoyHTTPBootstrapChecksCatchMistakes proves the checks above can
// fail: each case breaks envoy-http.yaml or a tokengate configuration in
// one way and expects a problem (or a load error) naming it.
func TestEnvoyHTTPBootstrapChecksCatchMistakes(t *testing.T) {
	const e = "envoy-http.yaml"
	cases := map[string]mutation{
		"fail open":     {e, "failure_mode_allow: false", "failure_mode_allow: true", "failure_mode_allow"},
		"403 on error":  {e, "status_on_error: {code: ServiceUnavailable}", "status_on_error: {code: Forbidden}", "status_on_error"},
		"no timeout":    {e, "                  timeout: 0.25s\n", "", "Timeout"},
		"long timeout":  {e, "timeout: 0.25s", "timeout: 5s", "server_uri.timeout"},
		"other cluster": {e, "cluster: tokengate\n", "cluster: upstream\n", "server_uri.cluster"},
		"one path for every request": {
			e, "                authorization_response:\n", "                path_override: /check\n                authorization_response:\n", "path_override",
		},
		"claim header not set upstream": {
			e, "                    - exact: x-auth-roles       # claim_headers\n", "", "allowed_upstream_headers: x-auth-roles",
		},
		"subject not set upstream": {
			e, "                    - exact: x-auth-subject\n                    - exact: x-auth-issuer", "                    - exact: x-auth-issuer", "allowed_upstream_headers: x-auth-subject",
		},
		"rule header of the example not set upstream": {
			e, "                    - exact: x-auth-tenant-id   # a rule's headers (tokengate.example.yaml)\n", "", "x-auth-tenant-id",
		},
		"new claim header in tokengate only": {
			"tokengate.compose.yaml", "  x-auth-roles: roles\n", "  x-auth-roles: roles\n  x-user-email: email\n", "allowed_upstream_headers: x-user-email",
		},
		"identity appended, not set": {
			e, "                  allowed_client_headers:\n", "                  allowed_upstream_headers_to_append: {patterns: [{prefix: x-auth-}]}\n                  allowed_client_headers:\n",
			"allowed_upstream_headers_to_append: x-auth-subject",
		},
		"underscore variants not sent": {e, "                - prefix: x_auth_\n", "", "allowed_headers: x_auth_subject"},
		"mixed variants not sent":      {e, "                - prefix: x-auth_\n", "", "allowed_headers: x-auth_token-id"},
		"managed header withheld": {
			e, "              failure_mode_allow: false", "              disallowed_headers: {patterns: [{exact: x-auth-roles}]}\n              failure_mode_allow: false", "disallowed_headers: x-auth-roles",
		},
		"cookie not sent": {
			e, "                - exact: cookie\n                - exact: x-request-id", "                - exact: x-request-id", "allowed_headers: cookie",
		},
		"cookie not rewritten": {e, "                    - exact: cookie\n", "", "allowed_upstream_headers: cookie"},
		"header source not sent": {
			"../tokengate.example.yaml", "    - cookie: app.at ", "    - header: x-access-token\n    - cookie: app.at ", "allowed_headers: x-access-token",
		},
		"request id not sent":              {e, "                - exact: x-request-id\n", "", "allowed_headers: x-request-id"},
		"no allowed headers":               {e, "              allowed_headers:\n", "              disallowed_headers:\n", "allowed_headers: not set"},
		"JSON type not passed to client":   {e, "                    - exact: content-type        # the JSON body's\n", "", "allowed_client_headers: content-type"},
		"reason not passed to client":      {e, "                    - exact: x-tokengate-reason\n                    - exact: x-tokengate-error", "                    - exact: x-tokengate-error", "allowed_client_headers: x-tokengate-reason"},
		"retry-after not passed to client": {e, "                    - exact: retry-after\n", "", "allowed_client_headers: retry-after"},
		"decision id not collected": {
			e, "                    - exact: x-tokengate-decision-id\n                    - exact: x-auth-subject", "                    - exact: x-auth-subject", "dynamic_metadata_from_headers: x-tokengate-decision-id",
		},
		"reason not logged": {e, `authz_reason: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:x-tokengate-reason)%"`, `authz_reason: "-"`, "x-tokengate-reason)% not logged"},
		"route names a policy": {
			e, "                  prefix_rewrite: /anything/\n",
			"                  prefix_rewrite: /anything/\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings: {context_extensions: {policy: partner-api}}\n",
			"context_extensions",
		},
		"ext_authz disabled on /api": {
			e, "                  prefix_rewrite: /anything/\n",
			"                  prefix_rewrite: /anything/\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    disabled: true\n",
			"disabled",
		},
		"health asked on the authorization port": {e, "            health_check_config: {port_value: 8181}\n", "", "health_check_config"},
		"HTTP/2 to tokengate":                    {e, "explicit_http_config: {http_protocol_options: {}}", "explicit_http_config: {http2_protocol_options: {}}", "HTTP/1.1"},
		"idle longer than tokengate":             {e, "idle_timeout: 60s", "idle_timeout: 300s", "idle_timeout"},
		"no idle timeout":                        {e, "common_http_protocol_options: {idle_timeout: 60s}", "common_http_protocol_options: {}", "idle_timeout"},
		"underscored headers allowed":            {e, "headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW", "headers_with_underscores_action"},
		"paths not normalised":                   {e, "normalize_path: true", "normalize_path: false", "normalize_path"},
		"admin on every interface":               {e, "{address: 127.0.0.1, port_value: 9901}", "{address: 0.0.0.0, port_value: 9901}", "admin"},
	}
	catchMistakes(t, readHTTPFiles(t), cases, checkHTTPFiles)
}

// TestComposeConfigMatchesEnvoyHTTP: envoy-http.yaml's tokengate cluster
// reaches the compose tokengate's listen.authz_http, in envoy mode without
// a path prefix (the filter sets none), and asks its health on listen.http.
func TestComposeConfigMatchesEnvoyHTTP(t *testing.T) {
	b, err := loadBootstrap(readFile(t, "envoy-http.yaml"))
	if err != nil {
		t.Fatalf("envoy-http.yaml: %v", err)
	}
	var cfg struct {
		Listen struct {
			HTTP      string `yaml:"http"`
			AuthzHTTP string `yaml:"authz_http"`
		} `yaml:"listen"`
		AuthzHTTP struct {
			Mode       string `yaml:"mode"`
			PathPrefix string `yaml:"path_prefix"`
		} `yaml:"authz_http"`
	}
	if err := yaml.Unmarshal(readFile(t, "tokengate.compose.yaml"), &cfg); err != nil {
		t.Fatalf("tokengate.compose.yaml: %v", err)
	}
	if m := cfg.AuthzHTTP.Mode; m != "" && m != "envoy" {
		t.Errorf("tokengate.compose.yaml: authz_http.mode %q, want envoy (the default)", m)
	}
	ext := httpExtAuthz(t, b)
	if got, want := ext.GetHttpService().GetPathPrefix(), cfg.AuthzHTTP.PathPrefix; got != want {
		t.Errorf("envoy-http.yaml path_prefix %q, tokengate.compose.yaml authz_http.path_prefix %q: want them equal", got, want)
	}
	c := findCluster(b, authzCluster)
	if c == nil {
		t.Fatalf("envoy-http.yaml: no cluster %q", authzCluster)
	}
	ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint()
	for _, l := range []struct {
		key, addr string
		port      uint32
	}{
		{"listen.authz_http", cfg.Listen.AuthzHTTP, ep.GetAddress().GetSocketAddress().GetPortValue()},
		{"listen.http", cfg.Listen.HTTP, ep.GetHealthCheckConfig().GetPortValue()},
	} {
		if got := listenPort(l.addr); got != int(l.port) {
			t.Errorf("tokengate.compose.yaml %s %q: port %d, envoy-http.yaml's tokengate endpoint uses %d", l.key, l.addr, got, l.port)
		}
	}
}

// httpExtAuthz is the first connection manager's ext_authz filter.
func httpExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap) *extauthzv3.ExtAuthz {
	t.Helper()
	hcms, err := connectionManagers(b)
	if err != nil || len(hcms) == 0 {
		t.Fatalf("connection managers: %v (%d)", err, len(hcms))
	}
	for _, f := range hcms[0].GetHttpFilters() {
		if f.GetName() == extAuthzFilter {
			ext := &extauthzv3.ExtAuthz{}
			if err := f.GetTypedConfig().UnmarshalTo(ext); err != nil {
				t.Fatal(err)
			}
			return ext
		}
	}
	t.Fatalf("no %s filter", extAuthzFilter)
	return nil
}

// TestUnderscoreVariants: every mix of '-' and '_', and not the name.
func TestUnderscoreVariants(t *testing.T) {
	got := underscoreVariants("x-auth-sub")
	want := []string{"x_auth-sub", "x-auth_sub", "x_auth_sub"}
	if !slices.Equal(got, want) {
		t.Errorf("underscoreVariants: got %q, want %q", got, want)
	}
	if got := underscoreVariants("plain"); len(got) != 0 {
		t.Errorf("underscoreVariants(plain): got %q, want none", got)
	}
}
