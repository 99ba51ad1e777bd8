package extauthz_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// policyEnv is a Check server over real gRPC with a route policy that a
// test may swap (as a reload does), a revocation index, and token sources
// in the Authorization header and the app.at cookie.
type policyEnv struct {
	iss    *tokentest.Issuer
	index  *storage.Index
	set    atomic.Pointer[policy.Set]
	reg    *prometheus.Registry
	client authv3.AuthorizationClient
	keys   bool // the issuer's keys are loaded
	// unloaded: the revocations have not loaded yet; stale: they are older
	// than MaxStaleness.
	unloaded, stale atomic.Bool
	failOpen        bool
	logouts         atomic.Int64 // revocations the logout route wrote
}

// countingLogout stands in for a store taking the logout's write, and
// counts them.
type countingLogout struct{ n *atomic.Int64 }

func (c countingLogout) RevokeLogout(context.Context, *token.Identity, bool, bool, bool) error {
	c.n.Add(1)
	return nil
}

func newPolicyEnv(t *testing.T, rules map[string][]policy.RuleSpec, loadKeys bool) *policyEnv {
	return newPolicyEnvWith(t, rules, loadKeys, false)
}

func newPolicyEnvWith(t *testing.T, rules map[string][]policy.RuleSpec, loadKeys, failOpen bool) *policyEnv {
	t.Helper()
	e := &policyEnv{iss: tokentest.NewServer(t, audience), index: storage.NewIndex(), reg: prometheus.NewRegistry(), keys: loadKeys, failOpen: failOpen}
	issuers := []policy.IssuerInfo{{Name: "a", Iss: e.iss.URL}}
	e.set.Store(compilePolicy(t, e.iss.URL, rules))
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-tenant": "tid"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, JWKSURI: e.iss.URL + "/jwks.json", Audiences: []string{audience, "other"},
			Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries: 100,
		Derive:          extauthz.Derive(headers, e.index, policy.NewSubjects(issuers, true)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if loadKeys {
		if err := v.Refresh(t.Context(), "a"); err != nil {
			t.Fatal(err)
		}
	}
	logout, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	introspect, err := policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{{PathPrefix: "/oauth2/introspect"}})
	if err != nil {
		t.Fatal(err)
	}
	e.client = serveGRPC(t, newServer(t, extauthz.Options{
		Verifier: v, Headers: headers, Revocations: e.index, MaxStaleness: time.Minute, FailOpen: failOpen,
		Loaded: func() bool { return !e.unloaded.Load() },
		Staleness: func() time.Duration {
			if e.stale.Load() {
				return time.Hour
			}
			return 0
		},
		TokenSources: []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}},
		Policy:       e.set.Load, Registerer: e.reg,
		LogoutRoutes: logout, Logout: countingLogout{&e.logouts}, IntrospectionRoutes: introspect,
	}))
	return e
}

