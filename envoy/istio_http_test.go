package envoy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// istioMatches reports whether header name h matches one of Istio's header
// patterns: "abc" exactly, "abc*" as a prefix, "*abc" as a suffix
// (MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationHttpProvider).
func istioMatches(patterns []string, h string) bool {
	for _, p := range patterns {
		p = strings.ToLower(p)
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, "*") && strings.HasPrefix(h, strings.TrimSuffix(p, "*")):
			return true
		case strings.HasPrefix(p, "*") && strings.HasSuffix(h, strings.TrimPrefix(p, "*")):
			return true
		case p == h:
			return true
		}
	}
	return false
}

// checkHTTPProvider checks an envoyExtAuthzHttp provider as envoy-http.yaml
// is checked: Istio turns it into the same ext_authz filter.
func checkHTTPProvider(where string, h *httpProvider, svc *object, svcSpec serviceSpec, managed, sources []string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	problems = append(problems, checkProviderCommon(where, h.Timeout, h.FailOpen, h.StatusOnError)...)
	if svc != nil {
		if want := svc.Metadata.Name + "." + svc.Metadata.Namespace + ".svc.cluster.local"; h.Service != want {
			bad("%s: service: got %q, want %q (the Service in tokengate.yaml)", where, h.Service, want)
		}
		if sp := findPort(svcSpec.Ports, "http-authz"); sp == nil || sp.Port != h.Port {
			bad("%s: port: got %d, want the Service's http-authz port (%v), listen.authz_http", where, h.Port, sp)
		}
	}
	if p := h.PathPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/")) {
		bad("%s: pathPrefix %q: want a path without a trailing '/'", where, p)
	}
	if h.IncludeRequestBodyInCheck != nil {
		bad("%s: includeRequestBodyInCheck: set, want unset (tokengate reads no body over HTTP)", where)
	}
	if len(h.IncludeHeadersInCheck) > 0 {
		bad("%s: includeHeadersInCheck: deprecated, want includeRequestHeadersInCheck", where)
	}

	// What tokengate gets. Istio's documentation promises Host, method,
	// path and Content-Length only, so authorization is named too.
	want := requestHeadersWanted(managed, sources)
	for _, name := range want {
		if !istioMatches(h.IncludeRequestHeadersInCheck, name) {
			bad("%s: includeRequestHeadersInCheck: %s not sent to tokengate", where, name)
		}
	}
	for name := range h.IncludeAdditionalHeadersInCheck {
		if n := strings.ToLower(name); slices.Contains(want, n) {
			bad("%s: includeAdditionalHeadersInCheck: %s replaces the client's", where, n)
		}
	}
	// What the upstream gets: every managed name set from the answer.
	for _, m := range managed {
		if !istioMatches(h.HeadersToUpstreamOnAllow, m) {
			bad("%s: headersToUpstreamOnAllow: %s not set from tokengate's answer: a client-sent %s would reach the upstream", where, m, m)
		}
	}
	if slices.Contains(sources, "cookie") && !istioMatches(h.HeadersToUpstreamOnAllow, "cookie") {
		bad("%s: headersToUpstreamOnAllow: cookie not set from tokengate's answer: a rule with forward_token: false would forward the token's cookie", where)
	}
	// What a denied client gets; Envoy always adds www-authenticate when
	// the list is set, and passes everything when it is not.
	for _, d := range denyHeaders {
		passed := len(h.HeadersToDownstreamOnDeny) == 0 || d == "www-authenticate" || istioMatches(h.HeadersToDownstreamOnDeny, d)
		if !passed {
			bad("%s: headersToDownstreamOnDeny: %s not passed to a denied client", where, d)
		}
	}
	return problems
}

// checkDestinationRule: the Envoys that ask tokengate over HTTP close an
// idle connection before tokengate does (a DestinationRule for the Service
// with connectionPool.http.idleTimeout below tokengate's), and leave TLS
// to Istio's automatic mTLS (tokengate has no sidecar).
func checkDestinationRule(objs map[string][]object, svc *object) []string {
	if svc == nil {
		return nil
	}
	host := svc.Metadata.Name + "." + svc.Metadata.Namespace + ".svc.cluster.local"
	for _, o := range objs["DestinationRule"] {
		var s struct {
			Host          string `yaml:"host"`
			TrafficPolicy struct {
				TLS            any `yaml:"tls"`
				ConnectionPool struct {
					HTTP struct {
						IdleTimeout string `yaml:"idleTimeout"`
					} `yaml:"http"`
				} `yaml:"connectionPool"`
			} `yaml:"trafficPolicy"`
		}
		if err := o.Spec.Decode(&s); err != nil {
			return []string{fmt.Sprintf("DestinationRule %s: %v", o.Metadata.Name, err)}
		}
		if s.Host != host {
			continue
		}
		var problems []string
		d, err := time.ParseDuration(s.TrafficPolicy.ConnectionPool.HTTP.IdleTimeout)
		if err != nil || d <= 0 || d >= tokengateIdleTimeout {
			problems = append(problems, fmt.Sprintf("DestinationRule %s: connectionPool.http.idleTimeout: got %q, want > 0 and < %s (tokengate's HTTP IdleTimeout)",
				o.Metadata.Name, s.TrafficPolicy.ConnectionPool.HTTP.IdleTimeout, tokengateIdleTimeout))
		}
		if s.TrafficPolicy.TLS != nil {
			problems = append(problems, fmt.Sprintf("DestinationRule %s: trafficPolicy.tls: set, want it unset (tokengate has no sidecar; automatic mTLS speaks plain text to it)", o.Metadata.Name))
		}
		return problems
	}
	return []string{fmt.Sprintf("DestinationRule for %s: missing, want connectionPool.http.idleTimeout < %s (an HTTP check on a connection tokengate is closing is reset: 503)", host, tokengateIdleTimeout)}
}

