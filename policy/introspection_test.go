package policy_test

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/policy"
)

func TestIntrospectionRouteMatching(t *testing.T) {
	routes, err := policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{
		{Host: "auth.example.com", PathPrefix: "/oauth2/introspect"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		host, path, method string
		match              bool
	}{
		"exact":           {"auth.example.com", "/oauth2/introspect", "POST", true},
		"method case":     {"auth.example.com", "/oauth2/introspect", "post", true},
		"with port":       {"AUTH.example.com:443", "/oauth2/introspect?x=1", "POST", true},
		"GET (POST only)": {"auth.example.com", "/oauth2/introspect", "GET", false},
		"other host":      {"api.example.com", "/oauth2/introspect", "POST", false},
		"longer segment":  {"auth.example.com", "/oauth2/introspection", "POST", false},
		"traversal out":   {"auth.example.com", "/oauth2/introspect/../../orders", "POST", false},
		// As for logout routes, the literal path must match too: Envoy
		// (normalize_path, merge_slashes) hands tokengate normalised paths,
		// and one it did not normalise is routed by its literal reading.
		"traversal in":     {"auth.example.com", "/orders/../oauth2/introspect", "POST", false},
		"encoded slash":    {"auth.example.com", "/oauth2%2Fintrospect", "POST", false},
		"double slash":     {"auth.example.com", "//oauth2//introspect", "POST", false},
		"tomcat parameter": {"auth.example.com", "/oauth2/introspect/..;/orders", "POST", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := routes.Match(tc.host, tc.path, tc.method); got != tc.match {
				t.Errorf("Match(%q, %q, %q) = %v, want %v", tc.host, tc.path, tc.method, got, tc.match)
			}
		})
	}
	var none *policy.IntrospectionRoutes
	if none.Match("auth.example.com", "/oauth2/introspect", "POST") {
		t.Error("nil routes match")
	}
}

func TestNewIntrospectionRoutesRejects(t *testing.T) {
	_, err := policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{
		{PathPrefix: "/"},
		{PathPrefix: "oauth2/introspect"},
		{},
		{PathPrefix: "/oauth2/introspect", Methods: []string{"GET"}},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`introspection route 0: path_prefix: "/" matches every path`,
		"introspection route 1: path_prefix: must start with /",
		"introspection route 2: path_prefix: required",
		`introspection route 3: methods: "GET" is not POST`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
