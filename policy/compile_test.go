package policy_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/policy"
)

// fieldErrors returns the FieldErrors joined in err, by path.
func fieldErrors(t *testing.T, err error) map[string]string {
	t.Helper()
	out := map[string]string{}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("error %v is not joined", err)
	}
	for _, e := range joined.Unwrap() {
		var fe *policy.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		out[fe.Path] = fe.Err.Error()
	}
	return out
}

func TestCompileErrors(t *testing.T) {
	issuers := []policy.IssuerInfo{{Name: "fusionauth", Iss: "https://auth.example.com"}}
	cases := map[string]struct {
		rules []policy.RuleSpec
		path  string // the FieldError's path
		want  string // in its message
	}{
		"empty name":         {[]policy.RuleSpec{{Access: "public"}}, "policies.default[0].name", "required"},
		"duplicate name":     {[]policy.RuleSpec{{Name: "a", Access: "public"}, {Name: "a", Access: "deny"}}, "policies.default[1].name", "already"},
		"path and prefix":    {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/a", PathPrefix: "/a"}}}, "policies.default[0].match", "one of path"},
		"prefix and regex":   {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{PathRegex: "/a", PathPrefix: "/a"}}}, "policies.default[0].match", "one of path"},
		"path relative":      {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "a"}}}, "policies.default[0].match.path", "start with /"},
		"prefix relative":    {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{PathPrefix: "a/"}}}, "policies.default[0].match.path_prefix", "start with /"},
		"path not normal":    {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/a//b"}}}, "policies.default[0].match.path", `write "/a/b"`},
		"prefix dots":        {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{PathPrefix: "/a/../b"}}}, "policies.default[0].match.path_prefix", "not normalised"},
		"path encoded":       {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/%7euser"}}}, "policies.default[0].match.path", `write "/~user"`},
		"path escape case":   {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/a%3fb"}}}, "policies.default[0].match.path", `write "/a%3Fb"`},
		"path query":         {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/a?b"}}}, "policies.default[0].match.path", "query"},
		"path invalid":       {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Path: "/a%2Fb"}}}, "policies.default[0].match.path", "path invalid"},
		"bad regex":          {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{PathRegex: "/a/(["}}}, "policies.default[0].match.path_regex", "missing closing"},
		"unknown access":     {[]policy.RuleSpec{{Name: "a", Access: "allow"}}, "policies.default[0].access", `"allow" is not public`},
		"empty rule":         {[]policy.RuleSpec{{Name: "a"}}, "policies.default[0].match", "empty rule"},
		"require on public":  {[]policy.RuleSpec{{Name: "a", Access: "public", Require: policy.Require{Issuers: []string{"fusionauth"}}}}, "policies.default[0].require", "public"},
		"require on deny":    {[]policy.RuleSpec{{Name: "a", Access: "deny", Require: policy.Require{When: "true"}}}, "policies.default[0].require", "deny"},
		"reject on authn":    {[]policy.RuleSpec{{Name: "a", Access: "authenticated", RejectInvalid: true}}, "policies.default[0].reject_invalid", "public"},
		"unknown issuer":     {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Issuers: []string{"fusionauth", "keycloak"}}}}, "policies.default[0].require.issuers[1]", `"keycloak"`},
		"empty issuer":       {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Issuers: []string{""}}}}, "policies.default[0].require.issuers[0]", "empty"},
		"empty audience":     {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Audiences: []string{"x", ""}}}}, "policies.default[0].require.audiences[1]", "empty"},
		"empty scope":        {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Scopes: policy.AnyAll{AllOf: []string{""}}}}}, "policies.default[0].require.scopes.all_of[0]", "empty"},
		"scope with space":   {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Scopes: policy.AnyAll{AnyOf: []string{"a b"}}}}}, "policies.default[0].require.scopes.any_of[0]", "scope token"},
		"empty role":         {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{""}}}}}, "policies.default[0].require.roles.any_of[0]", "empty"},
		"empty role all":     {[]policy.RuleSpec{{Name: "a", Require: policy.Require{Roles: policy.AnyAll{AllOf: []string{"x", ""}}}}}, "policies.default[0].require.roles.all_of[1]", "empty"},
		"empty method":       {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Methods: []string{""}}}}, "policies.default[0].match.methods[0]", "not a method"},
		"bad method":         {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Methods: []string{"GET", "PO ST"}}}}, "policies.default[0].match.methods[1]", "token"},
		"host with port":     {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "a.example.com:443"}}}, "policies.default[0].match.host", "port"},
		"host invalid":       {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "a..example.com"}}}, "policies.default[0].match.host", "not a host"},
		"host slash":         {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "a/b"}}}, "policies.default[0].match.host", "not a host"},
		"wildcard with port": {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "*.example.com:443"}}}, "policies.default[0].match.host", "port"},
		"wildcard one label": {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "*.com"}}}, "policies.default[0].match.host", "two labels"},
		"wildcard inside":    {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "a.*.example.com"}}}, "policies.default[0].match.host", "not a host"},
		"wildcard bare":      {[]policy.RuleSpec{{Name: "a", Match: policy.MatchSpec{Host: "*"}}}, "policies.default[0].match.host", "not a host"},
		"header invalid":     {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"x y": "c"}}}, "policies.default[0].headers.x y", "not a valid header"},
		"header reserved":    {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"Authorization": "c"}}}, "policies.default[0].headers.Authorization", "reserved"},
		"header identity":    {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"x-auth-subject": "c"}}}, "policies.default[0].headers.x-auth-subject", "identity header"},
		"header global":      {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"X-Tenant": "tid"}}}, "policies.default[0].headers.X-Tenant", "claim_headers"},
		"header twice":       {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"X-A": "c", "x-a": "d"}}}, "policies.default[0].headers.x-a", "twice"},
		"header empty claim": {[]policy.RuleSpec{{Name: "a", Access: "public", Headers: map[string]string{"x-a": ""}}}, "policies.default[0].headers.x-a", "empty claim"},
		"cel syntax":         {[]policy.RuleSpec{{Name: "tenant", Require: policy.Require{When: `claims.tid == "a" &&`}}}, "policies.default[0].require.when", `rule "tenant": cel: 1:`},
		"cel undeclared":     {[]policy.RuleSpec{{Name: "tenant", Require: policy.Require{When: `claims.tid == "a" && user.x`}}}, "policies.default[0].require.when", "1:22: undeclared reference to 'user'"},
		"cel not bool":       {[]policy.RuleSpec{{Name: "a", Require: policy.Require{When: `1 + 2`}}}, "policies.default[0].require.when", "int, not a bool"},
		"cel dyn":            {[]policy.RuleSpec{{Name: "a", Require: policy.Require{When: `claims.admin`}}}, "policies.default[0].require.when", "claims.admin == true"},
		"cel dyn request":    {[]policy.RuleSpec{{Name: "a", Require: policy.Require{When: `request.headers["x"]`}}}, "policies.default[0].require.when", "dyn, not bool"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := policy.Compile(policy.Options{
				Issuers:      issuers,
				ClaimHeaders: map[string]string{"x-tenant": "tid"},
				Policies:     map[string][]policy.RuleSpec{"default": tc.rules},
			})
			if err == nil {
				t.Fatal("Compile succeeded, want an error")
			}
			got := fieldErrors(t, err)
			msg, ok := got[tc.path]
			if !ok {
				t.Fatalf("no error at %s; got %v", tc.path, got)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("%s: %q, want it to contain %q", tc.path, msg, tc.want)
			}
			if len(got) != 1 {
				t.Errorf("%d errors, want 1: %v", len(got), got)
			}
		})
	}
}

