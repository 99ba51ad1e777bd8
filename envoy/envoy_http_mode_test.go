package envoy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// No Envoy binary runs in these tests, so envoyHTTPMode plays its part:
// what Envoy's ext_authz filter in HTTP mode does with a client request
// and tokengate's answer, step for step as Envoy's source does it
// (source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc,
// RawHttpClientImpl::check and toResponse; source/extensions/filters/http/
// ext_authz/ext_authz.cc, Filter::onComplete), driven by a shipped
// configuration. The answers come from tokengate's real HTTP endpoint.
type envoyHTTPMode struct {
	ext  *extauthzv3.ExtAuthz
	addr string // tokengate's authz_http listener
}

// clientRequest is what a client sends through Envoy; header names in
// lower case, as Envoy holds them.
type clientRequest struct {
	method, path, host string
	headers            [][2]string
}

// outcome is what Envoy does with a client request: answers it itself
// (status, headers, body) or sends it upstream with these headers.
type outcome struct {
	upstream   [][2]string // nil: not sent upstream
	status     int
	headers    http.Header
	body       string
	authzPath  string // the path tokengate was asked about
	authzHeads []string
}

func (o outcome) upstreamValues(name string) []string {
	var out []string
	for _, h := range o.upstream {
		if h[0] == name {
			out = append(out, h[1])
		}
	}
	return out
}

func (e envoyHTTPMode) do(t *testing.T, r clientRequest) outcome {
	t.Helper()
	hs := e.ext.GetHttpService()

	// RawHttpClientImpl::check: content-length 0, then the CheckRequest's
	// headers (repeated ones joined with ",") that the matchers allow;
	// authorization, :method, :path and :authority always.
	joined := map[string]string{}
	var order []string
	for _, h := range r.headers {
		if v, ok := joined[h[0]]; ok {
			joined[h[0]] = v + "," + h[1]
			continue
		}
		joined[h[0]] = h[1]
		order = append(order, h[0])
	}
	var b bytes.Buffer
	path := hs.GetPathPrefix() + r.path
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: 0\r\nconnection: close\r\n", r.method, path, r.host)
	var sent []string
	for _, k := range order {
		allowed := k == "authorization" || matches(e.ext.GetAllowedHeaders(), k)
		if !allowed || matches(e.ext.GetDisallowedHeaders(), k) {
			continue
		}
		sent = append(sent, k)
		fmt.Fprintf(&b, "%s: %s\r\n", k, joined[k])
	}
	b.WriteString("\r\n")
	resp, body := roundTrip(t, e.addr, b.Bytes())
	o := outcome{authzPath: path, authzHeads: sent}

	// toResponse: any 5xx is an error (status_on_error, empty body, no
	// headers: Filter::onComplete, CheckStatus::Error).
	if resp.StatusCode >= 500 {
		if e.ext.GetFailureModeAllow() {
			t.Fatal("failure_mode_allow: the request would go on unchecked")
		}
		o.status = int(e.ext.GetStatusOnError().GetCode())
		if o.status == 0 {
			o.status = http.StatusForbidden
		}
		return o
	}
	answer := lowerHeaders(resp.Header)
	var remove []string
	if resp.StatusCode == http.StatusOK {
		for _, v := range answer["x-envoy-auth-headers-to-remove"] {
			for n := range strings.SplitSeq(v, ",") {
				if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
					remove = append(remove, n)
				}
			}
		}
	}
	delete(answer, "x-envoy-auth-headers-to-remove")
	ar := hs.GetAuthorizationResponse()
	if resp.StatusCode != http.StatusOK {
		// Denied: tokengate's status and body, and the headers the client
		// list lets through.
		o.status, o.body, o.headers = resp.StatusCode, body, http.Header{}
		for k, vs := range answer {
			if clientHeaderPassed(ar.GetAllowedClientHeaders(), k) {
				o.headers[http.CanonicalHeaderKey(k)] = vs
			}
		}
		return o
	}
	// OK: set (setCopy: every earlier value replaced) what
	// allowed_upstream_headers matches, add what ..._to_append matches,
	// then remove the listed names (not pseudo-headers, not host).
	up := slices.Clone(r.headers)
	for k, vs := range answer {
		if matches(ar.GetAllowedUpstreamHeaders(), k) {
			up = slices.DeleteFunc(up, func(h [2]string) bool { return h[0] == k })
			up = append(up, [2]string{k, vs[len(vs)-1]})
		}
		if matches(ar.GetAllowedUpstreamHeadersToAppend(), k) {
			for _, v := range vs {
				up = append(up, [2]string{k, v})
			}
		}
	}
	for _, n := range remove {
		if !strings.HasPrefix(n, ":") && n != "host" {
			up = slices.DeleteFunc(up, func(h [2]string) bool { return h[0] == n })
		}
	}
	o.status, o.upstream = http.StatusOK, up
	return o
}

func lowerHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, vs := range h {
		out[strings.ToLower(k)] = vs
	}
	return out
}

// roundTrip writes a raw HTTP/1.1 request (Go's client would clean the
// path) and reads the answer.
func roundTrip(t *testing.T, addr string, req []byte) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// istioExtAuthz is the ext_authz filter Istio makes of an envoyExtAuthzHttp
// provider: its header patterns ("abc", "abc*", "*abc") as Envoy matchers.
func istioExtAuthz(t *testing.T, p *httpProvider) *extauthzv3.ExtAuthz {
	t.Helper()
	list := func(patterns []string) *matcherv3.ListStringMatcher {
		if len(patterns) == 0 {
			return nil
		}
		l := &matcherv3.ListStringMatcher{}
		for _, p := range patterns {
			m := &matcherv3.StringMatcher{}
			switch {
			case strings.HasSuffix(p, "*"):
				m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(p, "*")}
			case strings.HasPrefix(p, "*"):
				m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(p, "*")}
			default:
				m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: p}
			}
			l.Patterns = append(l.Patterns, m)
		}
		return l
	}
	var code typev3.StatusCode
	if _, err := fmt.Sscan(p.StatusOnError, &code); err != nil {
		t.Fatalf("statusOnError %q: %v", p.StatusOnError, err)
	}
	return &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			PathPrefix: p.PathPrefix,
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders: list(p.HeadersToUpstreamOnAllow),
				AllowedClientHeaders:   list(p.HeadersToDownstreamOnDeny),
			},
		}},
		AllowedHeaders:   list(p.IncludeRequestHeadersInCheck),
		FailureModeAllow: p.FailOpen,
		StatusOnError:    &typev3.HttpStatus{Code: code},
	}
}

