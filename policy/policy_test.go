package policy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/policy"
)

func TestLogoutRouteMatching(t *testing.T) {
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{
		{Host: "auth.example.com", PathPrefix: "/oauth2/logout", Methods: []string{"get", "POST"}},
		{PathPrefix: "/logout/", RevokeSession: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		host, path, method string
		match              bool
	}{
		"exact":                {"auth.example.com", "/oauth2/logout", "GET", true},
		"with query":           {"auth.example.com", "/oauth2/logout?client_id=x", "POST", true},
		"with port":            {"auth.example.com:8443", "/oauth2/logout", "GET", true},
		"host case":            {"Auth.Example.com", "/oauth2/logout", "GET", true},
		"sub path":             {"auth.example.com", "/oauth2/logout/confirm", "GET", true},
		"other host":           {"api.example.com", "/oauth2/logout", "GET", false},
		"other method":         {"auth.example.com", "/oauth2/logout", "DELETE", false},
		"longer segment":       {"auth.example.com", "/oauth2/logouts", "GET", false},
		"any host second rule": {"api.example.com", "/logout", "DELETE", true},
		"not a logout":         {"api.example.com", "/orders", "GET", false},
		"prefix of segment":    {"api.example.com", "/logoutx", "GET", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, got := routes.Match(tc.host, tc.path, tc.method); got != tc.match {
				t.Errorf("Match(%q, %q, %q) = %v, want %v", tc.host, tc.path, tc.method, got, tc.match)
			}
		})
	}
}

// TestLogoutRouteMatchingNormalisesThePath: Match reads the path as the
// upstream resolves it (repeated slashes merged, . and .. resolved, a
// trailing slash or query ignored), and matches only when every reading an
// upstream may take agrees, the literal one (as Envoy's route table reads
// it without normalize_path) included: Java servers drop ;parameters from each
// segment (so "..;" is "..") and others keep them; some decode %2e and
// other unreserved characters, some do not. A path that resolves elsewhere
// under any reading is not a logout route: a revoked token goes on there.
func TestLogoutRouteMatchingNormalisesThePath(t *testing.T) {
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/oauth2/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		path  string
		match bool
	}{
		"plain":                       {"/oauth2/logout", true},
		"trailing slash":              {"/oauth2/logout/", true},
		"query":                       {"/oauth2/logout?x=1", true},
		"query with dots and slashes": {"/oauth2/logout?next=/../orders", true},
		"path parameter":              {"/oauth2/logout;jsessionid=x", true},
		"path parameter, sub path":    {"/oauth2/logout;jsessionid=x/confirm", true},
		// The literal reading (Envoy's route table without normalize_path,
		// a non-normalising upstream) must match too: these normalise to
		// the route but are routed elsewhere by prefix as written.
		"leading double slash":        {"//oauth2/logout", false},
		"inner double slash":          {"/oauth2//logout", false},
		"dot segment":                 {"/oauth2/./logout", false},
		"dot dot segment":             {"/x/../oauth2/logout", false},
		"another route dot dot":       {"/orders/../oauth2/logout", false},
		"dot dot above the root":      {"/../../oauth2/logout", false},
		"encoded dot segment":         {"/orders/%2e%2e/oauth2/logout", false},
		"encoded route letter":        {"/oauth2/%6cogout", false},
		"parameter in a parent":       {"/oauth2;v=1/logout", false},
		"sub path":                    {"/oauth2/logout/confirm", true},
		"resolves above the route":    {"/oauth2/logout/../orders", false},
		"resolves to the parent":      {"/oauth2/logout/..", false},
		"java dot dot":                {"/oauth2/logout/..;/orders", false},
		"java dot dot, parameter":     {"/oauth2/logout/..;x=1/orders", false},
		"java dot dot at the end":     {"/oauth2/logout/..;", false},
		"java dot dot before it":      {"/x/..;/oauth2/logout", false},
		"parameter then dot dot":      {"/oauth2/logout;/../orders", false},
		"encoded dot dot":             {"/oauth2/logout/%2e%2e/orders", false},
		"encoded dot dot, upper case": {"/oauth2/logout/%2E%2E/orders", false},
		"half encoded dot dot":        {"/oauth2/logout/.%2e/orders", false},
		"encoded slash":               {"/oauth2/logout%2f..%2forders", false},
		"encoded backslash":           {"/oauth2/logout/..%5corders", false},
		"backslash":                   {"/oauth2/logout/..\\orders", false},
		"dot dot into a longer name":  {"/oauth2/logouts/../logout", false},
		"not the route after all":     {"/oauth2/./logouts", false},
		"relative":                    {"oauth2/logout", false},
		"empty":                       {"", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, got := routes.Match("auth.example.com", tc.path, "GET"); got != tc.match {
				t.Errorf("Match(%q) = %v, want %v", tc.path, got, tc.match)
			}
		})
	}
}

