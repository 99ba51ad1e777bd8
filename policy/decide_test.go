package policy_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/policy"
)

func TestDecide(t *testing.T) {
	s := compile(t, policy.Options{
		Unmatched: policy.UnmatchedDeny,
		Issuers:   []policy.IssuerInfo{{Name: "fusionauth"}, {Name: "keycloak", RolesClaim: "realm_access.roles"}},
		Policies: map[string][]policy.RuleSpec{"default": {
			{Name: "deny", Match: policy.MatchSpec{PathPrefix: "/deny"}, Access: "deny"},
			{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
			{Name: "authn", Match: policy.MatchSpec{PathPrefix: "/authn"}},
			{Name: "issuers", Match: policy.MatchSpec{PathPrefix: "/issuers"}, Require: policy.Require{Issuers: []string{"keycloak"}}},
			{Name: "audiences", Match: policy.MatchSpec{PathPrefix: "/audiences"}, Require: policy.Require{Audiences: []string{"api", "web"}}},
			{Name: "scopes-all", Match: policy.MatchSpec{PathPrefix: "/scopes-all"}, Require: policy.Require{Scopes: policy.AnyAll{AllOf: []string{"orders:read", "orders:write"}}}},
			{Name: "scopes-any", Match: policy.MatchSpec{PathPrefix: "/scopes-any"}, Require: policy.Require{Scopes: policy.AnyAll{AnyOf: []string{"a", "b"}}}},
			{Name: "roles-all", Match: policy.MatchSpec{PathPrefix: "/roles-all"}, Require: policy.Require{Roles: policy.AnyAll{AllOf: []string{"admin", "clerk"}}}},
			{Name: "roles-any", Match: policy.MatchSpec{PathPrefix: "/roles-any"}, Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin", "clerk"}}}},
			{Name: "roles-both", Match: policy.MatchSpec{PathPrefix: "/roles-both"}, Require: policy.Require{Roles: policy.AnyAll{AllOf: []string{"user"}, AnyOf: []string{"admin", "clerk"}}}},
			{Name: "order", Match: policy.MatchSpec{PathPrefix: "/order"}, Require: policy.Require{
				Issuers: []string{"fusionauth"}, Audiences: []string{"api"},
				Scopes: policy.AnyAll{AllOf: []string{"s"}}, Roles: policy.AnyAll{AnyOf: []string{"r"}},
				When: `claims.tid == "acme"`,
			}},
		}},
	})
	full := &policy.Subject{IssuerName: "fusionauth", Audiences: []string{"api"}, Scopes: []string{"s"}, Roles: []string{"r"}, Claims: map[string]any{"tid": "acme"}}
	cases := map[string]struct {
		path string
		sub  *policy.Subject
		want policy.Decision
	}{
		"deny with token":        {"/deny", full, policy.Decision{Outcome: policy.OutcomeForbidden}},
		"deny without token":     {"/deny", nil, policy.Decision{Outcome: policy.OutcomeForbidden}},
		"unmatched":              {"/nothing", full, policy.Decision{Outcome: policy.OutcomeUnmatched}},
		"public without token":   {"/public", nil, policy.Decision{Outcome: policy.OutcomeAllow}},
		"public with token":      {"/public", full, policy.Decision{Outcome: policy.OutcomeAllow}},
		"authn without token":    {"/authn", nil, policy.Decision{Outcome: policy.OutcomeUnauthenticated}},
		"authn with token":       {"/authn", &policy.Subject{}, policy.Decision{Outcome: policy.OutcomeAllow}},
		"requirement no token":   {"/issuers", nil, policy.Decision{Outcome: policy.OutcomeUnauthenticated}},
		"issuer met":             {"/issuers", &policy.Subject{IssuerName: "keycloak"}, policy.Decision{}},
		"issuer not met":         {"/issuers", &policy.Subject{IssuerName: "fusionauth"}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "issuers"}},
		"audience met":           {"/audiences", &policy.Subject{Audiences: []string{"other", "web"}}, policy.Decision{}},
		"audience not met":       {"/audiences", &policy.Subject{Audiences: []string{"other"}}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "audiences"}},
		"audience none":          {"/audiences", &policy.Subject{}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "audiences"}},
		"scopes all met":         {"/scopes-all", &policy.Subject{Scopes: []string{"orders:write", "x", "orders:read"}}, policy.Decision{}},
		"scopes all one missing": {"/scopes-all", &policy.Subject{Scopes: []string{"orders:read"}}, policy.Decision{Outcome: policy.OutcomeInsufficientScope, Failed: "scopes", Scope: "orders:read orders:write"}},
		"scopes any met":         {"/scopes-any", &policy.Subject{Scopes: []string{"b"}}, policy.Decision{}},
		"scopes any not met":     {"/scopes-any", &policy.Subject{Scopes: []string{"c"}}, policy.Decision{Outcome: policy.OutcomeInsufficientScope, Failed: "scopes", Scope: "a b"}},
		"roles all met":          {"/roles-all", &policy.Subject{Roles: []string{"clerk", "admin"}}, policy.Decision{}},
		"roles all not met":      {"/roles-all", &policy.Subject{Roles: []string{"clerk"}}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		"roles any met":          {"/roles-any", &policy.Subject{Roles: []string{"clerk"}}, policy.Decision{}},
		"roles any not met":      {"/roles-any", &policy.Subject{Roles: []string{"user"}}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		"roles both met":         {"/roles-both", &policy.Subject{Roles: []string{"user", "admin"}}, policy.Decision{}},
		"roles both any missing": {"/roles-both", &policy.Subject{Roles: []string{"user"}}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		"roles both all missing": {"/roles-both", &policy.Subject{Roles: []string{"admin"}}, policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		"all met":                {"/order", full, policy.Decision{}},
		"order: issuers first": {"/order", &policy.Subject{IssuerName: "keycloak"},
			policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "issuers"}},
		"order: then audiences": {"/order", &policy.Subject{IssuerName: "fusionauth"},
			policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "audiences"}},
		"order: then scopes": {"/order", &policy.Subject{IssuerName: "fusionauth", Audiences: []string{"api"}},
			policy.Decision{Outcome: policy.OutcomeInsufficientScope, Failed: "scopes", Scope: "s"}},
		"order: then roles": {"/order", &policy.Subject{IssuerName: "fusionauth", Audiences: []string{"api"}, Scopes: []string{"s"}},
			policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		"order: then when": {"/order", &policy.Subject{IssuerName: "fusionauth", Audiences: []string{"api"}, Scopes: []string{"s"}, Roles: []string{"r"}, Claims: map[string]any{"tid": "other"}},
			policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "when"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req := &policy.Request{Path: tc.path, Method: "GET"}
			rt := s.Route("", req)
			got := rt.Decide(tc.sub, req)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decide(%s) (-want +got):\n%s", tc.path, diff)
			}
			_, _, traced := s.Trace("", req, tc.sub)
			if diff := cmp.Diff(tc.want, traced); diff != "" {
				t.Errorf("Trace(%s) decision (-want +got):\n%s", tc.path, diff)
			}
		})
	}
}

