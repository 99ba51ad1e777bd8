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
		_, got := routes.Match(tc.host, tc.path, tc.method)
		if got != tc.match {
			t.Errorf("%s: match = %v, want %v", name, got, tc.match)
		}
	}
	if _, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "logout"}}); err == nil {
		t.Error("a path prefix without / was accepted")
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
	for _, bad := range []map[string]string{{"authorization": "sub"}, {"x-auth-subject": "email"}, {"bad header": "x"}, {"x-a": ""}} {
		if _, err := policy.NewHeaderMap(bad); err == nil {
			t.Errorf("NewHeaderMap(%v) accepted", bad)
		}
	}
}
