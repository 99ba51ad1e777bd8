package main

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// e2ePolicy is the route policy of TestRoutePolicyEndToEnd, in a
// policy.file; e2ePolicyV2 makes /internal public, e2ePolicyBad is no
// policy at all (a regexp that does not compile).
const e2ePolicy = `policies:
  default:
    - name: health
      match: {path: /healthz}
      access: public
    - name: internal
      match: {path_prefix: /internal}
      access: deny
    - name: orders-superuser
      match: {path_prefix: /orders}
      shadow: true
      require: {roles: {any_of: [superuser]}}
    - name: orders-write
      match: {path_prefix: /orders, methods: [POST]}
      require: {scopes: {all_of: ["orders:write"]}}
    - name: orders
      match: {path_prefix: /orders}
      require: {roles: {any_of: [clerk]}}
    - name: tenant
      match: {path_prefix: /tenants}
      require: {when: 'claims.tid == "acme"'}
    - name: private
      match: {path_prefix: /private}
      forward_token: false
    - name: userinfo
      match: {host: auth.example.com, path: /oauth2/userinfo}
  partner-api:
    - name: partner
      match: {path_prefix: /}
      require: {audiences: [partner]}
`

var (
	e2ePolicyV2  = strings.Replace(e2ePolicy, "access: deny", "access: public", 1)
	e2ePolicyBad = strings.Replace(e2ePolicy, "path_prefix: /internal}", "path_regex: '(/internal'}", 1)
)

// TestRoutePolicyEndToEnd, through run over real gRPC with a policy file:
// public, deny, roles, scopes, a CEL condition, unmatched, a policy chosen
// by context_extensions and an unknown one, a shadow rule (counted in
// /metrics), forward_token: false with the token in a cookie, userinfo and
// introspection after a revocation; then a valid reload takes effect and an
// invalid one keeps the rules, both without a restart; and no log line
// holds a token, a cookie or a secret.
func TestRoutePolicyEndToEnd(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, file, e2ePolicy)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api, partner]}]
admin: {token: %q}
tokens:
  sources: [{header: authorization}, {cookie: app.at}]
introspection_routes:
  - {host: auth.example.com, path_prefix: /oauth2/introspect}
