package extauthz_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// introspectionEnv is a Check server over real gRPC with an introspection
// route at /oauth2/introspect and a real store behind its revocations.
type introspectionEnv struct {
	*revocationEnv
	client authv3.AuthorizationClient
}

const introspectMaxBytes = 4096

func newIntrospectionEnv(t *testing.T) *introspectionEnv {
	t.Helper()
	e := &introspectionEnv{revocationEnv: newRevocationEnv(t, false)}
	routes, err := policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{{PathPrefix: "/oauth2/introspect"}})
	if err != nil {
		t.Fatal(err)
	}
	headers, _ := policy.NewHeaderMap(nil)
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}, CacheMaxEntries: 100, MaxTokenBytes: introspectMaxBytes,
		Derive: extauthz.Derive(headers, e.index, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	e.client = serveGRPC(t, newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index,
		MaxStaleness: time.Minute, IntrospectionRoutes: routes, MaxTokenBytes: introspectMaxBytes}))
	return e
}

// introspectionMarker is the context_extensions entry Envoy's
// introspection route sets (envoy/envoy.yaml).
var introspectionMarker = map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection}

// introspect sends POST path with body and content type, and the caller's
// client authentication (HTTP Basic), as a resource server would, through
// Envoy's introspection route (its context_extensions marker).
func (e *introspectionEnv) introspect(t *testing.T, path, contentType, body string, raw bool) *authv3.CheckResponse {
	t.Helper()
	return e.post(t, path, "Basic cnM6c2VjcmV0", contentType, body, raw, true)
}

