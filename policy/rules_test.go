package policy_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/policy"
)

func compile(t testing.TB, opts policy.Options) *policy.Set {
	t.Helper()
	s, err := policy.Compile(opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// TestRouteMatching is the decision table over the matching edge cases:
// which rule decides each request, or why none can.
func TestRouteMatching(t *testing.T) {
	s := compile(t, policy.Options{Unmatched: policy.UnmatchedDeny, Policies: map[string][]policy.RuleSpec{
		"default": {
			{Name: "shadow-admin", Match: policy.MatchSpec{PathPrefix: "/admin"}, Access: "public", Shadow: true},
			{Name: "admin", Match: policy.MatchSpec{PathPrefix: "/admin"}, Access: "authenticated"},
			{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
			{Name: "health", Match: policy.MatchSpec{Path: "/healthz"}, Access: "public"},
			{Name: "orders-write", Match: policy.MatchSpec{Host: "api.example.com", PathPrefix: "/orders", Methods: []string{"post", "PUT"}}},
			{Name: "orders-read", Match: policy.MatchSpec{Host: "api.example.com", PathPrefix: "/orders"}, Access: "public"},
			{Name: "wild", Match: policy.MatchSpec{Host: "*.example.com", PathPrefix: "/w"}, Access: "public"},
			{Name: "numbered", Match: policy.MatchSpec{PathRegex: `^/a/[0-9]+`}, Access: "public"},
			{Name: "numbered-first", Match: policy.MatchSpec{PathRegex: `/b/[0-9]+`}, Access: "deny"},
			{Name: "b-one", Match: policy.MatchSpec{Path: "/b/1"}, Access: "public"},
			{Name: "dir", Match: policy.MatchSpec{PathRegex: `/dir/`}, Access: "public"},
			{Name: "root", Match: policy.MatchSpec{Path: "/"}, Access: "public"},
			{Name: "encoded", Match: policy.MatchSpec{Path: "/caf%C3%A9"}, Access: "public"},
			{Name: "no-debug", Match: policy.MatchSpec{PathRegex: `(?i).*\.debug`}, Access: "deny"},
			{Name: "no-kill", Match: policy.MatchSpec{PathRegex: `(?i).*/kill/.*`}, Access: "deny"},
			{Name: "no-sql", Match: policy.MatchSpec{PathRegex: `(?i).*\.sql`}, Access: "deny"},
		},
	}})
	cases := map[string]struct {
		host, method, path string
		rule               string // "" unmatched
		status             policy.RouteStatus
		normalised         string // when set, Path() must be it
	}{
		"prefix":                      {path: "/public/x", rule: "public"},
		"prefix itself":               {path: "/public", rule: "public"},
		"prefix with slash":           {path: "/public/", rule: "public"},
		"prefix not a segment":        {path: "/publicx"},
		"traversal":                   {path: "/public/../admin", rule: "admin", normalised: "/admin"},
		"encoded traversal":           {path: "/public/%2e%2e/admin", rule: "admin", normalised: "/admin"},
		"encoded traversal upper":     {path: "/public/%2E%2E/admin", rule: "admin"},
		"traversal with parameter":    {path: "/public/..;/admin", status: policy.RoutePathInvalid},
		"harmless parameter":          {path: "/public/x;v=1", rule: "public"},
		"parameter changing the rule": {path: "/healthz;x", status: policy.RoutePathInvalid},
		"dot segment":                 {path: "/public/./x", rule: "public", normalised: "/public/x"},
		"climb above root":            {path: "/..", status: policy.RoutePathInvalid},
		"climb above root later":      {path: "/a/../../admin", status: policy.RoutePathInvalid},
		"encoded slash":               {path: "/public%2F..%2Fadmin", status: policy.RoutePathInvalid},
		"encoded slash lower":         {path: "/public%2f..%2fadmin", status: policy.RoutePathInvalid},
		"encoded backslash":           {path: "/public%5C..%5Cadmin", status: policy.RoutePathInvalid},
		"encoded backslash lower":     {path: "/public%5c", status: policy.RoutePathInvalid},
		"backslash":                   {path: `/public\..\admin`, status: policy.RoutePathInvalid},
		"encoded nul":                 {path: "/public/%00", status: policy.RoutePathInvalid},
		"malformed escape":            {path: "/public/%zz", status: policy.RoutePathInvalid},
		"truncated escape":            {path: "/public/%2", status: policy.RoutePathInvalid},
		"control character":           {path: "/public/\x01", status: policy.RoutePathInvalid},
		"no leading slash":            {path: "public", status: policy.RoutePathInvalid},
		"empty path":                  {path: "", status: policy.RoutePathInvalid},
		"double slash":                {path: "//admin", rule: "admin", normalised: "/admin"},
		"double slash inside":         {path: "/public//x", rule: "public", normalised: "/public/x"},
		"exact":                       {path: "/healthz", rule: "health"},
		"exact trailing slash":        {path: "/healthz/", rule: "health", normalised: "/healthz/"},
		"exact longer":                {path: "/healthz/x"},
		"exact query":                 {path: "/healthz?verbose=1", rule: "health", normalised: "/healthz"},
		"query hides nothing":         {path: "/healthz?/admin", rule: "health"},
		"fragment":                    {path: "/healthz#x", rule: "health"},
		"root":                        {path: "/", rule: "root"},
		"root with query":             {path: "/?x", rule: "root"},
		"encoded unreserved decoded":  {path: "/%68ealthz", rule: "health", normalised: "/healthz"},
		"escape case":                 {path: "/caf%c3%a9", rule: "encoded", normalised: "/caf%C3%A9"},
		"method":                      {host: "api.example.com", method: "POST", path: "/orders/1", rule: "orders-write"},
		"method case":                 {host: "api.example.com", method: "post", path: "/orders/1", rule: "orders-write"},
		"method compiled lower":       {host: "api.example.com", method: "PUT", path: "/orders", rule: "orders-write"},
		"method mismatch next rule":   {host: "api.example.com", method: "GET", path: "/orders/1", rule: "orders-read"},
		"host with port":              {host: "api.example.com:8443", method: "POST", path: "/orders", rule: "orders-write"},
		"host upper case":             {host: "API.Example.COM", method: "POST", path: "/orders", rule: "orders-write"},
		"host trailing dot":           {host: "api.example.com.", method: "POST", path: "/orders", rule: "orders-write"},
		"other host":                  {host: "www.example.org", method: "POST", path: "/orders"},
		"wildcard":                    {host: "a.example.com", path: "/w", rule: "wild"},
		"wildcard two labels":         {host: "a.b.example.com", path: "/w/x", rule: "wild"},
		"wildcard upper with port":    {host: "A.Example.com:80", path: "/w", rule: "wild"},
		"wildcard not the domain":     {host: "example.com", path: "/w"},
		"wildcard not a suffix":       {host: "badexample.com", path: "/w"},
		"wildcard ipv6":               {host: "[::1]:80", path: "/w"},
		"regex":                       {path: "/a/12", rule: "numbered"},
		"regex anchored":              {path: "/a/1/b"},
		"regex anchored at start":     {path: "/x/a/1"},
		"regex unanchored as written": {path: "/b/7", rule: "numbered-first"},
		"first match wins":            {path: "/b/1", rule: "numbered-first"},
		"regex sees trailing slash":   {path: "/dir/", rule: "dir"},
		"regex sees no slash":         {path: "/dir"},
		"shadow skipped":              {path: "/admin/users", rule: "admin"},
		"regex literal":               {path: "/x/y.debug", rule: "no-debug"},
		"regex literal case":          {path: "/x/y.DeBug", rule: "no-debug"},
		"regex literal absent":        {path: "/x/y.debu"},
		"regex fold kelvin sign":      {path: "/x/\u212aill/y", rule: "no-kill"},
		"regex fold long s":           {path: "/x/y.\u017fql", rule: "no-sql"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req := &policy.Request{Host: tc.host, Path: tc.path, Method: method}
			rt := s.Route("", req)
			if rt.Status != tc.status {
				t.Fatalf("Route(%q %q %q).Status = %v, want %v", tc.host, method, tc.path, rt.Status, tc.status)
			}
			got := ""
			if r := rt.Rule(); r != nil {
				got = r.Name()
			}
			if got != tc.rule {
				t.Errorf("Route(%q %q %q) = rule %q, want %q", tc.host, method, tc.path, got, tc.rule)
			}
			if tc.normalised != "" && rt.Path() != tc.normalised {
				t.Errorf("Path() = %q, want %q", rt.Path(), tc.normalised)
			}
			if tc.status == policy.RouteOK && tc.rule == "" && rt.Access() != policy.AccessDeny {
				t.Errorf("unmatched Access() = %v, want deny", rt.Access())
			}
			// The linear scan agrees.
			steps, _, _ := s.Trace("", req, nil)
			if tc.status == policy.RouteOK {
				if d := decidingStep(steps); d != tc.rule {
					t.Errorf("Trace decides by %q, want %q", d, tc.rule)
				}
			}
		})
	}
}

// decidingStep is the rule a trace ends on: its last step, when it matched
// and is no shadow.
func decidingStep(steps []policy.TraceStep) string {
	if n := len(steps); n > 0 && steps[n-1].Matched && !steps[n-1].Shadow {
		return steps[n-1].Rule
	}
	return ""
}

func TestRouteShadows(t *testing.T) {
	s := compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{
		"default": {
			{Name: "new-admin", Match: policy.MatchSpec{PathPrefix: "/admin"}, Shadow: true, Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin"}}}},
			{Name: "new-deny", Match: policy.MatchSpec{PathPrefix: "/admin/secret"}, Access: "deny", Shadow: true},
			{Name: "admin", Match: policy.MatchSpec{PathPrefix: "/admin"}},
			{Name: "late-shadow", Match: policy.MatchSpec{PathPrefix: "/"}, Access: "deny", Shadow: true},
		},
	}})
	sub := &policy.Subject{IssuerName: "a", Roles: []string{"clerk"}}
	req := &policy.Request{Path: "/admin/secret", Method: "GET"}
	rt := s.Route("", req)
	if rt.Rule() == nil || rt.Rule().Name() != "admin" {
		t.Fatalf("rule = %v, want admin", rt.Rule())
	}
	if !rt.HasShadows() {
		t.Fatal("HasShadows() = false, want true")
	}
	type shadow struct {
		rule string
		d    policy.Decision
	}
	var got []shadow
	rt.Shadows(sub, req, func(r *policy.Rule, d policy.Decision) { got = append(got, shadow{r.Name(), d}) })
	want := []shadow{
		{"new-admin", policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		{"new-deny", policy.Decision{Outcome: policy.OutcomeForbidden}},
	}
	if len(got) != len(want) {
		t.Fatalf("Shadows = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Shadows[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if d := rt.Decide(sub, req); d.Outcome != policy.OutcomeAllow {
		t.Errorf("Decide = %+v, want allow: shadow rules judge nothing", d)
	}

	// An unmatched request reports every shadow rule it matched.
	rt = s.Route("", &policy.Request{Path: "/other", Method: "GET"})
	if rt.Rule() != nil || !rt.HasShadows() {
		t.Errorf("unmatched: rule %v, HasShadows %v; want none and true", rt.Rule(), rt.HasShadows())
	}
	rt = s.Route("", &policy.Request{Path: "/admin", Method: "GET"})
	n := 0
	rt.Shadows(nil, nil, func(r *policy.Rule, d policy.Decision) {
		n++
		if r.Name() == "late-shadow" {
			t.Errorf("a shadow rule after the deciding rule was reported")
		}
	})
	if n != 1 {
		t.Errorf("%d shadow rules reported, want 1", n)
	}
}

func TestRoutePolicies(t *testing.T) {
	s := compile(t, policy.Options{Unmatched: policy.UnmatchedAuthenticated, Policies: map[string][]policy.RuleSpec{
		"default":     {{Name: "all", Match: policy.MatchSpec{PathPrefix: "/"}, Access: "public"}},
		"partner-api": {{Name: "deny-all", Access: "deny"}},
	}})
	req := &policy.Request{Path: "/x", Method: "GET"}
	for _, tc := range []struct {
		policy, want, name string
		status             policy.RouteStatus
	}{
		{"", "all", "default", policy.RouteOK},
		{"default", "all", "default", policy.RouteOK},
		{"partner-api", "deny-all", "partner-api", policy.RouteOK},
		{"nope", "", "nope", policy.RoutePolicyUnknown},
	} {
		rt := s.Route(tc.policy, req)
		got := ""
		if rt.Rule() != nil {
			got = rt.Rule().Name()
		}
		if rt.Status != tc.status || got != tc.want || rt.Policy() != tc.name {
			t.Errorf("Route(%q) = %v %q policy %q, want %v %q policy %q", tc.policy, rt.Status, got, rt.Policy(), tc.status, tc.want, tc.name)
		}
	}
	if rt := s.Route("nope", req); rt.Access() != policy.AccessDeny || rt.Decide(&policy.Subject{}, req).Outcome != policy.OutcomeForbidden {
		t.Errorf("an unknown policy must deny")
	}
	if got := s.Names(); len(got) != 2 || got[0] != "default" || got[1] != "partner-api" {
		t.Errorf("Names() = %v", got)
	}

	// Without a default policy, a request naming none is unmatched.
	s = compile(t, policy.Options{Unmatched: policy.UnmatchedAuthenticated, Policies: map[string][]policy.RuleSpec{
		"partner-api": {{Name: "deny-all", Access: "deny"}},
	}})
	rt := s.Route("", req)
	if rt.Status != policy.RouteOK || rt.Rule() != nil || rt.Access() != policy.AccessAuthenticated {
		t.Errorf("no default: %v %v %v, want OK, unmatched, authenticated", rt.Status, rt.Rule(), rt.Access())
	}
	if d := rt.Decide(nil, req); d.Outcome != policy.OutcomeUnauthenticated {
		t.Errorf("unmatched authenticated without a token: %+v", d)
	}
	if d := rt.Decide(&policy.Subject{}, req); d.Outcome != policy.OutcomeAllow {
		t.Errorf("unmatched authenticated with a token: %+v", d)
	}

	// A nil Set behaves as no policy at all.
	var none *policy.Set
	rt = none.Route("", req)
	if rt.Status != policy.RouteOK || rt.Access() != policy.AccessAuthenticated || none.NeedsClaims() || none.NeedsHeaders() {
		t.Errorf("nil Set: %v %v", rt.Status, rt.Access())
	}
	if rt = none.Route("", &policy.Request{Path: "/a%2fb", Method: "GET"}); rt.Status != policy.RouteOK {
		t.Errorf("nil Set: an invalid path is %v, want RouteOK (no policy, no path check)", rt.Status)
	}
}

func TestNormalizePath(t *testing.T) {
	cases := map[string]string{ // "" is ErrPathInvalid
		"/":                       "/",
		"/a/b":                    "/a/b",
		"/a/b/":                   "/a/b/",
		"/a/b?x=1":                "/a/b",
		"/a/b#f":                  "/a/b",
		"/a/b?x=/../..":           "/a/b",
		"//a///b//":               "/a/b/",
		"/a/./b":                  "/a/b",
		"/a/.":                    "/a/",
		"/a/b/..":                 "/a/",
		"/a/../b":                 "/b",
		"/.":                      "/",
		"/a/..":                   "/",
		"/..":                     "",
		"/a/../..":                "",
		"/%2e%2e":                 "",
		"/a/%2E%2e/b":             "/b",
		"/a/.%2e/b":               "/b",
		"/%7euser":                "/~user",
		"/%41%5a":                 "/AZ",
		"/a%20b":                  "/a%20b",
		"/a%3fb":                  "/a%3Fb",
		"/a%252e%252e":            "", // %2e%2e, a dot segment, to an upstream that decodes twice
		"/a%252fb":                "",
		"/a%255Cb":                "",
		"/a%2525":                 "",
		"/a%2520b":                "/a%2520b", // a double-encoded space hides nothing
		"/a/%25%32%65%25%32%65/b": "",         // %252e%252e once its digits are decoded
		"/a/%25%32e":              "",
		"/a/%252%65":              "",
		"/100%25":                 "/100%25",
		"/a%2fb":                  "",
		"/a%2Fb":                  "",
		"/a%5cb":                  "",
		"/a%00":                   "",
		"/a\\b":                   "",
		"/a%":                     "",
		"/a%g0":                   "",
		"/a\x7f":                  "",
		"/a\tb":                   "",
		"a":                       "",
		"":                        "",
		"?x":                      "",
		"/.hidden":                "/.hidden",
		"/..;/x":                  "/..;/x",
		"/caf\xc3\xa9":            "/caf\xc3\xa9",
		"/a/%2e%2e%2f":            "",
		"/%2e/%2e%2e/a/b%2Fc":     "",
	}
	for in, want := range cases {
		got, err := policy.NormalizePath(in)
		if want == "" {
			if !errors.Is(err, policy.ErrPathInvalid) {
				t.Errorf("NormalizePath(%q) = %q, %v; want ErrPathInvalid", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestTrace(t *testing.T) {
	s := compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": {
		{Name: "other-host", Match: policy.MatchSpec{Host: "admin.example.com", PathPrefix: "/"}, Access: "deny"},
		{Name: "writes", Match: policy.MatchSpec{PathPrefix: "/orders", Methods: []string{"POST"}}, Access: "deny"},
		{Name: "other-path", Match: policy.MatchSpec{Path: "/health"}, Access: "public"},
		{Name: "try-roles", Match: policy.MatchSpec{PathPrefix: "/orders"}, Shadow: true, Require: policy.Require{Roles: policy.AnyAll{AllOf: []string{"clerk"}}}},
		{Name: "orders", Match: policy.MatchSpec{PathPrefix: "/orders"}, Require: policy.Require{Scopes: policy.AnyAll{AllOf: []string{"orders:read"}}}},
		{Name: "never-tried", Match: policy.MatchSpec{PathPrefix: "/"}, Access: "public"},
	}}})
	req := &policy.Request{Host: "api.example.com", Method: "GET", Path: "/orders/1"}
	sub := &policy.Subject{Scopes: []string{"openid"}}
	steps, rt, d := s.Trace("", req, sub)
	want := []policy.TraceStep{
		{Rule: "other-host", Mismatch: "host"},
		{Rule: "writes", Mismatch: "method"},
		{Rule: "other-path", Mismatch: "path"},
		{Rule: "try-roles", Shadow: true, Matched: true, Decision: policy.Decision{Outcome: policy.OutcomeForbidden, Failed: "roles"}},
		{Rule: "orders", Matched: true, Decision: policy.Decision{Outcome: policy.OutcomeInsufficientScope, Failed: "scopes", Scope: "orders:read"}},
	}
	if diff := cmp.Diff(want, steps); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if rt.Rule() == nil || rt.Rule().Name() != "orders" || d != want[4].Decision {
		t.Errorf("Trace route %v, decision %+v", rt.Rule(), d)
	}
	if steps, rt, _ := s.Trace("nope", req, sub); steps != nil || rt.Status != policy.RoutePolicyUnknown {
		t.Errorf("unknown policy: steps %v, status %v", steps, rt.Status)
	}
}

// TestRouteSemicolonResolvedAway: a ';' segment that dot resolution removes
// ("..;" as a name, popped by the next "..") still makes the path read the
// Java way too: /public/a/..;/../admin is /admin to Tomcat.
func TestRouteSemicolonResolvedAway(t *testing.T) {
	s := compile(t, policy.Options{Unmatched: policy.UnmatchedDeny, Policies: map[string][]policy.RuleSpec{
		"default": {
			{Name: "admin", Match: policy.MatchSpec{PathPrefix: "/admin"}, Access: "deny"},
			{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
		},
	}})
	for _, p := range []string{"/public/a/..;/../admin", "/public/a/%2e%2e;/../admin", "/public/a/..;x/../admin"} {
		rt := s.Route("", &policy.Request{Host: "x", Method: "GET", Path: p})
		if rt.Status != policy.RoutePathInvalid && (rt.Rule() == nil || rt.Rule().Name() != "admin") {
			t.Errorf("%q: status %v, rule %v; want path_invalid or the admin rule", p, rt.Status, rt.Rule())
		}
	}
}
