package extauthz_test

import (
	"encoding/json"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// rawRequest is a CheckRequest as Envoy sends it with encode_raw_headers:
// every header an entry of header_map, duplicates kept apart, values in
// raw_value.
func rawRequest(headers [][2]string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{}
	for _, h := range headers {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders", HeaderMap: hm},
	}}}
}

// TestCheckDuplicateAuthorization: a request with two Authorization headers
// is denied, whichever token comes first. An upstream may read the first (a
// victim's revoked token) while tokengate read the last (the attacker's
// valid one), so no choice between them is safe. With encode_raw_headers
// they arrive as separate header_map entries; without, Envoy joins them with
// a comma, which no bearer token contains.
func TestCheckDuplicateAuthorization(t *testing.T) {
	h := newHarness(t, nil)
	good := mint(t, h.a, h.a.Claims("attacker", time.Minute), nil)
	other := mint(t, h.a, h.a.Claims("victim", time.Minute), nil)

	raw := map[string][][2]string{
		"raw two bearer":         {{"authorization", "Bearer " + other}, {"authorization", "Bearer " + good}},
		"raw same token twice":   {{"authorization", "Bearer " + good}, {"authorization", "Bearer " + good}},
		"raw basic then bearer":  {{"authorization", "Basic dTpw"}, {"authorization", "Bearer " + good}},
		"raw empty then bearer":  {{"authorization", ""}, {"authorization", "Bearer " + good}},
		"raw apart, other first": {{"authorization", "Bearer " + other}, {"x-request-id", "r"}, {"authorization", "Bearer " + good}},
	}
	for name, headers := range raw {
		t.Run(name, func(t *testing.T) {
			resp, err := h.client.Check(t.Context(), rawRequest(headers))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			assertDenied(t, resp, "token_malformed")
		})
	}
	joined := map[string]string{
		"joined two bearer":        "Bearer " + other + ",Bearer " + good,
		"joined same token twice":  "Bearer " + good + ",Bearer " + good,
		"joined basic then bearer": "Basic dTpw,Bearer " + good,
		"joined empty then bearer": ",Bearer " + good,
		"joined bearer then empty": "Bearer " + good + ",",
	}
	for name, authorization := range joined {
		t.Run(name, func(t *testing.T) {
			assertDenied(t, h.check(t, authorization), "token_malformed")
		})
	}

	// One header, in either encoding, still works.
	if resp := h.check(t, "Bearer "+good); resp.GetOkResponse() == nil {
		t.Fatalf("one Authorization header denied: %v", resp.GetDynamicMetadata().AsMap())
	}
	resp, err := h.client.Check(t.Context(), rawRequest([][2]string{{"x-request-id", "r"}, {"authorization", "Bearer " + good}}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil {
		t.Fatalf("one raw Authorization header denied: %v", resp.GetDynamicMetadata().AsMap())
	}
}

// TestCheckUnderscoreIdentityHeaders: a header that is a managed identity
// header but for '_' in place of '-' (or the case) never passes: CGI, WSGI
// and PHP upstreams read x_auth_subject as X-Auth-Subject, and tokengate
// neither overwrites nor removes it. The request is refused with
// header_invalid, in either header encoding.
func TestCheckUnderscoreIdentityHeaders(t *testing.T) {
	h := newHarness(t, map[string]string{"x-auth-roles": "roles", "x_auth_tenant": "tid"})
	good := mint(t, h.a, h.a.Claims("u", time.Minute), nil)
	hostile := []string{
		"x_auth_subject", "x_auth-subject", "x-auth_subject", "X_Auth_Subject", "x_auth_issuer",
		"x_auth_token_id", "x-auth-token_id", "x_auth_roles", "X-AUTH_ROLES",
		"x-auth-tenant", "X_AUTH_TENANT", // the configured name has '_'; '-' is the variant
	}
	for _, name := range hostile {
		t.Run(name, func(t *testing.T) {
			resp, err := h.client.Check(t.Context(), checkRequest(map[string]string{
				"authorization": "Bearer " + good, name: "admin",
			}))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			assertHeaderInvalid(t, resp)
			resp, err = h.client.Check(t.Context(), rawRequest([][2]string{
				{"authorization", "Bearer " + good}, {name, "admin"},
			}))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			assertHeaderInvalid(t, resp)
		})
	}

	// The managed names themselves are overwritten or removed as before, and
	// other underscored headers are not tokengate's business.
	for _, name := range []string{"x-auth-subject", "x-auth-roles", "x_auth_tenant", "x_request_id", "x_auth_subjects", "x-auth"} {
		resp, err := h.client.Check(t.Context(), checkRequest(map[string]string{
			"authorization": "Bearer " + good, name: "admin",
		}))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if resp.GetOkResponse() == nil {
			t.Errorf("header %s: denied: %v", name, resp.GetDynamicMetadata().AsMap())
		}
	}
}

// TestCheckIDTokenIsNotAnAccessToken: over gRPC, an ID token of a
// configured issuer (same key, typ and aud as its access tokens, plus
// at_hash) is denied token_type_invalid.
func TestCheckIDTokenIsNotAnAccessToken(t *testing.T) {
	h := newHarness(t, nil)
	claims := h.a.Claims("u", time.Minute)
	claims["at_hash"] = "MTIzNDU2Nzg5MDEyMzQ1Ng"
	claims["nonce"] = "n-1"
	assertDenied(t, h.check(t, "Bearer "+mint(t, h.a, claims, map[string]any{"typ": "JWT"})), "token_type_invalid")
}

// TestCannotDecideLogsAreBounded: junk tokens naming an issuer whose keys
// never loaded cannot be decided, and each says so in the log; the denial
// log limiter bounds those lines too.
func TestCannotDecideLogsAreBounded(t *testing.T) {
	iss := tokentest.NewServer(t, audience)
	iss.FailJWKS(true)
	tok := mint(t, iss, iss.Claims("u", time.Minute), nil)
	synctest.Test(t, func(t *testing.T) {
		h := &countingHandler{count: map[string]int{}}
		v, err := token.New(token.Options{Issuers: []token.Issuer{
			{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json", Audiences: []string{audience}, MaxTokenLifetime: time.Hour},
		}})
		if err != nil {
			t.Fatal(err)
		}
		srv := newServer(t, extauthz.Options{Verifier: v, Logger: slog.New(h), DenialLogsPerSecond: 5})
		req := checkRequest(map[string]string{"authorization": "Bearer " + tok})
		for range 1000 {
			if _, err := srv.Check(t.Context(), req); status.Code(err) != codes.Unavailable {
				t.Fatalf("Check: %v, want Unavailable", err)
			}
		}
		if n := h.count["cannot decide"]; n != 50 {
			t.Errorf("%d cannot-decide lines for 1000 requests, want the burst: 50", n)
		}
		time.Sleep(250 * time.Millisecond) // at 5 per second, room for one more line
		if _, err := srv.Check(t.Context(), req); status.Code(err) != codes.Unavailable {
			t.Fatalf("Check: %v, want Unavailable", err)
		}
		if n := h.count["cannot decide"]; n != 51 {
			t.Errorf("%d cannot-decide lines after a quarter second, want 51", n)
		}
		var unlogged int64
		for _, a := range h.attrs {
			if a.Key == "unlogged_denials_before" {
				unlogged = a.Value.Int64()
			}
		}
		if unlogged != 950 {
			t.Errorf("the next line says %d were left out, want 950", unlogged)
		}
	})
}

// assertHeaderInvalid: a 400 with reason header_invalid and no challenge
// (nothing about the token is wrong).
func assertHeaderInvalid(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.InvalidArgument {
		t.Errorf("status = %v, want InvalidArgument", got)
	}
	denied := resp.GetDeniedResponse()
	if denied == nil {
		t.Fatalf("no denied response; reason %v", resp.GetDynamicMetadata().AsMap()["reason"])
	}
	if got := denied.GetStatus().GetCode(); got != 400 {
		t.Errorf("HTTP status = %d, want 400", got)
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", denied.GetBody(), err)
	}
	if body.Reason != "header_invalid" || body.Error != "invalid_request" {
		t.Errorf("body = %+v, want error invalid_request, reason header_invalid", body)
	}
	if c := challenge(resp); c != "" {
		t.Errorf("www-authenticate = %q on a 400, want none", c)
	}
}