func TestNewLogoutRoutesRejects(t *testing.T) {
	cases := map[string]policy.LogoutRoute{
		"path prefix without /": {PathPrefix: "logout"},
		"unknown method":        {PathPrefix: "/logout", Methods: []string{"FETCH"}},
		// A prefix matching every path would make every path a revoked
		// token's way through, with or without a host.
		"path prefix /":               {PathPrefix: "/"},
		"path prefix //":              {PathPrefix: "//"},
		"path prefix / on a host":     {Host: "auth.example.com", PathPrefix: "/"},
		"empty path prefix":           {},
		"empty path prefix on a host": {Host: "auth.example.com"},
	}
	for name, route := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := policy.NewLogoutRoutes([]policy.LogoutRoute{route}); err == nil {
				t.Errorf("NewLogoutRoutes(%+v) accepted it", route)
			}
		})
	}
}

func TestHeaderMap(t *testing.T) {
	m, err := policy.NewHeaderMap(map[string]string{"X-Auth-Roles": "roles", "x-auth-tenant": "tid", "x-auth-ok": "flag", "x-auth-n": "n"})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Headers("iss", "sub", "", map[string]any{
		"roles": []any{"a", "b"}, "tid": "t\r\nInjected: yes", "flag": true, "n": 3.5,
	})
	want := []policy.Header{
		{Name: "x-auth-issuer", Value: "iss"}, {Name: "x-auth-n", Value: "3.5"}, {Name: "x-auth-ok", Value: "true"},
		{Name: "x-auth-roles", Value: "a,b"}, {Name: "x-auth-subject", Value: "sub"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

func TestNewHeaderMapRejects(t *testing.T) {
	cases := map[string]map[string]string{
		"reserved header":          {"authorization": "sub"},
		"identity header":          {"x-auth-subject": "email"},
		"invalid name":             {"bad header": "x"},
		"pseudo-header":            {":path": "sub"},
		"empty claim":              {"x-a": ""},
		"same header in two cases": {"X-Auth-Roles": "roles", "x-auth-roles": "groups"},
	}
	for name, claimHeaders := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := policy.NewHeaderMap(claimHeaders); err == nil {
				t.Errorf("NewHeaderMap(%v) accepted it", claimHeaders)
			}
		})
	}
}

// TestLogoutRouteMatchAllocations: Match runs on every request; a path
// needing no normalisation costs no allocation.
func TestLogoutRouteMatchAllocations(t *testing.T) {
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/oauth2/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"api.example.com:443", "api.example.com"} {
		for _, path := range []string{"/orders?id=1", "/oauth2/logout?client_id=x"} {
			if n := testing.AllocsPerRun(100, func() { routes.Match(host, path, "GET") }); n != 0 {
				t.Errorf("Match(%q, %q) makes %v allocations, want 0", host, path, n)
			}
		}
	}
}

// TestLogoutRouteReadingsThirdReview: paths and hosts that some upstream or
// Envoy reads as off the logout route are not logout routes.
func TestLogoutRouteReadingsThirdReview(t *testing.T) {
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{Host: "idp.example.com", PathPrefix: "/oauth2/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/oauth2/logout/..;/../orders",         // Tomcat: /orders
		"/oauth2/logout/x/..;a/../../api",      // Tomcat: /api
		"/oauth2/logout/../%6cogout",           // no decoding: /oauth2/%6cogout
		"/oauth2/logout/../../%6fauth2/logout", // no decoding: /%6fauth2/logout
		"/oauth2/logout/#/../../orders",        // an upstream keeping '#': /oauth2/orders
	} {
		if _, ok := routes.Match("idp.example.com", p, "GET"); ok {
			t.Errorf("path %q is a logout route", p)
		}
	}
	for _, h := range []string{"idp.example.com.", "idp.example.com.:8443", "[idp.example.com]", "[idp.example.com]junk"} {
		if _, ok := routes.Match(h, "/oauth2/logout", "GET"); ok {
			t.Errorf("host %q is the logout route's host", h)
		}
	}
	for _, h := range []string{"idp.example.com", "IDP.example.com", "idp.example.com:8443"} {
		if _, ok := routes.Match(h, "/oauth2/logout", "GET"); !ok {
			t.Errorf("host %q is not the logout route's host", h)
		}
	}
}
