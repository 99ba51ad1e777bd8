package extauthz_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
)

const audience = "api"

// harness is a real Check server on a loopback port, verifying tokens of two
// issuers (A and B) whose JWKS are served over HTTP.
type harness struct {
	a, b     *tokentest.Issuer
	verifier *token.Verifier
	client   authv3.AuthorizationClient
}

func newHarness(t *testing.T, claimHeaders map[string]string) *harness {
	t.Helper()
	h := &harness{a: tokentest.NewServer(t, audience), b: tokentest.NewServer(t, audience)}
	headers, err := policy.NewHeaderMap(claimHeaders)
	if err != nil {
		t.Fatal(err)
	}
	h.verifier, err = token.New(token.Options{
		Issuers: []token.Issuer{
			{Name: "a", Issuer: h.a.URL, Audiences: []string{audience, "other"}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour},
			{Name: "b", Issuer: h.b.URL, JWKSURI: h.b.URL + "/jwks.json", Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour},
		},
		CacheMaxEntries: 1000,
		Derive:          extauthz.Derive(headers, nil, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := h.verifier.Refresh(t.Context(), name); err != nil {
			t.Fatalf("load the keys of issuer %s: %v", name, err)
		}
	}

	h.client = serveGRPC(t, newServer(t, extauthz.Options{Verifier: h.verifier, Headers: headers}))
	return h
}

// newServer is extauthz.NewServer, failing the test on an error.
// serveGRPC serves srv over real gRPC on a loopback port and returns a
// client of it; both stop with the test.
func serveGRPC(t testing.TB, srv authv3.AuthorizationServer) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func newServer(t testing.TB, opts extauthz.Options) *extauthz.Server {
	t.Helper()
	srv, err := extauthz.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return srv
}

func checkRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders?id=1", Headers: headers},
	}}}
}

func (h *harness) check(t *testing.T, authorization string) *authv3.CheckResponse {
	t.Helper()
	headers := map[string]string{"x-request-id": "req-1"}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	resp, err := h.client.Check(t.Context(), checkRequest(headers))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func mint(t *testing.T, iss *tokentest.Issuer, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	s, err := iss.Sign(claims, header)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckAllowSetsIdentityHeaders(t *testing.T) {
	h := newHarness(t, map[string]string{"x-auth-roles": "roles", "x-auth-tenant": "tid", "x-auth-meta": "meta"})
	claims := h.a.Claims("user-1", 10*time.Minute)
	claims["roles"] = []any{"admin", "billing"}
	claims["meta"] = map[string]any{"plan": "pro"}
	tok := mint(t, h.a, claims, nil)

	resp := h.check(t, "bearer "+tok) // the scheme is case-insensitive
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.OK {
		t.Fatalf("status = %v, want OK (reason %v)", got, resp.GetDynamicMetadata().AsMap()["reason"])
	}
	ok := resp.GetOkResponse()
	set := map[string]string{}
	for _, hv := range ok.GetHeaders() {
		if hv.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", hv.GetHeader().GetKey(), hv.GetAppendAction())
		}
		set[hv.GetHeader().GetKey()] = hv.GetHeader().GetValue()
	}
	want := map[string]string{
		"x-auth-subject":  "user-1",
		"x-auth-issuer":   h.a.URL,
		"x-auth-token-id": claims["jti"].(string),
		"x-auth-roles":    "admin,billing",
		"x-auth-meta":     `{"plan":"pro"}`,
	}
	if diff := cmp.Diff(want, set); diff != "" {
		t.Errorf("headers set (-want +got):\n%s", diff)
	}
	// The token has no tid claim: a client-sent x-auth-tenant must not reach the upstream.
	if diff := cmp.Diff([]string{"x-auth-tenant"}, ok.GetHeadersToRemove()); diff != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", diff)
	}
	md := resp.GetDynamicMetadata().AsMap()
	for k, v := range map[string]any{"reason": "allowed", "sub": "user-1", "iss": h.a.URL, "jti": claims["jti"]} {
		if md[k] != v {
			t.Errorf("dynamic metadata %s = %v, want %v", k, md[k], v)
		}
	}
	if id, _ := md["decision_id"].(string); id == "" {
		t.Error("dynamic metadata has no decision_id")
	}

	// Cached or not, the answer is the same.
	if again := h.check(t, "Bearer "+tok); !cmp.Equal(again.GetOkResponse(), ok, protocmp.Transform()) {
		t.Error("second (cached) answer differs from the first")
	}
}