// post sends POST path with the given Authorization, content type and
// body; marked: with Envoy's introspection route marker.
func (e *introspectionEnv) post(t *testing.T, path, authorization, contentType, body string, raw, marked bool) *authv3.CheckResponse {
	t.Helper()
	headers := map[string]string{"x-auth-subject": "admin"}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	if contentType != "" {
		headers["content-type"] = contentType
	}
	req := checkRequest(headers)
	h := req.Attributes.Request.Http
	h.Method, h.Host, h.Path = "POST", "auth.example.com", path
	if raw {
		h.RawBody = []byte(body)
	} else {
		h.Body = body
	}
	if marked {
		req.Attributes.ContextExtensions = introspectionMarker
	}
	resp, err := e.client.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

const formType = "application/x-www-form-urlencoded"

func form(tok string) string {
	return url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
}

// TestIntrospectionRoute: on an introspection route, the token in the
// form body decides. Revoked, expired or otherwise invalid for a configured
// issuer: tokengate answers 200 {"active":false} itself (RFC 7662 §2.2).
// Anything else goes on to the IdP, which needs no bearer token from the
// caller.
func TestIntrospectionRoute(t *testing.T) {
	e := newIntrospectionEnv(t)
	claims := e.iss.Claims("user-1", 10*time.Minute)
	valid := mint(t, e.iss, claims, nil)
	revokedClaims := e.iss.Claims("user-2", 10*time.Minute)
	revoked := mint(t, e.iss, revokedClaims, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: revokedClaims["jti"].(string)})
	expired := e.iss.Claims("user-1", 10*time.Minute)
	expired["iat"], expired["exp"] = time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
	other := tokentest.NewServer(t, audience) // an issuer tokengate does not know
	forged := swapSignature(valid, mint(t, e.iss, e.iss.Claims("admin", 10*time.Minute), nil))

	inactive := map[string]string{
		"revoked":           form(revoked),
		"revoked raw_body":  "raw:" + form(revoked),
		"expired":           form(mint(t, e.iss, expired, nil)),
		"invalid signature": form(forged),
		"charset parameter": "charset:" + form(revoked),
	}
	for name, body := range inactive {
		t.Run("inactive/"+name, func(t *testing.T) {
			ct, raw := formType, false
			if b, ok := strings.CutPrefix(body, "raw:"); ok {
				body, raw = b, true
			}
			if b, ok := strings.CutPrefix(body, "charset:"); ok {
				body, ct = b, formType+"; charset=UTF-8"
			}
			resp := e.introspect(t, "/oauth2/introspect", ct, body, raw)
			d := resp.GetDeniedResponse()
			if resp.GetStatus().GetCode() == 0 || d == nil {
				t.Fatalf("got %v, want a denial (answered by tokengate)", resp)
			}
			if got := d.GetStatus().GetCode(); got != 200 {
				t.Errorf("HTTP status = %d, want 200", got)
			}
			if d.GetBody() != `{"active":false}` {
				t.Errorf("body = %q, want {\"active\":false}", d.GetBody())
			}
			got := map[string]string{}
			for _, h := range d.GetHeaders() {
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if got["content-type"] != "application/json" || got["cache-control"] != "no-store" {
				t.Errorf("headers = %v, want content-type application/json and cache-control no-store", got)
			}
			if _, ok := got["www-authenticate"]; ok {
				t.Errorf("headers = %v: an inactive answer is no challenge", got)
			}
			if r := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); r != "introspection_inactive" {
				t.Errorf("reason = %q, want introspection_inactive", r)
			}
		})
	}

	huge := strings.Repeat("a", introspectMaxBytes+1)
	passed := map[string]struct{ path, ct, body string }{
		"valid":                   {"/oauth2/introspect", formType, form(valid)},
		"unknown issuer":          {"/oauth2/introspect", formType, form(mint(t, other, other.Claims("user-1", 10*time.Minute), nil))},
		"opaque refresh token":    {"/oauth2/introspect", formType, "token=Zm9vYmFy-opaque&token_type_hint=refresh_token"},
		"no body":                 {"/oauth2/introspect", formType, ""},
		"no token field":          {"/oauth2/introspect", formType, "token_type_hint=access_token"},
		"empty token":             {"/oauth2/introspect", formType, "token="},
		"two tokens":              {"/oauth2/introspect", formType, form(revoked) + "&token=" + valid},
		"not a form":              {"/oauth2/introspect", "application/json", `{"token":"` + revoked + `"}`},
		"no content type":         {"/oauth2/introspect", "", form(revoked)},
		"bad escape":              {"/oauth2/introspect", formType, "token=%zz&" + form(revoked)},
		"oversized token":         {"/oauth2/introspect", formType, "token=" + huge},
		"oversized body, revoked": {"/oauth2/introspect", formType, form(revoked) + "&pad=" + strings.Repeat("p", 4*introspectMaxBytes+8192)},
	}
	for name, tc := range passed {
		t.Run("passed/"+name, func(t *testing.T) {
			resp := e.introspect(t, tc.path, tc.ct, tc.body, false)
			ok := resp.GetOkResponse()
			if resp.GetStatus().GetCode() != 0 || ok == nil {
				t.Fatalf("got %v, want the request let on to the IdP", resp)
			}
			if len(ok.GetHeaders()) > 0 {
				t.Errorf("sets headers %v, want none (no identity on an introspection route)", ok.GetHeaders())
			}
			for _, h := range ok.GetHeadersToRemove() {
				if h == "authorization" {
					t.Errorf("removes authorization: the caller's client authentication is the IdP's")
				}
			}
			md := resp.GetDynamicMetadata().GetFields()
			if r := md["reason"].GetStringValue(); r != "introspection_passed" {
				t.Errorf("reason = %q, want introspection_passed", r)
			}
			for _, k := range []string{"sub", "iss", "jti"} {
				if _, ok := md[k]; ok {
					t.Errorf("metadata has %s: no identity on an introspection route", k)
				}
			}
		})
	}

	// A partial body (Envoy's allow_partial_message) is passed on: the
	// token in it may be cut short.
	t.Run("passed/partial body", func(t *testing.T) {
		req := checkRequest(map[string]string{"content-type": formType, "x-envoy-auth-partial-body": "true"})
		h := req.Attributes.Request.Http
		h.Method, h.Path, h.Body = "POST", "/oauth2/introspect", form(revoked)
		req.Attributes.ContextExtensions = introspectionMarker
		resp, err := e.client.Check(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() == nil {
			t.Errorf("got %v, want passed on", resp)
		}
	})

	// Elsewhere, the revoked token in a body changes nothing: a request
	// needs its bearer token, and Basic is none.
	t.Run("other route needs a bearer token", func(t *testing.T) {
		resp := e.introspect(t, "/oauth2/token", formType, form(valid), false)
		if r := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); r != "token_missing" {
			t.Errorf("reason = %q, want token_missing", r)
		}
	})
}