func compilePolicy(t *testing.T, iss string, rules map[string][]policy.RuleSpec) *policy.Set {
	t.Helper()
	set, err := policy.Compile(policy.Options{
		Unmatched: policy.UnmatchedDeny,
		Issuers:   []policy.IssuerInfo{{Name: "a", Iss: iss}},
		Policies:  rules,
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func (e *policyEnv) token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"iss": e.iss.URL, "aud": audience, "sub": "user-1", "jti": "jti-" + t.Name(),
		"iat": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	return mint(t, e.iss, c, nil)
}

// call is one request: its method and path, headers, and Envoy's
// context_extensions.
type call struct {
	method, path string
	headers      map[string]string
	ext          map[string]string
	body         string
}

func (e *policyEnv) check(t *testing.T, c call) *authv3.CheckResponse {
	t.Helper()
	headers := map[string]string{"x-request-id": "req-1"}
	for k, v := range c.headers {
		headers[k] = v
	}
	req := checkRequest(headers)
	if c.method != "" {
		req.Attributes.Request.Http.Method = c.method
	}
	req.Attributes.Request.Http.Path = c.path
	req.Attributes.ContextExtensions = c.ext
	resp, err := e.client.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check %s: %v", c.path, err)
	}
	return resp
}

func reasonOf(resp *authv3.CheckResponse) string {
	return resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

func TestPolicyDecisions(t *testing.T) {
	no := false
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{
		"default": {
			{Name: "health", Match: policy.MatchSpec{Path: "/healthz"}, Access: "public"},
			{Name: "strict-public", Match: policy.MatchSpec{PathPrefix: "/strict"}, Access: "public", RejectInvalid: true},
			{Name: "internal", Match: policy.MatchSpec{PathRegex: "/internal/.*"}, Access: "deny"},
			{Name: "orders-shadow", Match: policy.MatchSpec{PathPrefix: "/orders"}, Shadow: true,
				Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"auditor"}}}},
			{Name: "orders-write", Match: policy.MatchSpec{PathPrefix: "/orders", Methods: []string{"post"}},
				Require: policy.Require{Scopes: policy.AnyAll{AllOf: []string{"orders:write"}}}},
			{Name: "orders", Match: policy.MatchSpec{PathPrefix: "/orders"},
				Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin", "clerk"}}}},
			{Name: "tenant", Match: policy.MatchSpec{PathPrefix: "/tenant"},
				Require: policy.Require{When: `claims.tid == "acme" && request.headers["x-region"] == "emea"`}},
			{Name: "private", Match: policy.MatchSpec{PathPrefix: "/private"}, ForwardToken: &no,
				Headers: map[string]string{"x-auth-email": "email"}},
		},
		"partner": {
			{Name: "partner-api", Match: policy.MatchSpec{PathPrefix: "/"}, Require: policy.Require{Audiences: []string{"other"}}},
		},
	}, true)
	valid := e.token(t, jwt.MapClaims{"roles": []any{"clerk"}, "scope": "orders:read", "tid": "acme", "email": "a@example.com"})
	revoked := e.token(t, jwt.MapClaims{"jti": "revoked-jti", "roles": []any{"clerk"}})
	if _, err := e.index.Apply([]storage.Change{{Seq: 1, Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindToken, Issuer: e.iss.URL, Key: "revoked-jti", ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		call   call
		reason string
		status int // the HTTP status of a denial
	}{
		{"public without a token", call{path: "/healthz"}, "anonymous", 0},
		{"public with a valid token", call{path: "/healthz", headers: bearer(valid)}, "allowed", 0},
		{"public with an invalid token", call{path: "/healthz", headers: bearer("not-a-jwt")}, "anonymous", 0},
		{"public with a revoked token", call{path: "/healthz", headers: bearer(revoked)}, "anonymous", 0},
		{"reject_invalid: no token", call{path: "/strict"}, "anonymous", 0},
		{"reject_invalid: an invalid token", call{path: "/strict", headers: bearer("not-a-jwt")}, "token_malformed", 401},
		{"reject_invalid: a revoked token", call{path: "/strict", headers: bearer(revoked)}, "token_revoked", 401},
		{"deny, with a valid token", call{path: "/internal/x", headers: bearer(valid)}, "forbidden", 403},
		{"deny, without one", call{path: "/internal/x"}, "forbidden", 403},
		// Authentication comes before authorization: 401, never 403.
		{"authenticated, no token", call{path: "/orders"}, "token_missing", 401},
		{"authenticated, invalid token", call{path: "/orders", headers: bearer("not-a-jwt")}, "token_malformed", 401},
		{"authenticated, revoked", call{path: "/orders", headers: bearer(revoked)}, "token_revoked", 401},
		{"roles met", call{path: "/orders/1", headers: bearer(valid)}, "allowed", 0},
		{"scope missing", call{method: "POST", path: "/orders", headers: bearer(valid)}, "insufficient_scope", 403},
		{"cel met", call{path: "/tenant", headers: map[string]string{"authorization": "Bearer " + valid, "x-region": "emea"}}, "allowed", 0},
		{"cel not met", call{path: "/tenant", headers: map[string]string{"authorization": "Bearer " + valid, "x-region": "us"}}, "forbidden", 403},
		{"unmatched", call{path: "/elsewhere", headers: bearer(valid)}, "route_unmatched", 403},
		{"traversal", call{path: "/healthz/../internal/x"}, "forbidden", 403},
		{"encoded slash", call{path: "/healthz%2F..%2Finternal"}, "path_invalid", 400},
		{"context_extensions choose a policy", call{path: "/anything", headers: bearer(valid), ext: map[string]string{"policy": "partner"}}, "audience_mismatch_or_forbidden", 403},
		{"unknown policy", call{path: "/healthz", ext: map[string]string{"policy": "nope"}}, "policy_unknown", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := e.check(t, c.call)
			want := c.reason
			if want == "audience_mismatch_or_forbidden" {
				want = "forbidden" // valid's aud is "api": the partner policy's rule wants "other"
			}
			if got := reasonOf(resp); got != want {
				t.Fatalf("reason = %q, want %q", got, want)
			}
			if got := int(resp.GetDeniedResponse().GetStatus().GetCode()); got != c.status {
				t.Errorf("HTTP status = %d, want %d", got, c.status)
			}
		})
	}

	t.Run("insufficient_scope names the scopes", func(t *testing.T) {
		resp := e.check(t, call{method: "POST", path: "/orders", headers: bearer(valid)})
		if !slices.ContainsFunc(resp.GetDeniedResponse().GetHeaders(), func(h *corev3.HeaderValueOption) bool {
			return h.GetHeader().GetKey() == "www-authenticate" && strings.Contains(h.GetHeader().GetValue(), `error="insufficient_scope"`) &&
				strings.Contains(h.GetHeader().GetValue(), `scope="orders:write"`)
		}) {
			t.Errorf("no insufficient_scope challenge naming orders:write: %v", resp.GetDeniedResponse().GetHeaders())
		}
	})
	t.Run("the rule is in the metadata", func(t *testing.T) {
		resp := e.check(t, call{path: "/orders/1", headers: bearer(valid)})
		if got := resp.GetDynamicMetadata().GetFields()["rule"].GetStringValue(); got != "orders" {
			t.Errorf("metadata rule = %q, want orders", got)
		}
	})
	t.Run("forward_token false and rule headers", func(t *testing.T) {
		resp := e.check(t, call{path: "/private", headers: map[string]string{
			"authorization": "Bearer " + valid, "cookie": "theme=dark; app.at=" + valid, "x-auth-email": "spoofed@example.com"}})
		if reasonOf(resp) != "allowed" {
			t.Fatalf("reason = %q", reasonOf(resp))
		}
		ok := resp.GetOkResponse()
		if !slices.Contains(ok.GetHeadersToRemove(), "authorization") {
			t.Errorf("authorization not removed: %v", ok.GetHeadersToRemove())
		}
		set := map[string]string{}
		for _, h := range ok.GetHeaders() {
			set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		if set["cookie"] != "theme=dark" {
			t.Errorf("cookie = %q, want the token cookie removed and theme=dark kept", set["cookie"])
		}
		if set["x-auth-email"] != "a@example.com" {
			t.Errorf("x-auth-email = %q, want the token's email", set["x-auth-email"])
		}
	})
	t.Run("rule headers are removed on every route", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/orders/1"} {
			resp := e.check(t, call{path: path, headers: map[string]string{"authorization": "Bearer " + valid, "x-auth-email": "spoofed"}})
			if !slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "x-auth-email") {
				t.Errorf("%s: x-auth-email not removed: %v", path, resp.GetOkResponse().GetHeadersToRemove())
			}
		}
		resp := e.check(t, call{path: "/healthz", headers: map[string]string{"x-auth-email": "spoofed", "x-auth-subject": "admin"}})
		if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Contains(rm, "x-auth-email") || !slices.Contains(rm, "x-auth-subject") {
			t.Errorf("anonymous: managed headers not removed: %v", rm)
		}
	})
	t.Run("shadow rules are counted, the next rule decides", func(t *testing.T) {
		before := counterValue(t, e.reg, "tokengate_policy_shadow_decisions_total", map[string]string{"rule": "orders-shadow", "decision": "forbidden"})
		resp := e.check(t, call{path: "/orders/1", headers: bearer(valid)})
		if reasonOf(resp) != "allowed" {
			t.Fatalf("reason = %q, want allowed by the rule after the shadow rule", reasonOf(resp))
		}
		if got := counterValue(t, e.reg, "tokengate_policy_shadow_decisions_total", map[string]string{"rule": "orders-shadow", "decision": "forbidden"}); got != before+1 {
			t.Errorf("shadow forbidden count = %v, want %v", got, before+1)
		}
	})
	t.Run("a swapped policy applies to the next request", func(t *testing.T) {
		e.set.Store(compilePolicy(t, e.iss.URL, map[string][]policy.RuleSpec{
			"default": {{Name: "all-public", Match: policy.MatchSpec{PathPrefix: "/"}, Access: "public"}},
		}))
		if got := reasonOf(e.check(t, call{path: "/internal/x"})); got != "anonymous" {
			t.Errorf("after the swap: reason = %q, want anonymous", got)
		}
	})
}