func TestCheckHeadersNeverBothSetAndRemoved(t *testing.T) {
	h := newHarness(t, map[string]string{"x-auth-roles": "roles", "x-auth-email": "email"})
	claims := h.a.Claims("", 10*time.Minute)
	delete(claims, "sub")
	delete(claims, "jti")
	claims["email"] = "a@example.com"
	resp := h.check(t, "Bearer "+mint(t, h.a, claims, nil))
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("want allow, got %v", resp.GetDeniedResponse())
	}
	set := map[string]bool{}
	for _, hv := range ok.GetHeaders() {
		set[hv.GetHeader().GetKey()] = true
	}
	for _, name := range ok.GetHeadersToRemove() {
		if set[name] {
			t.Errorf("%s is both set and removed", name)
		}
	}
	if diff := cmp.Diff([]string{"x-auth-roles", "x-auth-subject", "x-auth-token-id"}, ok.GetHeadersToRemove()); diff != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", diff)
	}
}

func TestCheckMissingTokenChallengeHasNoError(t *testing.T) {
	h := newHarness(t, nil)
	cases := map[string]string{
		"no authorization header": "",
		"another scheme":          "Basic dXNlcjpwYXNz",
	}
	for name, authz := range cases {
		t.Run(name, func(t *testing.T) {
			resp := h.check(t, authz)
			assertDenied(t, resp, "token_missing")
			if got, want := challenge(resp), `Bearer realm="tokengate"`; got != want {
				t.Errorf("www-authenticate = %q, want %q", got, want)
			}
		})
	}
}

