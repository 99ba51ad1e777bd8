package extauthz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	pathpkg "path"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
)

// FuzzCheck drives the whole path from the Authorization header to the
// decision. Whatever the input: no panic, no gRPC error (the keys are
// loaded), and the answer is either an allow or a well-formed denial whose
// reason is in the closed set.
//
//	go test -run '^$' -fuzz '^FuzzCheck$' -fuzztime 30s ./extauthz
func FuzzCheck(f *testing.F) {
	iss := tokentest.NewServer(f, audience)
	headers, _ := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries:    1000,
		UnknownKIDInterval: time.Hour,
		Derive:             extauthz.Derive(headers, nil, nil),
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := v.Refresh(f.Context(), "a"); err != nil {
		f.Fatal(err)
	}
	srv := newServer(f, extauthz.Options{Verifier: v, Headers: headers})

	valid, _ := iss.Mint("user", time.Hour, map[string]any{"roles": []any{"a", "b"}})
	for _, seed := range []string{
		"", "Bearer", "Bearer ", "bearer " + valid, "Bearer " + valid, "Basic Zm9vOmJhcg==",
		"Bearer a.b.c", "Bearer " + valid + "x", "Bearer " + valid[:len(valid)/2],
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer \x00\xff", "Bearer a..c",
	} {
		f.Add(seed)
	}
	reasons := map[string]bool{}
	for _, r := range extauthz.Reasons() {
		reasons[r.String()] = true
	}
	f.Fuzz(func(t *testing.T, authorization string) {
		req := checkRequest(map[string]string{"authorization": authorization})
		resp, err := srv.Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check(%q) returned a gRPC error: %v", authorization, err)
		}
		roundTrip(t, resp) // the server's codec encodes it faithfully
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		if !reasons[reason] {
			t.Fatalf("reason %q is not in the closed set", reason)
		}
		switch codes.Code(resp.GetStatus().GetCode()) {
		case codes.OK:
			if resp.GetOkResponse() == nil || reason != "allowed" {
				t.Fatalf("OK status without an allow: %v", resp)
			}
		case codes.Unauthenticated:
			checkDenial(t, resp, reason)
		default:
			t.Fatalf("unexpected status %v", resp.GetStatus())
		}
	})
}