func TestIstioMatches(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		h        string
		want     bool
	}{
		{[]string{"x-auth-*"}, "x-auth-subject", true},
		{[]string{"x-auth-*"}, "x_auth_subject", false},
		{[]string{"*-subject"}, "x-auth-subject", true},
		{[]string{"x-auth-subject"}, "x-auth-subject", true},
		{[]string{"x-auth-subject"}, "x-auth-subjects", false},
		{nil, "x-auth-subject", false},
	} {
		if got := istioMatches(tc.patterns, tc.h); got != tc.want {
			t.Errorf("istioMatches(%q, %q): got %v, want %v", tc.patterns, tc.h, got, tc.want)
		}
	}
}

// TestIstioHTTPProviderChecksCatchMistakes proves the HTTP provider's
// checks can fail.
func TestIstioHTTPProviderChecksCatchMistakes(t *testing.T) {
	const m = "mesh-config.yaml"
	cases := map[string]mutation{
		"fail open": {m, "        failOpen: false\n        statusOnError: \"503\"\n        # Envoy always", "        failOpen: true\n        statusOnError: \"503\"\n        # Envoy always",
			"extensionProviders tokengate-http: failOpen"},
		"no timeout": {m, "        port: 9192\n        timeout: 0.25s\n", "        port: 9192\n", "extensionProviders tokengate-http: timeout"},
		"403 on error": {m, "        statusOnError: \"503\"\n        # Envoy always", "        statusOnError: \"403\"\n        # Envoy always",
			"extensionProviders tokengate-http: statusOnError"},
		"gRPC port":            {m, "        port: 9192\n", "        port: 9191\n", "http-authz port"},
		"claim header dropped": {m, "        - x-auth-roles\n", "", "headersToUpstreamOnAllow: x-auth-roles"},
		"claim header in tokengate only": {
			"tokengate.yaml", "      x-auth-roles: roles\n", "      x-auth-roles: roles\n      x-user-email: email\n", "headersToUpstreamOnAllow: x-user-email",
		},
		"variants not sent":                     {m, "        - x_auth_*\n", "", "includeRequestHeadersInCheck: x_auth_subject"},
		"authorization not named":               {m, "        - authorization\n", "", "includeRequestHeadersInCheck: authorization"},
		"JSON type not passed":                  {m, "        - content-type\n", "", "headersToDownstreamOnDeny: content-type"},
		"reason not passed":                     {m, "        - x-tokengate-reason\n", "", "headersToDownstreamOnDeny: x-tokengate-reason"},
		"body sent":                             {m, "        failOpen: false\n        statusOnError: \"503\"\n        # Envoy always", "        failOpen: false\n        includeRequestBodyInCheck: {maxRequestBytes: 8192}\n        statusOnError: \"503\"\n        # Envoy always", "includeRequestBodyInCheck"},
		"policy names no provider":              {"authorization-policy-http.yaml", "    name: tokengate-http\n", "    name: tokengate-htp\n", "provider.name"},
		"two providers on one pod":              {"authorization-policy-http.yaml", "      app: orders\n", "      app: httpbin\n", "one CUSTOM provider per workload"},
		"no authz_http listener":                {"tokengate.yaml", `, authz_http: "0.0.0.0:9192"`, "", "listen.authz_http"},
		"authz_http on loopback":                {"tokengate.yaml", `authz_http: "0.0.0.0:9192"`, `authz_http: "127.0.0.1:9192"`, "listen.authz_http"},
		"http-authz open to the IdP":            {"network-policy.yaml", "    - {port: http, protocol: TCP}\n", "    - {port: http, protocol: TCP}\n    - {port: http-authz, protocol: TCP}\n", "an ext_authz port (gRPC or HTTP) admits"},
		"idle longer than tokengate":            {"destination-rule.yaml", "idleTimeout: 60s", "idleTimeout: 1h", "idleTimeout"},
		"rule for another host":                 {"destination-rule.yaml", "host: tokengate.tokengate.svc.cluster.local", "host: tokengate.default.svc.cluster.local", "DestinationRule for tokengate.tokengate.svc.cluster.local: missing"},
		"mutual TLS to a pod without a sidecar": {"destination-rule.yaml", "    connectionPool:\n", "    tls: {mode: ISTIO_MUTUAL}\n    connectionPool:\n", "trafficPolicy.tls"},
		"http-authz without a rule":             {"network-policy.yaml", "    - {port: http-authz, protocol: TCP}\n", "", `Service port "http-authz"`},
	}
	catchMistakes(t, readIstioFiles(t), cases, func(files map[string][]byte) []string { return checkIstio(files) })
}