// TestPolicyPublicWithoutKeys: a public route needs no token, so an
// issuer whose keys never loaded does not stop it; a deny rule denies.
func TestPolicyPublicWithoutKeys(t *testing.T) {
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "docs", Match: policy.MatchSpec{PathPrefix: "/docs"}, Access: "public"},
		{Name: "internal", Match: policy.MatchSpec{PathPrefix: "/internal"}, Access: "deny"},
	}}, false)
	tok := e.token(t, nil)
	if got := reasonOf(e.check(t, call{path: "/docs", headers: bearer(tok)})); got != "anonymous" {
		t.Errorf("public: reason = %q, want anonymous", got)
	}
	if got := reasonOf(e.check(t, call{path: "/internal", headers: bearer(tok)})); got != "forbidden" {
		t.Errorf("deny: reason = %q, want forbidden", got)
	}
}

// counterValue is the value of the counter name with labels (a subset of
// its labels) in reg; 0 when there is none yet.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestPolicyNamedWithoutPolicy: a route naming a policy expects rules; with
// no route policy configured it is denied, never let through on a token
// alone.
func TestPolicyNamedWithoutPolicy(t *testing.T) {
	h := newHarness(t, nil)
	req := checkRequest(map[string]string{"authorization": "Bearer " + mint(t, h.a, jwt.MapClaims{
		"iss": h.a.URL, "aud": audience, "sub": "user-1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}, nil)})
	req.Attributes.ContextExtensions = map[string]string{extauthz.PolicyKey: "partner-api"}
	resp, err := h.client.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := reasonOf(resp); got != "policy_unknown" {
		t.Errorf("reason = %q, want policy_unknown", got)
	}
}

// TestPolicyRuleHeaderVariants: a rule's header names are managed as the
// identity headers are: a client's x_auth_email, which CGI-style upstreams
// read as x-auth-email, is refused (400 header_invalid) on every route.
func TestPolicyRuleHeaderVariants(t *testing.T) {
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "docs", Match: policy.MatchSpec{PathPrefix: "/docs"}, Access: "public"},
		{Name: "private", Match: policy.MatchSpec{PathPrefix: "/private"}, Headers: map[string]string{"x-auth-email": "email"}},
	}}, true)
	for _, path := range []string{"/docs", "/private"} {
		resp := e.check(t, call{path: path, headers: map[string]string{"x_auth_email": "admin@example.com"}})
		if got := reasonOf(resp); got != "header_invalid" {
			t.Errorf("%s with x_auth_email: reason %q, want header_invalid", path, got)
		}
	}
}

