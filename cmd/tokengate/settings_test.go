package main

import (
	"strings"
	"testing"
)

// TestLoadConfigBuildsOnce: loadConfig hands serve the parts it builds while
// validating (header map, logout routes, issuer options, the compiled route
// policy), so serve never builds them a second time.
func TestLoadConfigBuildsOnce(t *testing.T) {
	s, err := loadConfig(strings.NewReader(`
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
claim_headers: {x-auth-roles: roles}
logout_routes: [{path_prefix: /logout, revoke: [session]}]
policy: {policies: {default: [{name: health, match: {path: /healthz}, access: public}]}}
`), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.headers == nil || s.logoutRoutes == nil {
		t.Errorf("headers %v, logout routes %v: want both built", s.headers, s.logoutRoutes)
	}
	if r, ok := s.logoutRoutes.Match("any.example", "/logout/now", "GET"); !ok || !r.RevokeSession {
		t.Errorf("logout route: got %+v, %v; want a match that revokes the session", r, ok)
	}
	if len(s.issuers) != 1 || string(s.issuers[0].HMACSecret) != s.Issuers[0].HMACSecret || s.issuers[0].Name != "a" {
		t.Errorf("verifier issuers: got %+v", s.issuers)
	}
	if len(s.intakeIssuers) != 1 || s.intakeIssuers[0].Issuer != "https://a.example" {
		t.Errorf("intake issuers: got %+v", s.intakeIssuers)
	}
	if s.policy == nil || s.policy.set == nil || len(s.policy.base.Issuers) != 1 || s.policy.base.Issuers[0].RolesClaim != "roles" {
		t.Errorf("policy: got %+v; want the set compiled, with the issuers' roles claims", s.policy)
	}
}
