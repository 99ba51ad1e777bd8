package policy_test

import (
	"fmt"
	"testing"

	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/policy/policytest"
)

// bigPolicy is the 1,000-rule policy: mostly prefixes, some exact
// paths, 20 regexps (5 without a literal prefix, tried on every request
// they come before), 10 CEL rules, several hosts and wildcards.
func bigPolicy(tb testing.TB) *policy.Set {
	tb.Helper()
	hosts := []string{"", "", "api.example.com", "admin.example.com", "*.internal.example.com", "*.example.org", "shop.example.net"}
	var rules []policy.RuleSpec
	add := func(r policy.RuleSpec) {
		r.Name = fmt.Sprintf("rule-%d", len(rules))
		rules = append(rules, r)
	}
	for i := range 5 {
		add(policy.RuleSpec{Match: policy.MatchSpec{PathRegex: fmt.Sprintf(`(?i).*\.debug%d`, i)}, Access: "deny"})
	}
	for i := range 15 {
		add(policy.RuleSpec{Match: policy.MatchSpec{Host: hosts[i%len(hosts)], PathRegex: fmt.Sprintf(`/reports/%d/[0-9]+(/.*)?`, i)}, Access: "public"})
	}
	for i := range 10 {
		add(policy.RuleSpec{Match: policy.MatchSpec{PathPrefix: fmt.Sprintf("/cel%d", i)}, Require: policy.Require{
			When: fmt.Sprintf(`claims.tid == "acme" && "emea" in claims.regions && request.method != "DELETE" && %d >= 0`, i),
		}})
	}
	for i := range 60 {
		add(policy.RuleSpec{Match: policy.MatchSpec{Host: hosts[i%len(hosts)], Path: fmt.Sprintf("/static/page%d", i)}, Access: "public"})
	}
	for i := 0; len(rules) < 1000; i++ {
		m := policy.MatchSpec{Host: hosts[i%len(hosts)], PathPrefix: fmt.Sprintf("/svc%d/v%d", i/3, i%3)}
		if i%4 == 0 {
			m.Methods = []string{"POST", "PUT"}
		}
		add(policy.RuleSpec{Match: m, Require: policy.Require{Scopes: policy.AnyAll{AnyOf: []string{"svc"}}}})
	}
	return compile(tb, policy.Options{Unmatched: policy.UnmatchedDeny, Policies: map[string][]policy.RuleSpec{"default": rules}})
}

var benchRequests = map[string]*policy.Request{
	// The last prefix rules: a linear scan would try ~1,000 rules first.
	"prefix": {Host: "api.example.com:443", Method: "GET", Path: "/svc301/v2/items/42?expand=1"},
	"exact":  {Host: "api.example.com", Method: "GET", Path: "/static/page58"},
	"regex":  {Host: "api.example.com", Method: "GET", Path: "/reports/9/2026/summary"},
}

func BenchmarkRoute(b *testing.B) {
	s := bigPolicy(b)
	for _, name := range []string{"prefix", "exact", "regex"} {
		req := benchRequests[name]
		rt := s.Route("", req)
		if rt.Rule() == nil {
			b.Fatalf("%s: no rule matched %s", name, req.Path)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rt = s.Route("", req)
			}
		})
	}
	req := &policy.Request{Host: "api.example.com", Method: "GET", Path: "/cel7/x"}
	sub := &policy.Subject{Claims: map[string]any{"tid": "acme", "regions": []any{"us", "emea"}}}
	if rt := s.Route("", req); rt.Rule() == nil || rt.Decide(sub, req).Outcome != policy.OutcomeAllow {
		b.Fatalf("cel: not allowed")
	}
	b.Run("cel+decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rt := s.Route("", req)
			rt.Decide(sub, req)
		}
	})
	b.Run("prefix+decide", func(b *testing.B) {
		req := benchRequests["prefix"]
		sub := &policy.Subject{Scopes: []string{"openid", "svc"}}
		b.ReportAllocs()
		for b.Loop() {
			rt := s.Route("", req)
			rt.Decide(sub, req)
		}
	})
}