func checkDenial(t *testing.T, resp *authv3.CheckResponse, reason string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != 401 {
		t.Fatalf("denial without a 401: %v", resp)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["reason"] != reason {
		t.Fatalf("denial body %q does not carry reason %q", d.GetBody(), reason)
	}
}

// fuzzPolicyServer is the policy fuzzers' server, and a valid token for
// it: /public is public, /internal denied, /docs/[a-z]+ on *.example.com
// public, the rest needs a valid token.
func fuzzPolicyServer(f *testing.F) (*extauthz.Server, string) {
	iss := tokentest.NewServer(f, audience)
	headers, _ := policy.NewHeaderMap(nil)
	issuers := []policy.IssuerInfo{{Name: "a", Iss: iss.URL}}
	set, err := policy.Compile(policy.Options{Unmatched: policy.UnmatchedAuthenticated, Issuers: issuers,
		Policies: map[string][]policy.RuleSpec{"default": {
			{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
			{Name: "internal", Match: policy.MatchSpec{PathPrefix: "/internal"}, Access: "deny"},
			{Name: "docs", Match: policy.MatchSpec{Host: "*.example.com", PathRegex: "/docs/[a-z]+"}, Access: "public"},
		}}})
	if err != nil {
		f.Fatal(err)
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries: 1000, UnknownKIDInterval: time.Hour,
		Derive: extauthz.Derive(headers, nil, policy.NewSubjects(issuers, set.NeedsClaims())),
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := v.Refresh(f.Context(), "a"); err != nil {
		f.Fatal(err)
	}
	valid, err := iss.Mint("user", time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	return newServer(f, extauthz.Options{Verifier: v, Headers: headers, Policy: func() *policy.Set { return set }}), valid
}

// FuzzCheckPolicy drives a server with a route policy from the request
// line: method, host, path and token. Whatever the input: no panic, no
// gRPC error, a reason from the closed set, an allow only with an OK
// status; and a path that any upstream could read as under /internal (the
// deny rule: every escape decoded, ';' parameters dropped or kept, dot
// segments resolved) is never let through.
//
//	go test -run '^$' -fuzz FuzzCheckPolicy -fuzztime 30s ./extauthz
func FuzzCheckPolicy(f *testing.F) {
	srv, valid := fuzzPolicyServer(f)
	for _, p := range []string{"/public/x", "/public/../internal/x", "/public/%2e%2e/internal", "/public/..;/internal",
		"/public/.%2e/internal", "/internal", "//internal", "/public/%2F../internal", "/%69nternal/x",
		"/public;x=1/../internal", "/public/%252e%252e/internal", "/docs/abc?x=/internal", "/public\\..\\internal", "/./internal", "/public/.."} {
		f.Add("GET", "api.example.com", p, valid)
	}
	reasons := map[string]bool{}
	for _, r := range extauthz.Reasons() {
		reasons[r.String()] = true
	}
	f.Fuzz(func(t *testing.T, method, host, path, tok string) {
		req := checkRequest(map[string]string{"authorization": "Bearer " + tok})
		h := req.Attributes.Request.Http
		h.Method, h.Host, h.Path = method, host, path
		resp, err := srv.Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check returned a gRPC error: %v", err)
		}
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		if !reasons[reason] {
			t.Fatalf("reason %q is not in the closed set", reason)
		}
		allowed := codes.Code(resp.GetStatus().GetCode()) == codes.OK
		if allowed != (resp.GetOkResponse() != nil) {
			t.Fatalf("status %v with answer %v", resp.GetStatus(), resp.GetHttpResponse())
		}
		if allowed && underInternal(path) {
			t.Fatalf("%q reads as under /internal (the deny rule) and is allowed (%s)", path, reason)
		}
	})
}

// underInternal: some reading of path, as an upstream may take it, is
// /internal or under it: every escape decoded (once or twice), '\' read as
// '/', ';' parameters dropped from each segment or kept, dot segments
// resolved, repeated slashes merged. (Paths are case-sensitive, as RFC
// 3986 and Envoy's routes have them: /INTERNAL is another path.)
func underInternal(p string) bool {
	p, _, _ = strings.Cut(p, "?")
	p, _, _ = strings.Cut(p, "#")
	readings := []string{p}
	for range 2 {
		if d, err := url.PathUnescape(readings[len(readings)-1]); err == nil {
			readings = append(readings, d)
		}
	}
	for _, r := range readings {
		r = strings.ReplaceAll(r, `\`, "/")
		for _, params := range []bool{false, true} {
			segs := strings.Split(r, "/")
			if params {
				for i, s := range segs {
					segs[i], _, _ = strings.Cut(s, ";")
				}
			}
			c := pathpkg.Clean("/" + strings.Join(segs, "/"))
			if c == "/internal" || strings.HasPrefix(c, "/internal/") {
				return true
			}
		}
	}
	return false
}

// FuzzHTTPEndpoint: whatever a client or a proxy sends to the HTTP
// endpoint, in each mode, the answer is a decision with a reason from the
// closed set (or 503 undecided), and it is the gRPC path's decision about
// the request the mode's own source names: no header of another mode, no
// request line where a header rules, changes it. An allow is never given
// for a path under the deny rule.
func FuzzHTTPEndpoint(f *testing.F) {
	srv, valid := fuzzPolicyServer(f)
	handlers := map[extauthz.HTTPMode]http.Handler{}
	for _, m := range []extauthz.HTTPMode{extauthz.HTTPModeEnvoy, extauthz.HTTPModeForwarded, extauthz.HTTPModeNginx} {
		h, err := srv.HTTPHandler(extauthz.HTTPOptions{Mode: m})
		if err != nil {
			f.Fatal(err)
		}
		handlers[m] = h
	}
	for _, p := range []string{"/public/x", "/public/../internal/x", "/internal", "/public/%2e%2e/internal", "/public/..;/internal"} {
		f.Add(uint8(0), "GET", "api.example.com", p, "/public", valid)
		f.Add(uint8(1), "GET", "api.example.com", p, "/public", valid)
		f.Add(uint8(2), "POST", "api.example.com", p, "/public", valid)
	}
	reasons := map[string]bool{}
	for _, r := range extauthz.Reasons() {
		reasons[r.String()] = true
	}
	f.Fuzz(func(t *testing.T, modeByte uint8, method, host, target, decoy, tok string) {
		mode := extauthz.HTTPMode(modeByte % 3)
		// The decoy goes where another mode would read the path.
		hr := httptest.NewRequest("GET", "/authz", nil)
		hr.Host = "tokengate.internal"
		hr.Header = http.Header{"Authorization": {"Bearer " + tok}}
		switch mode {
		case extauthz.HTTPModeEnvoy:
			hr.Method, hr.Host, hr.RequestURI = method, host, target
			hr.Header["X-Forwarded-Uri"] = []string{decoy}
			hr.Header["X-Original-Uri"] = []string{decoy}
		case extauthz.HTTPModeForwarded:
			setAuthQuery(hr, decoy)
			hr.Header["X-Forwarded-Method"] = []string{method}
			hr.Header["X-Forwarded-Host"] = []string{host}
			hr.Header["X-Forwarded-Uri"] = []string{target}
			hr.Header["X-Original-Uri"] = []string{decoy}
		case extauthz.HTTPModeNginx:
			setAuthQuery(hr, decoy)
			hr.Host = host
			hr.Header["X-Original-Method"] = []string{method}
			hr.Header["X-Original-Uri"] = []string{target}
			hr.Header["X-Forwarded-Uri"] = []string{decoy}
		}
		rec := httptest.NewRecorder()
		handlers[mode].ServeHTTP(rec, hr)
		// The endpoint writes its names in lower case, as they go on the wire.
		var reason string
		if v := rec.Header()[extauthz.HeaderReason]; len(v) == 1 {
			reason = v[0]
		}
		if rec.Code == http.StatusServiceUnavailable && reason == "" {
			return // undecided: nothing here leaves keys unloaded, but it is no allow
		}
		if !reasons[reason] {
			t.Fatalf("reason %q is not in the closed set (status %d)", reason, rec.Code)
		}
		if reason == "request_invalid" {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("request_invalid with status %d", rec.Code)
			}
			return
		}
		// The gRPC path's decision about the same request.
		req := checkRequest(map[string]string{"authorization": "Bearer " + tok})
		h := req.Attributes.Request.Http
		h.Method, h.Host, h.Path = method, host, target
		resp, err := srv.Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		want := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
		if reason != want {
			t.Fatalf("%s mode: %s over HTTP, %s over gRPC (method %q host %q target %q)", mode, reason, want, method, host, target)
		}
		if rec.Code == http.StatusOK && underInternal(target) {
			t.Fatalf("%q reads as under /internal and is allowed (%s)", target, reason)
		}
	})
}

// setAuthQuery puts a decoy in the auth request's query, where Caddy's
// forward_auth leaves the client's: as a policy name, and as itself.
func setAuthQuery(hr *http.Request, decoy string) {
	q := url.Values{"policy": {decoy}}.Encode() + "&" + url.QueryEscape(decoy)
	hr.RequestURI = "/check?" + q
	hr.URL = &url.URL{Path: "/check", RawQuery: q}
}