// TestPolicyDenyWinsOnLogoutRoutes: a deny rule refuses a logout route's
// request too, with or without a shadow rule before it.
func TestPolicyDenyWinsOnLogoutRoutes(t *testing.T) {
	for _, shadow := range []bool{false, true} {
		rules := []policy.RuleSpec{{Name: "logout-deny", Match: policy.MatchSpec{PathPrefix: "/logout"}, Access: "deny"}}
		if shadow {
			rules = append([]policy.RuleSpec{{Name: "logout-shadow", Match: policy.MatchSpec{PathPrefix: "/logout"}, Shadow: true}}, rules...)
		}
		e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": rules}, true)
		if got := reasonOf(e.check(t, call{path: "/logout", headers: bearer(e.token(t, nil))})); got != "forbidden" {
			t.Errorf("shadow rule %v: reason %q, want forbidden", shadow, got)
		}
	}
}

// TestPolicyPublicDropsUnusableToken: a public route lets a request on
// without identity, and without the token it could not use (invalid,
// revoked, two of them): an upstream verifying tokens itself must not take
// one tokengate refused.
func TestPolicyPublicDropsUnusableToken(t *testing.T) {
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "docs", Match: policy.MatchSpec{PathPrefix: "/docs"}, Access: "public"},
	}}, true)
	revoked := e.token(t, jwt.MapClaims{"jti": "revoked-jti"})
	if _, err := e.index.Apply([]storage.Change{{Seq: 1, Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindToken, Issuer: e.iss.URL, Key: "revoked-jti", ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	for name, headers := range map[string]map[string]string{
		"revoked":    {"authorization": "Bearer " + revoked, "cookie": "theme=dark; app.at=" + revoked},
		"malformed":  {"authorization": "Bearer not-a-jwt", "cookie": "theme=dark; app.at=not-a-jwt"},
		"two tokens": {"authorization": "Bearer " + e.token(t, nil), "cookie": "theme=dark; app.at=" + revoked},
	} {
		resp := e.check(t, call{path: "/docs", headers: headers})
		ok := resp.GetOkResponse()
		cookie := ""
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == "cookie" {
				cookie = h.GetHeader().GetValue()
			}
		}
		if reasonOf(resp) != "anonymous" || !slices.Contains(ok.GetHeadersToRemove(), "authorization") || cookie != "theme=dark" {
			t.Errorf("%s: %s, removed %v, cookie %q; want anonymous without the token", name, reasonOf(resp), ok.GetHeadersToRemove(), cookie)
		}
	}
	// Without a token there is nothing to take away.
	resp := e.check(t, call{path: "/docs", headers: map[string]string{"cookie": "theme=dark"}})
	if slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "cookie") || len(resp.GetOkResponse().GetHeaders()) != 0 {
		t.Errorf("no token: the cookies are touched: %v", resp.GetOkResponse())
	}
}