// claimsOf parses a token payload as the verifier does (JSON numbers are
// float64).
func claimsOf(t *testing.T, payload string) map[string]any {
	t.Helper()
	var claims map[string]any
	if err := json.Unmarshal([]byte(payload), &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestSubjects(t *testing.T) {
	subjects := policy.NewSubjects([]policy.IssuerInfo{
		{Name: "fusionauth"},
		{Name: "keycloak", RolesClaim: "realm_access.roles"},
		{Name: "keycloak-client", RolesClaim: "resource_access.orders-api.roles"},
	}, false)
	cases := map[string]struct {
		issuer, payload string
		scopes, roles   []string
	}{
		"fusionauth roles": {"fusionauth", `{"roles":["admin","clerk"],"scope":"openid offline_access"}`,
			[]string{"openid", "offline_access"}, []string{"admin", "clerk"}},
		"keycloak realm roles": {"keycloak", `{"realm_access":{"roles":["offline_access","admin"]},"roles":["ignored"],"scope":"openid  email"}`,
			[]string{"openid", "email"}, []string{"offline_access", "admin"}},
		"keycloak client roles": {"keycloak-client", `{"resource_access":{"orders-api":{"roles":["clerk"]},"other":{"roles":["admin"]}}}`,
			nil, []string{"clerk"}},
		"scp array":             {"fusionauth", `{"scp":["orders:read","orders:write"]}`, []string{"orders:read", "orders:write"}, nil},
		"scp string":            {"fusionauth", `{"scp":"a b"}`, []string{"a", "b"}, nil},
		"scope and scp":         {"fusionauth", `{"scope":"a","scp":["b"]}`, []string{"a", "b"}, nil},
		"single role string":    {"fusionauth", `{"roles":"admin"}`, nil, []string{"admin"}},
		"non-string roles":      {"fusionauth", `{"roles":["admin",3,null,{"x":1},""],"scp":[1,"a"]}`, []string{"a"}, []string{"admin"}},
		"roles path not object": {"keycloak", `{"realm_access":["admin"]}`, nil, nil},
		"no roles":              {"keycloak", `{}`, nil, nil},
		"unknown issuer":        {"other", `{"roles":["r"],"realm_access":{"roles":["x"]}}`, nil, []string{"r"}},
		"scope not a string":    {"fusionauth", `{"scope":["a"]}`, nil, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			claims := claimsOf(t, tc.payload)
			sub := subjects.Make(tc.issuer, []string{"aud"}, claims)
			want := &policy.Subject{IssuerName: tc.issuer, Audiences: []string{"aud"}, Scopes: tc.scopes, Roles: tc.roles}
			if diff := cmp.Diff(want, sub); diff != "" {
				t.Errorf("Make (-want +got):\n%s", diff)
			}
		})
	}
	keep := policy.NewSubjects(nil, true).Make("x", nil, map[string]any{"a": "b"})
	if keep.Claims["a"] != "b" {
		t.Errorf("keepClaims: Claims = %v", keep.Claims)
	}
}

func TestWhen(t *testing.T) {
	s := compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "tenant", Match: policy.MatchSpec{PathPrefix: "/tenant"}, Require: policy.Require{When: `claims.tid == "acme" && "emea" in claims.regions`}}, {Name: "level", Match: policy.MatchSpec{PathPrefix: "/level"}, Require: policy.Require{When: `claims.level > 2 && claims.level == 3`}},
		{Name: "request", Match: policy.MatchSpec{PathPrefix: "/request"}, Require: policy.Require{When: `request.method == "POST" && request.host == "api.example.com" && request.path == "/request/x/"`}},
		{Name: "headers", Match: policy.MatchSpec{PathPrefix: "/headers"}, Require: policy.Require{When: `"x-partner" in request.headers && request.headers["x-partner"] == claims.partner`}},
		{Name: "nested", Match: policy.MatchSpec{PathPrefix: "/nested"}, Require: policy.Require{When: `claims.org.id == "o1"`}},
		{Name: "cost", Match: policy.MatchSpec{PathPrefix: "/cost"}, Require: policy.Require{When: `claims.items.all(a, claims.items.all(b, claims.items.all(c, a + b + c >= 0)))`}},
		{Name: "exists", Match: policy.MatchSpec{PathPrefix: "/exists"}, Require: policy.Require{When: `claims.groups.exists(g, g.startsWith("ops-"))`}},
	}}})
	items := make([]any, 50)
	for i := range items {
		items[i] = float64(i)
	}
	cases := map[string]struct {
		host, method, path string
		headers            map[string]string
		claims             map[string]any
		allow              bool
		err                string // in Decision.Err
	}{
		"claims met":          {path: "/tenant", claims: map[string]any{"tid": "acme", "regions": []any{"us", "emea"}}, allow: true},
		"claims not met":      {path: "/tenant", claims: map[string]any{"tid": "acme", "regions": []any{"us"}}},
		"missing claim":       {path: "/tenant", claims: map[string]any{"regions": []any{"emea"}}, err: "no such key"},
		"no claims kept":      {path: "/tenant", err: "no such key"},
		"wrong claim type":    {path: "/tenant", claims: map[string]any{"tid": "acme", "regions": "emea"}, err: "when"},
		"json numbers":        {path: "/level", claims: map[string]any{"level": float64(3)}, allow: true},
		"request":             {host: "API.example.com:443", method: "POST", path: "/request//x/?q=1", allow: true},
		"request other":       {host: "api.example.com", method: "GET", path: "/request/x/"},
		"headers":             {path: "/headers", headers: map[string]string{"x-partner": "p1"}, claims: map[string]any{"partner": "p1"}, allow: true},
		"headers mismatch":    {path: "/headers", headers: map[string]string{"x-partner": "p2"}, claims: map[string]any{"partner": "p1"}},
		"headers absent":      {path: "/headers", claims: map[string]any{"partner": "p1"}},
		"nested claim":        {path: "/nested", claims: map[string]any{"org": map[string]any{"id": "o1"}}, allow: true},
		"nested claim absent": {path: "/nested", claims: map[string]any{"org": "o1"}, err: "when"},
		"cost limit":          {path: "/cost", claims: map[string]any{"items": items}, err: "cost limit"},
		"cost within limit":   {path: "/cost", claims: map[string]any{"items": items[:5]}, allow: true},
		"exists":              {path: "/exists", claims: map[string]any{"groups": []any{"dev", "ops-eu"}}, allow: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req := &policy.Request{Host: tc.host, Path: tc.path, Method: method, Headers: tc.headers}
			rt := s.Route("", req)
			d := rt.Decide(&policy.Subject{Claims: tc.claims}, req)
			if tc.allow {
				if d.Outcome != policy.OutcomeAllow {
					t.Fatalf("Decide = %+v, want allow", d)
				}
				return
			}
			if d.Outcome != policy.OutcomeForbidden || d.Failed != "when" {
				t.Fatalf("Decide = %+v, want forbidden by when", d)
			}
			switch {
			case tc.err == "" && d.Err != nil:
				t.Errorf("Err = %v, want none", d.Err)
			case tc.err != "" && (d.Err == nil || !strings.Contains(d.Err.Error(), tc.err)):
				t.Errorf("Err = %v, want one containing %q", d.Err, tc.err)
			}
		})
	}
}