// checkPolicy is the shape of extauthz's BenchmarkCheckPolicy policy:
// 1,000 rules, mostly prefixes /svc-N requiring a role, exact
// /svc-N/health paths, 20 regexps, 10 CEL rules, and prefixes under a
// wildcard host. Its Route and Decide are the policy's share of that
// Check, measured here by themselves.
func checkPolicy(tb testing.TB) *policy.Set {
	tb.Helper()
	return compile(tb, policy.Options{
		Issuers:  []policy.IssuerInfo{{Name: "a", Iss: "https://issuer.example"}},
		Policies: map[string][]policy.RuleSpec{"default": policytest.ThousandRules()},
	})
}

// BenchmarkRouteCheckPolicy is Route and Decide on extauthz's
// BenchmarkCheckPolicy request: a prefix rule near the end, requiring a
// role.
func BenchmarkRouteCheckPolicy(b *testing.B) {
	s := checkPolicy(b)
	req := &policy.Request{Host: "api.example.com", Method: "GET", Path: "/svc-990/items/42?x=1"}
	sub := &policy.Subject{IssuerName: "a", Roles: []string{"admin"}}
	if rt := s.Route("", req); rt.Rule() == nil || rt.Decide(sub, req).Outcome != policy.OutcomeAllow {
		b.Fatalf("%s: not allowed by a rule", req.Path)
	}
	b.ReportAllocs()
	for b.Loop() {
		rt := s.Route("", req)
		rt.Decide(sub, req)
	}
}

func BenchmarkCompile(b *testing.B) {
	for b.Loop() {
		bigPolicy(b)
	}
}

func BenchmarkNormalizePath(b *testing.B) {
	for _, p := range []string{"/svc300/v0/items/42?expand=1", "/a//b/./c/../d%7e"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				policy.NormalizePath(p)
			}
		})
	}
}

// TestRouteAllocs: choosing a prefix or exact rule allocates nothing (an
// allocation count, not a timing), with a host in upper case and a port
// too.
func TestRouteAllocs(t *testing.T) {
	s := bigPolicy(t)
	reqs := []*policy.Request{
		benchRequests["prefix"],
		benchRequests["exact"],
		{Host: "API.Example.com:8443", Method: "post", Path: "/svc5/v1/x/"},
		{Host: "a.b.internal.example.com", Method: "GET", Path: "/svc3/v2"},
		{Host: "a.b.internal.example.com", Method: "GET", Path: "/static/page4"},
		{Host: "other.example.com", Method: "GET", Path: "/nothing/here"},
	}
	for i, req := range reqs {
		if rt := s.Route("", req); (rt.Rule() != nil) != (i < len(reqs)-1) {
			t.Fatalf("Route(%q %q) = %v", req.Host, req.Path, rt.Rule())
		}
		if n := testing.AllocsPerRun(100, func() { s.Route("", req) }); n != 0 {
			t.Errorf("Route(%q %q) allocates %v times, want 0", req.Host, req.Path, n)
		}
	}
	req := benchRequests["prefix"]
	sub := &policy.Subject{Scopes: []string{"svc"}}
	if n := testing.AllocsPerRun(100, func() {
		rt := s.Route("", req)
		rt.Decide(sub, req)
	}); n != 0 {
		t.Errorf("Route and Decide on a scopes rule allocate %v times, want 0", n)
	}
	s = checkPolicy(t)
	req = &policy.Request{Host: "API.example.com", Method: "GET", Path: "/svc-990/items/42?x=1"}
	sub = &policy.Subject{IssuerName: "a", Roles: []string{"admin"}}
	if n := testing.AllocsPerRun(100, func() {
		rt := s.Route("", req)
		rt.Decide(sub, req)
	}); n != 0 {
		t.Errorf("Route and Decide on a roles rule allocate %v times, want 0", n)
	}
}