// TestPolicyRuleHeadersOnEveryRoute: logout and introspection routes, which
// are judged by their own rules, still remove the rules' header names, and
// a logout route's rule that does not forward the token keeps it from the
// IdP.
func TestPolicyRuleHeadersOnEveryRoute(t *testing.T) {
	no := false
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "logout", Match: policy.MatchSpec{PathPrefix: "/logout"}, ForwardToken: &no},
		{Name: "private", Match: policy.MatchSpec{PathPrefix: "/private"}, Headers: map[string]string{"x-auth-email": "email"}},
	}}, true)
	tok := e.token(t, nil)
	resp := e.check(t, call{path: "/logout", headers: map[string]string{"authorization": "Bearer " + tok, "x-auth-email": "spoofed"}})
	if rm := resp.GetOkResponse().GetHeadersToRemove(); reasonOf(resp) != "allowed" || !slices.Contains(rm, "x-auth-email") || !slices.Contains(rm, "authorization") {
		t.Errorf("logout route: %s, removed %v; want x-auth-email and authorization removed", reasonOf(resp), rm)
	}
	resp = e.check(t, call{method: "POST", path: "/oauth2/introspect", ext: map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection},
		headers: map[string]string{"x-auth-email": "spoofed", "content-type": "application/x-www-form-urlencoded"}})
	if rm := resp.GetOkResponse().GetHeadersToRemove(); reasonOf(resp) != "introspection_passed" || !slices.Contains(rm, "x-auth-email") {
		t.Errorf("introspection: %s, removed %v; want x-auth-email removed", reasonOf(resp), rm)
	}
}

// TestPolicyBeforeRevocationsLoad: until the revocations load, no token
// can be vouched for; a public route needs none and a deny rule refuses
// without one, so both answer; an authenticated route cannot (UNAVAILABLE).
func TestPolicyBeforeRevocationsLoad(t *testing.T) {
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "docs", Match: policy.MatchSpec{PathPrefix: "/docs"}, Access: "public"},
		{Name: "internal", Match: policy.MatchSpec{PathPrefix: "/internal"}, Access: "deny"},
		{Name: "strict", Match: policy.MatchSpec{PathPrefix: "/strict"}, Access: "public", RejectInvalid: true},
		{Name: "orders", Match: policy.MatchSpec{PathPrefix: "/orders"}},
	}}, true)
	e.unloaded.Store(true)
	tok := e.token(t, nil)
	if got := reasonOf(e.check(t, call{path: "/docs", headers: bearer(tok)})); got != "anonymous" {
		t.Errorf("public: %q, want anonymous (the token cannot be vouched for yet)", got)
	}
	if got := reasonOf(e.check(t, call{path: "/internal", headers: bearer(tok)})); got != "forbidden" {
		t.Errorf("deny: %q, want forbidden", got)
	}
	for _, c := range []call{{path: "/orders", headers: bearer(tok)}, {path: "/strict", headers: bearer(tok)}} {
		req := checkRequest(c.headers)
		req.Attributes.Request.Http.Path = c.path
		if _, err := e.client.Check(t.Context(), req); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want UNAVAILABLE", c.path, err)
		}
	}
}