policy: {file: %q, unmatched: deny, poll_interval: 100ms}
`, iss.URL, testAdminToken, file))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)

	type call struct {
		method, host, path string
		headers            map[string]string
		ext                map[string]string
		body               string
	}
	check := func(c call) (string, *authv3.CheckResponse) {
		t.Helper()
		if c.method == "" {
			c.method = "GET"
		}
		if c.host == "" {
			c.host = "api.example.com"
		}
		resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: c.ext,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: c.method, Host: c.host, Path: c.path, Headers: c.headers, Body: c.body}}}})
		if err != nil {
			t.Fatalf("Check %s %s: %v", c.method, c.path, err)
		}
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		return reason, resp
	}
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

	alice := mintToken(t, iss, "alice", time.Hour, map[string]any{"roles": []any{"clerk"}, "scope": "orders:read", "tid": "acme"})
	bob := mintToken(t, iss, "bob", time.Hour, map[string]any{"roles": []any{"viewer"}, "tid": "globex"})
	partner := mintToken(t, iss, "carol", time.Hour, map[string]any{"aud": "partner"})
	for _, c := range []struct {
		name   string
		call   call
		reason string
		status int32 // of a denial
	}{
		{"public, no token", call{path: "/healthz"}, "anonymous", 0},
		{"public, a valid token", call{path: "/healthz", headers: bearer(alice)}, "allowed", 0},
		{"deny", call{path: "/internal/metrics", headers: bearer(alice)}, "forbidden", 403},
		{"traversal into deny", call{path: "/healthz/../internal/metrics"}, "forbidden", 403},
		{"encoded slash", call{path: "/orders%2F..%2Finternal"}, "path_invalid", 400},
		{"roles met", call{path: "/orders/7", headers: bearer(alice)}, "allowed", 0},
		{"roles not met", call{path: "/orders/7", headers: bearer(bob)}, "forbidden", 403},
		{"no token on an authenticated route", call{path: "/orders/7"}, "token_missing", 401},
		{"scope missing", call{method: "POST", path: "/orders", headers: bearer(alice)}, "insufficient_scope", 403},
		{"CEL holds", call{path: "/tenants/acme", headers: bearer(alice)}, "allowed", 0},
		{"CEL does not", call{path: "/tenants/acme", headers: bearer(bob)}, "forbidden", 403},
		{"unmatched", call{path: "/elsewhere", headers: bearer(alice)}, "route_unmatched", 403},
		{"context_extensions choose a policy", call{path: "/v1/x", headers: bearer(partner), ext: map[string]string{"policy": "partner-api"}}, "allowed", 0},
		{"the chosen policy's rules apply", call{path: "/v1/x", headers: bearer(alice), ext: map[string]string{"policy": "partner-api"}}, "forbidden", 403},
		{"an unknown policy", call{path: "/healthz", ext: map[string]string{"policy": "nope"}}, "policy_unknown", 403},
	} {
		reason, resp := check(c.call)
		if reason != c.reason || resp.GetDeniedResponse().GetStatus().GetCode() != 0 && int32(resp.GetDeniedResponse().GetStatus().GetCode()) != c.status {
			t.Errorf("%s: %s %v, want %s %d", c.name, reason, resp.GetDeniedResponse().GetStatus(), c.reason, c.status)
		}
	}

	// The shadow rule would have refused alice (no superuser role): counted,
	// while the next rule decided.
	_, metrics := httpGet(t, "http://"+in.httpAddr+"/metrics")
	for _, want := range []string{
		`tokengate_policy_shadow_decisions_total{decision="forbidden",policy="default",rule="orders-superuser"}`,
		`tokengate_policy_decisions_total{decision="allow",policy="default",rule="orders"}`,
		`tokengate_policy_decisions_total{decision="forbidden",policy="default",rule="internal"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// forward_token: false, the token in a cookie: neither the cookie nor
	// authorization reach the upstream; the other cookies do.
	reason, resp := check(call{path: "/private/notes", headers: map[string]string{"cookie": "theme=dark; app.at=" + alice}})
	ok := resp.GetOkResponse()
	cookie := ""
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "cookie" {
			cookie = h.GetHeader().GetValue()
		}
	}
	if reason != "allowed" || cookie != "theme=dark" || !slices.Contains(ok.GetHeadersToRemove(), "authorization") {
		t.Errorf("forward_token false: %s, cookie %q, removed %v; want allowed, theme=dark, authorization removed",
			reason, cookie, ok.GetHeadersToRemove())
	}

	// The IdP's endpoints after a revocation: userinfo (an authenticated
	// rule) is 401, introspection answers {"active":false} for the IdP.
	if code := in.revoke(t, fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"bob"}`, iss.URL)); code != http.StatusCreated {
		t.Fatalf("revoke bob: %d", code)
	}
	eventually(t, "bob's revocation applies", func() bool {
		r, _ := check(call{host: "auth.example.com", path: "/oauth2/userinfo", headers: bearer(bob)})
		return r == "token_revoked"
	})
	marker := map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection}
	form := func(tok string) string { return url.Values{"token": {tok}}.Encode() }
	reason, resp = check(call{method: "POST", host: "auth.example.com", path: "/oauth2/introspect", ext: marker, body: form(bob),
		headers: map[string]string{"authorization": "Basic cmVzb3VyY2Utc2VydmVyOnNlY3JldA==", "content-type": "application/x-www-form-urlencoded"}})
	if d := resp.GetDeniedResponse(); reason != "introspection_inactive" || d.GetStatus().GetCode() != 200 || d.GetBody() != `{"active":false}` {
		t.Errorf("introspect a revoked token: %s %v %q", reason, d.GetStatus(), d.GetBody())
	}
	reason, _ = check(call{method: "POST", host: "auth.example.com", path: "/oauth2/introspect", ext: marker, body: form(alice),
		headers: map[string]string{"authorization": "Basic cmVzb3VyY2Utc2VydmVyOnNlY3JldA==", "content-type": "application/x-www-form-urlencoded"}})
	if reason != "introspection_passed" {
		t.Errorf("introspect a valid token: %s, want introspection_passed", reason)
	}

	// A valid change takes effect without a restart...
	replaceFile(t, file, e2ePolicyV2)
	eventually(t, "the reloaded policy applies", func() bool {
		r, _ := check(call{path: "/internal/metrics"})
		return r == "anonymous"
	})
	// ...and an invalid one keeps the rules in force.
	replaceFile(t, file, e2ePolicyBad)
	eventually(t, "the failed reload is counted", func() bool {
		_, m := httpGet(t, "http://"+in.httpAddr+"/metrics")
		return strings.Contains(m, `tokengate_policy_reloads_total{result="failure"} 1`)
	})
	if r, _ := check(call{path: "/internal/metrics"}); r != "anonymous" {
		t.Errorf("after an invalid reload: %s, want the previous rules (anonymous)", r)
	}
	if r, _ := check(call{path: "/orders/7", headers: bearer(bob)}); r != "token_revoked" {
		t.Errorf("after an invalid reload: bob %s, want token_revoked", r)
	}

	// Nothing secret in the logs: no token (nor its signature), no cookie
	// value, no admin token.
	logs := in.logs.String()
	if !strings.Contains(logs, `"rule":"internal"`) {
		t.Errorf("no denial log line names the rule (internal)")
	}
	for _, secret := range []string{alice, bob, partner, testAdminToken, "theme=dark", "cmVzb3VyY2Utc2VydmVyOnNlY3JldA=="} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold a secret (%.12s…)", secret)
		}
	}
	for _, tok := range []string{alice, bob, partner} {
		if sig := tok[strings.LastIndexByte(tok, '.')+1:]; strings.Contains(logs, sig) {
			t.Errorf("the logs hold a token's signature")
		}
	}
}