// TestCheckHostileTokens: every one is denied with its reason, as a normal
// answer; none is a gRPC error and none takes the server down.
func TestCheckHostileTokens(t *testing.T) {
	h := newHarness(t, nil)
	fresh := func() jwt.MapClaims { return h.a.Claims("mallory", 10*time.Minute) }
	pub := h.a.PublicKey(h.a.KID()).(*rsa.PublicKey)
	now := time.Now()

	without := func(claim string) string {
		c := fresh()
		delete(c, claim)
		return mint(t, h.a, c, nil)
	}
	with := func(k string, v any) string {
		c := fresh()
		c[k] = v
		return mint(t, h.a, c, nil)
	}

	cases := map[string]struct {
		authorization string
		reason        string
	}{
		"alg none": {
			authorization: "Bearer " + unsigned(t, map[string]any{"alg": "none", "typ": "JWT"}, fresh()),
			reason:        "algorithm_not_allowed",
		},
		"HS256 signed with the RSA public key": {
			authorization: "Bearer " + hmacWithKey(t, fresh(), pemBytes(t, pub), h.a.KID()),
			reason:        "algorithm_not_allowed",
		},
		"unknown kid": {
			authorization: "Bearer " + mint(t, h.a, fresh(), map[string]any{"kid": "no-such-key"}),
			reason:        "key_unknown",
		},
		"iss of A, signed with B's key and kid": {
			authorization: "Bearer " + mint(t, h.b, fresh(), nil),
			reason:        "key_unknown",
		},
		"iss unknown": {
			authorization: "Bearer " + with("iss", "https://evil.example"),
			reason:        "issuer_unknown",
		},
		"wrong aud": {
			authorization: "Bearer " + with("aud", "someone-else"),
			reason:        "audience_mismatch",
		},
		"expired beyond the leeway": {
			authorization: "Bearer " + mint(t, h.a, jwt.MapClaims{"iss": h.a.URL, "aud": audience, "sub": "x",
				"iat": now.Add(-20 * time.Minute).Unix(), "exp": now.Add(-time.Minute).Unix()}, nil),
			reason: "token_expired",
		},
		"nbf in the future": {
			authorization: "Bearer " + with("nbf", now.Add(5*time.Minute).Unix()),
			reason:        "token_not_yet_valid",
		},
		"iat in the future": {
			authorization: "Bearer " + mint(t, h.a, jwt.MapClaims{"iss": h.a.URL, "aud": audience, "sub": "x",
				"iat": now.Add(5 * time.Minute).Unix(), "exp": now.Add(10 * time.Minute).Unix()}, nil),
			reason: "token_not_yet_valid",
		},
		"missing exp": {
			authorization: "Bearer " + without("exp"),
			reason:        "claims_invalid",
		},
		"missing iat": {
			authorization: "Bearer " + without("iat"),
			reason:        "claims_invalid",
		},
		"exp not a number": {
			authorization: "Bearer " + with("exp", "tomorrow"),
			reason:        "claims_invalid",
		},
		"sub not a string": {
			authorization: "Bearer " + with("sub", 42),
			reason:        "claims_invalid",
		},
		"lifetime above the maximum": {
			authorization: "Bearer " + mint(t, h.a, jwt.MapClaims{"iss": h.a.URL, "aud": audience, "sub": "x",
				"iat": now.Unix(), "exp": now.Add(2 * time.Hour).Unix()}, nil),
			reason: "token_lifetime_too_long",
		},
		"bad base64": {
			authorization: "Bearer " + "eyJhbGciOiJSUzI1NiJ9.!!!!.abc",
			reason:        "token_malformed",
		},
		"base64 of garbage": {
			authorization: "Bearer " + "aGVsbG8.d29ybGQ.c2ln",
			reason:        "token_malformed",
		},
		"two segments": {
			authorization: "Bearer " + "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
			reason:        "token_malformed",
		},
		"four segments": {
			authorization: "Bearer " + mint(t, h.a, fresh(), nil) + ".extra",
			reason:        "token_malformed",
		},
		"100 KB token": {
			authorization: "Bearer " + strings.Repeat("a", 50<<10) + "." + strings.Repeat("b", 50<<10) + ".c",
			reason:        "token_malformed",
		},
		"non-ASCII": {
			authorization: "Bearer " + "ëyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
			reason:        "token_malformed",
		},
		"Bearer with nothing after it": {
			authorization: "Bearer ",
			reason:        "token_malformed",
		},
		"Bearer alone": {
			authorization: "Bearer",
			reason:        "token_malformed",
		},
		"two tokens": {
			authorization: "Bearer a.b.c, Bearer d.e.f",
			reason:        "token_malformed",
		},
		"typ logout+jwt": {
			authorization: "Bearer " + mint(t, h.a, fresh(), map[string]any{"typ": "logout+jwt"}),
			reason:        "token_type_invalid",
		},
		"typ secevent+jwt": {
			authorization: "Bearer " + mint(t, h.a, fresh(), map[string]any{"typ": "secevent+jwt"}),
			reason:        "token_type_invalid",
		},
		"untyped logout token used as an access token": {
			authorization: "Bearer " + with("events", map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}}),
			reason:        "token_type_invalid",
		},
		"crit header": {
			authorization: "Bearer " + mint(t, h.a, fresh(), map[string]any{"crit": []any{"exp"}}),
			reason:        "token_malformed",
		},
		"signature of another token": {
			authorization: "Bearer " + swapSignature(mint(t, h.a, fresh(), nil), mint(t, h.a, withClaim(fresh(), "sub", "admin"), nil)),
			reason:        "token_invalid_signature",
		},
		"unknown alg": {
			authorization: "Bearer " + unsigned(t, map[string]any{"alg": "XS999"}, fresh()),
			reason:        "algorithm_not_allowed",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			assertDenied(t, h.check(t, tc.authorization), tc.reason)
		})
	}
	// The server is still up and still allows good tokens.
	if resp := h.check(t, "Bearer "+mint(t, h.a, fresh(), nil)); resp.GetOkResponse() == nil {
		t.Fatalf("a valid token was denied after the hostile ones: %v", resp.GetDynamicMetadata().AsMap())
	}
}

// TestCheckAccessTokenTypes: typ absent, JWT or at+jwt (RFC 9068) are access tokens.
func TestCheckAccessTokenTypes(t *testing.T) {
	h := newHarness(t, nil)
	cases := map[string]any{
		"absent":             nil,
		"JWT":                "JWT",
		"at+jwt":             "at+jwt",
		"application_at+jwt": "application/at+jwt",
	}
	for name, typ := range cases {
		t.Run(name, func(t *testing.T) {
			tok := mint(t, h.a, h.a.Claims("u", time.Minute), map[string]any{"typ": typ})
			if resp := h.check(t, "Bearer "+tok); resp.GetOkResponse() == nil {
				t.Errorf("typ %v denied: %v", typ, resp.GetDynamicMetadata().AsMap()["reason"])
			}
		})
	}
}