// TestPolicyLogoutMustHold: on a logout route a presented token is logged
// out or the request is not let on, whatever the rule: not before the
// revocations load, not with stale revocations, not without the issuer's
// keys; and no introspection is answered before the revocations load, even
// with on_stale: allow.
func TestPolicyLogoutMustHold(t *testing.T) {
	public := map[string][]policy.RuleSpec{"default": {{Name: "all", Match: policy.MatchSpec{PathPrefix: "/"}, Access: "public"}}}
	check := func(e *policyEnv, c call) (string, error) {
		t.Helper()
		req := checkRequest(c.headers)
		h := req.Attributes.Request.Http
		h.Path, h.Body, req.Attributes.ContextExtensions = c.path, c.body, c.ext
		if c.method != "" {
			h.Method = c.method
		}
		resp, err := e.client.Check(t.Context(), req)
		return reasonOf(resp), err
	}
	for _, failOpen := range []bool{false, true} {
		e := newPolicyEnvWith(t, public, true, failOpen)
		tok := e.token(t, nil)
		e.unloaded.Store(true)
		if reason, err := check(e, call{path: "/logout", headers: bearer(tok)}); status.Code(err) != codes.Unavailable {
			t.Errorf("failOpen %v, not loaded, logout: %q %v, want UNAVAILABLE", failOpen, reason, err)
		}
		if reason, err := check(e, call{method: "POST", path: "/oauth2/introspect", body: "token=" + tok,
			ext:     map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection},
			headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}}); status.Code(err) != codes.Unavailable {
			t.Errorf("failOpen %v, not loaded, introspection: %q %v, want UNAVAILABLE", failOpen, reason, err)
		}
		e.unloaded.Store(false)
		e.stale.Store(true)
		if reason, err := check(e, call{path: "/logout", headers: bearer(tok)}); !failOpen && (err != nil || reason != "revocations_stale") {
			t.Errorf("stale, logout: %q %v, want revocations_stale", reason, err)
		}
		if e.logouts.Load() != 0 && !failOpen {
			t.Errorf("a logout was written while nothing could be vouched for")
		}
	}
	e := newPolicyEnv(t, public, false) // the issuer's keys never load
	if reason, err := check(e, call{path: "/logout", headers: bearer(e.token(t, nil))}); status.Code(err) != codes.Unavailable {
		t.Errorf("keys not loaded, logout: %q %v, want UNAVAILABLE", reason, err)
	}
}

// TestPolicyLogoutRuleHeadersNeedTheRule: a logout route logs out any
// valid token, but sets a rule's headers only for a token the rule allows.
func TestPolicyLogoutRuleHeadersNeedTheRule(t *testing.T) {
	e := newPolicyEnv(t, map[string][]policy.RuleSpec{"default": {
		{Name: "logout", Match: policy.MatchSpec{PathPrefix: "/logout"}, Headers: map[string]string{"x-auth-email": "email"},
			Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin"}}}},
	}}, true)
	resp := e.check(t, call{path: "/logout", headers: bearer(e.token(t, jwt.MapClaims{"email": "a@example.com"}))})
	ok := resp.GetOkResponse()
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "x-auth-email" {
			t.Errorf("x-auth-email set for a token the rule refuses")
		}
	}
	if reasonOf(resp) != "allowed" || !slices.Contains(ok.GetHeadersToRemove(), "x-auth-email") {
		t.Errorf("%s, removed %v; want allowed (logged out) with x-auth-email removed", reasonOf(resp), ok.GetHeadersToRemove())
	}
}
