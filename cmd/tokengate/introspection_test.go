package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// TestIdPEndpointsEndToEnd, through run over real gRPC: after a logout at
// the gateway, FusionAuth's own endpoints say what tokengate knows.
// POST /oauth2/introspect with the revoked token in its form body is
// answered 200 {"active":false} by tokengate; with a valid token it goes on
// to the IdP, its client authentication untouched; /oauth2/userinfo with
// the revoked bearer token is 401 token_revoked. Only requests Envoy's
// introspection route marks (context_extensions) are introspections: a
// POST under /oauth2/introspect without the marker needs its bearer token.
func TestIdPEndpointsEndToEnd(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss, `
logout_routes:
  - {host: auth.example.com, path_prefix: /oauth2/logout}
introspection_routes:
  - {host: auth.example.com, path_prefix: /oauth2/introspect}`)}, nil)
	waitReady(t, in)
	// checkExt sends the request as Envoy would on a route whose
	// check_settings.context_extensions are ext.
	checkExt := func(ext map[string]string, method, path string, headers map[string]string, body string) (string, *authv3.CheckResponse) {
		t.Helper()
		resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: ext,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: method, Host: "auth.example.com", Path: path, Headers: headers, Body: body}}}})
		if err != nil {
			t.Fatalf("Check %s %s: %v", method, path, err)
		}
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		return reason, resp
	}
	check := func(method, path string, headers map[string]string, body string) (string, *authv3.CheckResponse) {
		t.Helper()
		return checkExt(nil, method, path, headers, body)
	}
	// Envoy's introspection route (envoy/envoy.yaml) marks its requests.
	marker := map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection}
	introspect := func(tok string) (string, *authv3.CheckResponse) {
		t.Helper()
		return checkExt(marker, "POST", "/oauth2/introspect", map[string]string{
			"authorization": "Basic cmVzb3VyY2Utc2VydmVyOnNlY3JldA==",
			"content-type":  "application/x-www-form-urlencoded",
		}, url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode())
	}

	alice := mintToken(t, iss, "alice", time.Hour, nil)
	bob := mintToken(t, iss, "bob", time.Hour, nil)
	if reason, _ := check("GET", "/oauth2/logout", map[string]string{"authorization": "Bearer " + alice}, ""); reason != "allowed" {
		t.Fatalf("logout: %s, want allowed", reason)
	}

	reason, resp := introspect(alice)
	d := resp.GetDeniedResponse()
	if reason != "introspection_inactive" || d.GetStatus().GetCode() != 200 || d.GetBody() != `{"active":false}` {
		t.Errorf("introspect the logged-out token: %s %v %q, want 200 {\"active\":false} (introspection_inactive)",
			reason, d.GetStatus(), d.GetBody())
	}
	reason, resp = introspect(bob)
	if reason != "introspection_passed" || resp.GetOkResponse() == nil {
		t.Errorf("introspect a valid token: %s, want introspection_passed (on to the IdP)", reason)
	}
	for _, h := range resp.GetOkResponse().GetHeadersToRemove() {
		if strings.EqualFold(h, "authorization") {
			t.Error("the caller's client authentication is removed")
		}
	}

	// Paths introspection_routes matches but Envoy sends to the protected
	// app (its catch-all, no marker): the normal check, so the logged-out
	// token is denied.
	for _, path := range []string{"/oauth2/introspect/admin/delete-user", "/oauth2/introspect;x", "/oauth2/introspect/", "/oauth2/introspect"} {
		if reason, resp := check("POST", path, map[string]string{"authorization": "Bearer " + alice}, ""); reason != "token_revoked" || resp.GetOkResponse() != nil {
			t.Errorf("POST %s without the introspection marker, logged-out token: %s, want token_revoked", path, reason)
		}
		if reason, _ := check("POST", path, nil, ""); reason != "token_missing" {
			t.Errorf("POST %s without the introspection marker, no token: %s, want token_missing", path, reason)
		}
	}

	reason, resp = check("GET", "/oauth2/userinfo", map[string]string{"authorization": "Bearer " + alice}, "")
	if reason != "token_revoked" || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Errorf("userinfo with the logged-out token: %s %v, want 401 token_revoked", reason, resp.GetDeniedResponse().GetStatus())
	}
	if reason, _ := check("GET", "/oauth2/userinfo", map[string]string{"authorization": "Bearer " + bob}, ""); reason != "allowed" {
		t.Errorf("userinfo with a valid token: %s, want allowed", reason)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	if logs := in.logs.String(); strings.Contains(logs, alice) || strings.Contains(logs, bob) {
		t.Error("a token was written to the logs")
	}
}

// TestConfigIntrospectionRoutes: a bad introspection route is refused with
// its YAML path, beside the other problems of the file.
func TestConfigIntrospectionRoutes(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
issuers:
  - {name: a, issuer: https://a.example, audiences: [x]}
introspection_routes:
  - {path_prefix: /oauth2/introspect}
  - {host: auth.example.com, path_prefix: /}
  - {host: auth.example.com, methods: [GET]}
`), noEnv)
	if err == nil {
		t.Fatal("bad introspection routes were accepted")
	}
	for _, want := range []string{
		"introspection_routes[1].path_prefix: \"/\" matches every path",
		"introspection_routes[2].path_prefix: required",
		"introspection_routes[2].methods: \"GET\" is not POST",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "introspection_routes[0]") {
		t.Errorf("the valid route is reported:\n%v", err)
	}
}