// TestEnvoyHTTPModeKeepsIdentityHonest sends hostile and ordinary requests
// through envoy-http.yaml's filter and the Istio tokengate-http provider,
// as Envoy runs them, to tokengate's real HTTP endpoint (envoy mode), with
// real signed tokens and a real revocation index: the upstream gets
// tokengate's identity and never a client's, a denial reaches the client
// with its challenge and reason, and a tokengate that cannot decide fails
// closed.
func TestEnvoyHTTPModeKeepsIdentityHonest(t *testing.T) {
	const aud = "app"
	iss := tokentest.NewServer(t, aud)
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"}) // tokengate.compose.yaml's
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	revocations := storage.NewIndex()
	if _, err := revocations.Apply([]storage.Change{{Seq: 1, Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindToken, Issuer: iss.URL, Key: "jti-revoked", ExpiresAt: now.Add(2 * time.Hour),
	}}}); err != nil {
		t.Fatal(err)
	}
	verifier, err := token.New(token.Options{
		Issuers:         []token.Issuer{{Name: "a", Issuer: iss.URL, Audiences: []string{aud}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries: 100,
		Derive:          extauthz.Derive(headers, revocations, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifier.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	serve := func(loaded bool) string {
		srv, err := extauthz.NewServer(extauthz.Options{Verifier: verifier, Headers: headers, Revocations: revocations,
			Loaded: func() bool { return loaded }, MaxStaleness: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		h, err := srv.HTTPHandler(extauthz.HTTPOptions{Mode: extauthz.HTTPModeEnvoy})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(h)
		t.Cleanup(hs.Close)
		return hs.Listener.Addr().String()
	}
	ready, undecided := serve(true), serve(false)

	mint := func(jti string, claims jwt.MapClaims) string {
		c := jwt.MapClaims{"iss": iss.URL, "aud": aud, "sub": "user-1", "jti": jti,
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
		for k, v := range claims {
			c[k] = v
		}
		s, err := iss.Sign(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s
	}
	withRoles, noRoles := mint("jti-1", jwt.MapClaims{"roles": []string{"reader"}}), mint("jti-2", nil)
	revoked := mint("jti-revoked", nil)
	spoofs := [][2]string{{"x-auth-subject", "admin"}, {"x-auth-issuer", "https://evil.example"},
		{"x-auth-token-id", "forged"}, {"x-auth-roles", "admin"}}

	b, err := loadBootstrap(readFile(t, "envoy-http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var provider *httpProvider
	docs, err := decodeAll(readFile(t, "istio/mesh-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range docs {
		var s meshSpec
		if err := o.Spec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.MeshConfig.ExtensionProviders {
			if p.EnvoyExtAuthzHttp != nil {
				provider = p.EnvoyExtAuthzHttp
			}
		}
	}
	if provider == nil {
		t.Fatal("mesh-config.yaml: no envoyExtAuthzHttp provider")
	}
	configs := map[string]*extauthzv3.ExtAuthz{"envoy-http.yaml": httpExtAuthz(t, b), "istio tokengate-http": istioExtAuthz(t, provider)}

	for name, ext := range configs {
		t.Run(name, func(t *testing.T) {
			envoy := envoyHTTPMode{ext: ext, addr: ready}
			req := func(authz string, extra ...[2]string) clientRequest {
				h := [][2]string{{"x-request-id", "req-1"}}
				if authz != "" {
					h = append(h, [2]string{"authorization", authz})
				}
				return clientRequest{method: "GET", path: "/orders?id=1", host: "api.example.com", headers: append(h, extra...)}
			}

			t.Run("identity set over the client's copies", func(t *testing.T) {
				o := envoy.do(t, req(withRoles, spoofs...))
				for h, want := range map[string]string{"x-auth-subject": "user-1", "x-auth-issuer": iss.URL,
					"x-auth-token-id": "jti-1", "x-auth-roles": "reader"} {
					if got := o.upstreamValues(h); !slices.Equal(got, []string{want}) {
						t.Errorf("upstream %s: got %q, want [%q] (status %d)", h, got, want, o.status)
					}
				}
				if !slices.Contains(o.authzHeads, "x-request-id") {
					t.Errorf("tokengate got %q, want x-request-id among them", o.authzHeads)
				}
			})
			t.Run("unfilled managed header removed", func(t *testing.T) {
				o := envoy.do(t, req(noRoles, spoofs...))
				if o.upstream == nil {
					t.Fatalf("not sent upstream: %d %s", o.status, o.body)
				}
				if got := o.upstreamValues("x-auth-roles"); len(got) != 0 {
					t.Errorf("upstream x-auth-roles: got %q, want none (the token has no roles)", got)
				}
				if got := o.upstreamValues("x-auth-subject"); !slices.Equal(got, []string{"user-1"}) {
					t.Errorf("upstream x-auth-subject: got %q", got)
				}
			})
			for _, tc := range []struct {
				name, authz, reason string
				status              int
				extra               [][2]string
			}{
				{"revoked", revoked, "token_revoked", http.StatusUnauthorized, spoofs},
				{"no token", "", "token_missing", http.StatusUnauthorized, spoofs},
				// Envoy's REJECT_REQUEST refuses it first; tokengate is the
				// second line, for a listener without it.
				{"underscore variant", withRoles, "header_invalid", http.StatusBadRequest, [][2]string{{"x_auth_subject", "admin"}}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					o := envoy.do(t, req(tc.authz, tc.extra...))
					if o.upstream != nil || o.status != tc.status {
						t.Fatalf("got %d (upstream %v), want %d, not sent upstream", o.status, o.upstream != nil, tc.status)
					}
					if got := o.headers.Get(extauthz.HeaderReason); got != tc.reason {
						t.Errorf("client's %s: got %q, want %q", extauthz.HeaderReason, got, tc.reason)
					}
					if !strings.Contains(o.body, `"reason":"`+tc.reason+`"`) || o.headers.Get("Content-Type") != "application/json" {
						t.Errorf("client's body %q, content-type %q: want tokengate's JSON", o.body, o.headers.Get("Content-Type"))
					}
					if tc.status == http.StatusUnauthorized && !strings.Contains(o.headers.Get("WWW-Authenticate"), `Bearer realm="tokengate"`) {
						t.Errorf("client's www-authenticate: %q, want tokengate's challenge", o.headers.Get("WWW-Authenticate"))
					}
				})
			}
			t.Run("cannot decide", func(t *testing.T) {
				o := envoyHTTPMode{ext: ext, addr: undecided}.do(t, req(withRoles))
				if o.upstream != nil || o.status != http.StatusServiceUnavailable || o.body != "" {
					t.Errorf("got %d, body %q, upstream %v; want status_on_error 503, empty (Envoy keeps no 5xx body), not sent upstream",
						o.status, o.body, o.upstream != nil)
				}
			})
		})
	}
}