// TestCompileReportsEveryProblem: one Compile names every problem of
// every policy, each by its own path.
func TestCompileReportsEveryProblem(t *testing.T) {
	_, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{
		"default": {
			{Name: "a", Access: "nope"},
			{Name: "b", Match: policy.MatchSpec{PathRegex: "("}},
			{Name: "c", Require: policy.Require{When: "claims.x"}},
		},
		"Bad Name": {{Name: "x", Access: "public"}},
		"other":    {{Name: "y", Match: policy.MatchSpec{Path: "/a", PathRegex: "/b"}}},
	}})
	var paths []string
	for p := range fieldErrors(t, err) {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	want := []string{
		"policies.Bad Name",
		"policies.default[0].access",
		"policies.default[1].match.path_regex",
		"policies.default[2].require.when",
		"policies.other[0].match",
	}
	if !slices.Equal(paths, want) {
		t.Errorf("error paths = %q, want %q", paths, want)
	}
}

func TestCompileValid(t *testing.T) {
	s := compile(t, policy.Options{
		Issuers:      []policy.IssuerInfo{{Name: "keycloak", RolesClaim: "realm_access.roles"}},
		ClaimHeaders: map[string]string{"x-tenant": "tid"},
		Policies: map[string][]policy.RuleSpec{
			"default": {
				{Name: "catch-all", Access: "public"}, // an empty match with an access: every request
				{Name: "methods", Match: policy.MatchSpec{Methods: []string{"get", "M-SEARCH"}}, Access: "deny"},
				{Name: "wild", Match: policy.MatchSpec{Host: "*.Example.com", Path: "/", PathPrefix: ""}, Access: "public", RejectInvalid: true},
				{Name: "headers", Match: policy.MatchSpec{PathPrefix: "/h"}, Headers: map[string]string{"X-Email": "email", "x-groups": "groups"}},
				{Name: "when", Match: policy.MatchSpec{PathPrefix: "/w"}, Require: policy.Require{Issuers: []string{"keycloak"}, When: `claims.tid == "acme"`}},
			},
			"partner.api-v2_x": {{Name: "h", Match: policy.MatchSpec{PathPrefix: "/"}, Require: policy.Require{When: `request.headers["x-partner"] == "p"`}}},
		},
	})
	if !s.NeedsClaims() || !s.NeedsHeaders() {
		t.Errorf("NeedsClaims %v, NeedsHeaders %v; want both", s.NeedsClaims(), s.NeedsHeaders())
	}
	if got, want := s.HeaderNames(), []string{"x-email", "x-groups"}; !slices.Equal(got, want) {
		t.Errorf("HeaderNames() = %q, want %q", got, want)
	}
	s = compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "when", Match: policy.MatchSpec{PathPrefix: "/w"}, Require: policy.Require{When: `request.method == "GET"`}},
	}}})
	if !s.NeedsClaims() || s.NeedsHeaders() {
		t.Errorf("NeedsClaims %v, NeedsHeaders %v; want true, false", s.NeedsClaims(), s.NeedsHeaders())
	}
	s = compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "p", Match: policy.MatchSpec{PathPrefix: "/w"}, Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"x"}}}},
	}}})
	if s.NeedsClaims() || s.NeedsHeaders() || len(s.HeaderNames()) != 0 {
		t.Errorf("NeedsClaims %v, NeedsHeaders %v, HeaderNames %v; want none", s.NeedsClaims(), s.NeedsHeaders(), s.HeaderNames())
	}
}

// TestCompileRuleHeaderNames: a rule's header names are managed on every
// route, so none may be a header the proxy or the upstream reads as
// something else, nor spelled with '_' (CGI-style upstreams read x_a and
// x-a as one header, so a name with '_' is a variant waiting to happen).
func TestCompileRuleHeaderNames(t *testing.T) {
	for _, name := range []string{"x_auth_subject", "x_tenant", "content-type", "x-request-id", "x-forwarded-for",
		"forwarded", "proxy-authorization", "x-envoy-original-path", "keep-alive", "X-Auth-Subject"} {
		_, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
			{Name: "r", Match: policy.MatchSpec{PathPrefix: "/r"}, Headers: map[string]string{name: "email"}},
		}}})
		if err == nil {
			t.Errorf("rule header %q: compiled, want refused", name)
		}
	}
	if _, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "r", Match: policy.MatchSpec{PathPrefix: "/r"}, Headers: map[string]string{"x-auth-email": "email"}},
	}}}); err != nil {
		t.Errorf("x-auth-email: %v", err)
	}
}