func TestRuleHeaders(t *testing.T) {
	s := compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "h", Match: policy.MatchSpec{PathPrefix: "/"}, ForwardToken: ptr(false), Headers: map[string]string{
			"X-Email": "email", "x-groups": "groups", "x-admin": "admin", "x-level": "level",
			"x-missing": "missing", "x-null": "null", "x-empty": "empty", "x-evil": "evil", "x-org": "org",
		}},
		{Name: "plain", Match: policy.MatchSpec{PathPrefix: "/"}},
	}}})
	rt := s.Route("", &policy.Request{Path: "/", Method: "GET"})
	r := rt.Rule()
	if !r.HasHeaders() || r.ForwardToken() || r.Access() != policy.AccessAuthenticated || r.RejectInvalid() || r.Shadow() {
		t.Errorf("rule h: HasHeaders %v ForwardToken %v Access %v", r.HasHeaders(), r.ForwardToken(), r.Access())
	}
	got := r.Headers(claimsOf(t, `{"email":"a@example.com","groups":["a","b"],"admin":true,"level":3,
		"null":null,"empty":"","evil":"x\r\ny: z","org":{"id":"o1"}}`))
	want := []policy.Header{
		{Name: "x-admin", Value: "true"},
		{Name: "x-email", Value: "a@example.com"},
		{Name: "x-groups", Value: "a,b"},
		{Name: "x-level", Value: "3"},
		{Name: "x-org", Value: `{"id":"o1"}`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Headers (-want +got):\n%s", diff)
	}
	if r.Headers(nil) != nil && len(r.Headers(nil)) != 0 {
		t.Errorf("Headers(nil) = %v, want none", r.Headers(nil))
	}
}