func TestCheckUnavailableBeforeKeysLoad(t *testing.T) {
	iss := tokentest.NewServer(t, audience)
	iss.FailJWKS(true)
	v, err := token.New(token.Options{Issuers: []token.Issuer{
		{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json", Audiences: []string{audience}, MaxTokenLifetime: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v})
	tok := mint(t, iss, iss.Claims("u", time.Minute), nil)
	_, err = srv.Check(t.Context(), checkRequest(map[string]string{"authorization": "Bearer " + tok}))
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("Check before keys loaded: code %v (err %v), want Unavailable", got, err)
	}
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse, reason string) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.Unauthenticated {
		t.Errorf("status = %v, want Unauthenticated", got)
	}
	denied := resp.GetDeniedResponse()
	if denied == nil {
		t.Fatalf("no denied response; reason %v", resp.GetDynamicMetadata().AsMap()["reason"])
	}
	if got := int(denied.GetStatus().GetCode()); got != http.StatusUnauthorized {
		t.Errorf("HTTP status = %d, want 401", got)
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", denied.GetBody(), err)
	}
	if body.Reason != reason || body.Error != "invalid_token" {
		t.Errorf("body = %+v, want error invalid_token, reason %s", body, reason)
	}
	if got := resp.GetDynamicMetadata().AsMap()["reason"]; got != reason {
		t.Errorf("metadata reason = %v, want %s", got, reason)
	}
	if reason != "token_missing" {
		want := `Bearer realm="tokengate", error="invalid_token", error_description="` + strings.ReplaceAll(reason, "_", " ") + `"`
		if got := challenge(resp); got != want {
			t.Errorf("www-authenticate = %q, want %q", got, want)
		}
	}
}

func challenge(resp *authv3.CheckResponse) string {
	for _, hv := range resp.GetDeniedResponse().GetHeaders() {
		if hv.GetHeader().GetKey() == "www-authenticate" {
			return hv.GetHeader().GetValue()
		}
	}
	return ""
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func unsigned(t *testing.T, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	return b64(header) + "." + b64(claims) + "."
}

// hmacWithKey forges the classic algorithm-confusion token: HS256 "signed"
// with the issuer's public key bytes as the secret.
func hmacWithKey(t *testing.T, claims jwt.MapClaims, secret []byte, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pemBytes is the public key as a PEM document: what a naive verifier would
// pass as the HMAC secret.
func pemBytes(t *testing.T, pub *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func swapSignature(a, b string) string {
	ia, ib := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
	return b[:ib] + a[ia:]
}

func withClaim(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	return c
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu    sync.Mutex
	count map[string]int
	attrs []slog.Attr
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count[r.Message]++
	r.Attrs(func(a slog.Attr) bool { h.attrs = append(h.attrs, a); return true })
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestDenialLogsAreBounded: a flood of junk tokens is counted in full by the
// metrics but logged at a bounded rate, with the number left out. The
// limiter reads the clock, so the test runs in a synctest bubble: no time
// passes during the flood, and exactly the burst is logged.
func TestDenialLogsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &countingHandler{count: map[string]int{}}
		v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: "https://a.example", Audiences: []string{"x"},
			MaxTokenLifetime: time.Hour, HMACSecret: []byte("0123456789abcdef0123456789abcdef")}}})
		if err != nil {
			t.Fatal(err)
		}
		srv := newServer(t, extauthz.Options{Verifier: v, Logger: slog.New(h), DenialLogsPerSecond: 5})
		junk := checkRequest(map[string]string{"authorization": "Bearer junk"})
		for range 1000 {
			if _, err := srv.Check(t.Context(), junk); err != nil {
				t.Fatal(err)
			}
		}
		if n := h.count["denied"]; n != 50 {
			t.Errorf("%d denials logged out of 1000, want the burst: 50", n)
		}
		time.Sleep(250 * time.Millisecond) // at 5 per second, room for one more line
		if _, err := srv.Check(t.Context(), junk); err != nil {
			t.Fatal(err)
		}
		if n := h.count["denied"]; n != 51 {
			t.Errorf("%d denials logged after a quarter second, want 51", n)
		}
		var unlogged int64
		for _, a := range h.attrs {
			if a.Key == "unlogged_denials_before" {
				unlogged = a.Value.Int64()
			}
		}
		if unlogged != 950 {
			t.Errorf("the next logged denial says %d were left out, want 950", unlogged)
		}

		// The count restarts with each logged line.
		h.attrs = nil
		time.Sleep(250 * time.Millisecond)
		if _, err := srv.Check(t.Context(), junk); err != nil {
			t.Fatal(err)
		}
		for _, a := range h.attrs {
			if a.Key == "unlogged_denials_before" {
				t.Errorf("a denial logged right after another says %v were left out, want none", a.Value)
			}
		}
	})
}
