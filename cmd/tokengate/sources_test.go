package main

import (
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// TestConfigTokenSources: without tokens.sources the token is in the
// Authorization header; listed sources are kept in order, header names in
// lower case; every problem of the list is reported with its path.
func TestConfigTokenSources(t *testing.T) {
	base := `
issuers: [{name: idp, issuer: https://idp.example, audiences: [api]}]
claim_headers: {x-auth-roles: roles}
`
	cfg, err := loadConfig(strings.NewReader(base), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if want := []extauthz.TokenSource{{Header: "authorization"}}; !equalSources(cfg.tokenSources, want) {
		t.Errorf("default sources %v, want %v", cfg.tokenSources, want)
	}
	cfg, err = loadConfig(strings.NewReader(base+`
tokens:
  sources: [{header: Authorization}, {cookie: app.at}, {header: X-Access-Token}]
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}, {Header: "x-access-token"}}
	if !equalSources(cfg.tokenSources, want) {
		t.Errorf("sources %v, want %v", cfg.tokenSources, want)
	}
	_, err = loadConfig(strings.NewReader(base+`
tokens:
  sources: [{header: a, cookie: b}, {}, {header: "x y"}, {cookie: "a;b"}, {cookie: app.at}, {cookie: app.at}, {header: x-auth-roles}]
`), noEnv)
	for _, want := range []string{
		"tokens.sources[0]: exactly one of header or cookie",
		"tokens.sources[1]: exactly one of header or cookie",
		"tokens.sources[2].header:",
		"tokens.sources[3].cookie:",
		"tokens.sources[5]: app.at is listed twice",
		"tokens.sources[6].header: \"x-auth-roles\" is a header tokengate manages itself",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v; want it to contain %q", err, want)
		}
	}
	if _, err := loadConfig(strings.NewReader(base+"tokens: {sources: []}\n"), noEnv); err == nil ||
		!strings.Contains(err.Error(), "tokens.sources: want at least one") {
		t.Errorf("no sources: %v, want tokens.sources: want at least one", err)
	}
}

func equalSources(a, b []extauthz.TokenSource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTokenInCookieEndToEnd, through run over real gRPC: a token only in
// the app.at cookie is checked and allowed, with its identity headers; a
// header token beside a different cookie token is 401 token_malformed; a
// GET on a logout route with only the cookie revokes that token for the
// next request.
func TestTokenInCookieEndToEnd(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss, `
tokens:
  sources: [{header: authorization}, {cookie: app.at}]
logout_routes:
  - {host: auth.example.com, path_prefix: /oauth2/logout, methods: [GET]}`)}, nil)
	waitReady(t, in)
	check := func(host, path string, headers map[string]string) (string, *authv3.CheckResponse) {
		t.Helper()
		resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Host: host, Path: path, Headers: headers}}}})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		return reason, resp
	}

	alice := mintToken(t, iss, "alice", time.Hour, nil)
	reason, resp := check("api.example.com", "/orders", map[string]string{"cookie": "theme=dark; app.at=" + alice + "; app.rt=r1"})
	if reason != "allowed" {
		t.Fatalf("token in the cookie: %s, want allowed", reason)
	}
	subject := ""
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-auth-subject" {
			subject = h.GetHeader().GetValue()
		}
	}
	if subject != "alice" {
		t.Errorf("x-auth-subject %q, want alice", subject)
	}

	mallory := mintToken(t, iss, "mallory", time.Hour, nil)
	reason, resp = check("api.example.com", "/orders", map[string]string{
		"authorization": "Bearer " + mallory, "cookie": "app.at=" + alice})
	if reason != "token_malformed" || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Errorf("header and cookie tokens differ: %s %v, want 401 token_malformed", reason, resp.GetDeniedResponse().GetStatus())
	}

	if reason, _ := check("auth.example.com", "/oauth2/logout", map[string]string{"cookie": "app.at=" + alice}); reason != "allowed" {
		t.Fatalf("logout with the cookie: %s, want allowed", reason)
	}
	if reason, _ := check("api.example.com", "/orders", map[string]string{"cookie": "app.at=" + alice}); reason != "token_revoked" {
		t.Errorf("the cookie's token after the logout: %s, want token_revoked", reason)
	}
	if reason, _ := check("api.example.com", "/orders", map[string]string{"authorization": "Bearer " + alice}); reason != "token_revoked" {
		t.Errorf("the same token in the header after the logout: %s, want token_revoked", reason)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	if logs := in.logs.String(); strings.Contains(logs, alice) || strings.Contains(logs, mallory) || strings.Contains(logs, "app.at=") {
		t.Error("a token or a cookie was written to the logs")
	}
}