// TestSetConcurrentUse: a Set is shared by every request (run with -race).
func TestSetConcurrentUse(t *testing.T) {
	s := bigPolicy(t)
	sub := &policy.Subject{Scopes: []string{"svc"}, Claims: map[string]any{"tid": "acme", "regions": []any{"emea"}}}
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				req := &policy.Request{Host: "api.example.com", Method: "GET", Path: fmt.Sprintf("/cel%d/x", (g+i)%10)}
				rt := s.Route("", req)
				if d := rt.Decide(sub, req); d.Outcome != policy.OutcomeAllow {
					t.Errorf("%s: %+v", req.Path, d)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// TestWhenReadsEveryPathReading: a condition on request.path holds only if
// it holds for every reading of a path with ';' parameters: Tomcat serves
// /x/..;/admin as /admin, so a rule keeping /admin for admins must not
// pass it as written.
func TestWhenReadsEveryPathReading(t *testing.T) {
	set, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "all", Match: policy.MatchSpec{PathPrefix: "/"},
			Require: policy.Require{When: `!request.path.startsWith("/admin") || "admin" in claims.roles`}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	sub := &policy.Subject{Claims: map[string]any{"roles": []any{"viewer"}}}
	for path, want := range map[string]policy.Outcome{
		"/x/..;/admin":   policy.OutcomeForbidden,
		"/admin":         policy.OutcomeForbidden,
		"/x;v=1/orders":  policy.OutcomeAllow,
		"/x/..;/orders":  policy.OutcomeAllow,
		"/public;p=/a/b": policy.OutcomeAllow,
	} {
		req := &policy.Request{Path: path, Method: "GET"}
		rt := set.Route("", req)
		if rt.Status != policy.RouteOK {
			t.Errorf("%s: status %v", path, rt.Status)
			continue
		}
		if got := rt.Decide(sub, req).Outcome; got != want {
			t.Errorf("%s: outcome %v, want %v", path, got, want)
		}
	}
}