// TestIntrospectionNeedsEnvoyMarker: only Envoy's introspection route (the
// one that forwards to the IdP with the body) marks a request as an
// introspection. A path tokengate's introspection_routes matches but Envoy
// sends elsewhere (the catch-all to the protected app) carries no marker
// and gets the normal check: a bearer token is required, and a revoked one
// is denied. Neither the marker alone nor the path alone exempts a request.
func TestIntrospectionNeedsEnvoyMarker(t *testing.T) {
	e := newIntrospectionEnv(t)
	claims := e.iss.Claims("user-2", 10*time.Minute)
	revoked := mint(t, e.iss, claims, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
	valid := mint(t, e.iss, e.iss.Claims("user-1", 10*time.Minute), nil)

	reason := func(resp *authv3.CheckResponse) string {
		return resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
	}
	for _, path := range []string{"/oauth2/introspect/admin/delete-user", "/oauth2/introspect;x", "/oauth2/introspect/", "/oauth2/introspect"} {
		for _, tc := range []struct{ name, auth, want string }{
			{"revoked bearer", "Bearer " + revoked, "token_revoked"},
			{"no authorization", "", "token_missing"},
			{"basic", "Basic cnM6c2VjcmV0", "token_missing"},
		} {
			t.Run("unmarked "+path+" "+tc.name, func(t *testing.T) {
				resp := e.post(t, path, tc.auth, formType, "", false, false)
				if resp.GetOkResponse() != nil || resp.GetStatus().GetCode() == 0 {
					t.Fatalf("got %v, want denied: no marker, so the normal check", resp)
				}
				if got := reason(resp); got != tc.want {
					t.Errorf("reason = %q, want %s", got, tc.want)
				}
			})
		}
		t.Run("unmarked "+path+" revoked token in body", func(t *testing.T) {
			// Not an introspection: the body's revoked token is no answer.
			resp := e.post(t, path, "Bearer "+valid, formType, form(revoked), false, false)
			if resp.GetOkResponse() == nil || reason(resp) != "allowed" {
				t.Errorf("got %s %v, want allowed (a valid bearer token, the normal check)", reason(resp), resp)
			}
		})
	}
	t.Run("marked, exact path", func(t *testing.T) {
		if got := reason(e.post(t, "/oauth2/introspect", "", formType, form(revoked), false, true)); got != "introspection_inactive" {
			t.Errorf("reason = %q, want introspection_inactive", got)
		}
		if got := reason(e.post(t, "/oauth2/introspect", "", formType, form(valid), false, true)); got != "introspection_passed" {
			t.Errorf("reason = %q, want introspection_passed", got)
		}
	})
	t.Run("marked, path not an introspection route", func(t *testing.T) {
		resp := e.post(t, "/admin/delete-user", "Bearer "+revoked, formType, form(valid), false, true)
		if got := reason(resp); got != "token_revoked" || resp.GetOkResponse() != nil {
			t.Errorf("reason = %q, want token_revoked (the marker alone exempts nothing)", got)
		}
	})
	t.Run("other marker value", func(t *testing.T) {
		req := checkRequest(map[string]string{"content-type": formType})
		h := req.Attributes.Request.Http
		h.Method, h.Path, h.Body = "POST", "/oauth2/introspect", form(valid)
		req.Attributes.ContextExtensions = map[string]string{extauthz.RouteMarkerKey: "api", "route": "introspect"}
		resp, err := e.client.Check(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got := reason(resp); got != "token_missing" {
			t.Errorf("reason = %q, want token_missing", got)
		}
	})
}
