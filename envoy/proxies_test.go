package envoy_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The managed identity headers of the rig's configuration (the example
// configuration's): the three identity headers and two claim_headers.
var rigManagedHeaders = []string{"X-Auth-Subject", "X-Auth-Issuer", "X-Auth-Token-Id", "X-Auth-Roles", "X-Auth-Tenant"}

// spoofed is a client's attempt to claim an identity: every managed header.
func spoofed() map[string]string {
	h := map[string]string{}
	for _, name := range rigManagedHeaders {
		h[name] = "spoofed"
	}
	return h
}

// underscored are the managed names with '_' for '-', which CGI, WSGI and
// PHP upstreams read as the same variable.
func underscored() map[string]string {
	h := map[string]string{}
	for _, name := range rigManagedHeaders {
		h[strings.ReplaceAll(strings.ToLower(name), "-", "_")] = "spoofed"
	}
	return h
}

func merge(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// noSpoofedHeader fails t if any header of s is a managed one (in any
// spelling) with a value the client sent.
func noSpoofedHeader(t *testing.T, what string, s seenRequest) {
	t.Helper()
	for name, vals := range s.Header {
		norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		for _, m := range rigManagedHeaders {
			if norm == strings.ToLower(m) {
				for _, v := range vals {
					if strings.Contains(v, "spoofed") || strings.Contains(v, "{") {
						t.Errorf("%s: the upstream got %s: %q (the client's or no value of tokengate's)", what, name, v)
					}
				}
			}
		}
	}
}

// denial is a denial's JSON body (tokengate's, or nginx's rewrite of it).
type denial struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

func decodeDenial(body string) denial {
	var d denial
	_ = json.Unmarshal([]byte(body), &d) // a body that is no JSON has no reason
	return d
}

func wantDenial(t *testing.T, what string, got proxyAnswer, status int, reason string) {
	t.Helper()
	if d := decodeDenial(got.body); got.status != status || d.Reason != reason {
		t.Errorf("%s: %d %q, want %d with a JSON body of reason %s", what, got.status, got.body, status, reason)
	}
	if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// proxyRig is one proxy in front of tokengate and the upstream.
type proxyRig struct {
	proxy *child
	addr  string // the proxy's listener
	tg    *tokengateProc
	up    *echoUpstream
}

// proveProxy runs the behaviours of issue #11 §3 through a proxy: allow
// with identity, revoked, logout, route policy, spoofed identity headers,
// spoofed original-request headers of either mode, 400 and 503 answers,
// and, last, tokengate stopped.
func proveProxy(t *testing.T, r *proxyRig) {
	alice := r.tg.mint(t, "alice", map[string]any{"roles": []any{"clerk"}, "tid": "acme"})
	root := r.tg.mint(t, "root", map[string]any{"roles": []any{"admin", "clerk"}, "tid": "acme"})
	plain := r.tg.mint(t, "plain", nil) // no roles, no tid: two managed headers tokengate does not fill

	t.Run("valid token reaches the upstream with the identity headers", func(t *testing.T) {
		got := send(t, r.addr, "GET", "/orders/7?page=2", "valid", merge(bearer(alice), spoofed()), "")
		s, ok := r.up.reached("valid")
		if got.status != 200 || !ok {
			t.Fatalf("%d %s, reached %v; want 200 from the upstream", got.status, got.body, ok)
		}
		want := map[string]string{
			"X-Auth-Subject": "alice", "X-Auth-Issuer": r.tg.iss.URL, "X-Auth-Roles": "clerk", "X-Auth-Tenant": "acme",
		}
		for name, v := range want {
			if vals := s.Header.Values(name); len(vals) != 1 || vals[0] != v {
				t.Errorf("upstream %s = %q, want exactly %q", name, vals, v)
			}
		}
		if vals := s.Header.Values("X-Auth-Token-Id"); len(vals) != 1 || vals[0] == "" || vals[0] == "spoofed" {
			t.Errorf("upstream X-Auth-Token-Id = %q, want the token's jti", vals)
		}
		if s.URI != "/orders/7?page=2" || s.Header.Get("Authorization") != "Bearer "+alice {
			t.Errorf("upstream got %s with Authorization %.20q…, want the request as sent", s.URI, s.Header.Get("Authorization"))
		}
		noSpoofedHeader(t, "valid token", s)
	})

	t.Run("spoofed identity headers never reach the upstream", func(t *testing.T) {
		for name, c := range map[string]struct {
			target string
			header map[string]string
			status int
		}{
			"public route, no token":         {"/public/info", nil, 200},
			"public route, a token":          {"/public/info", bearer(alice), 200},
			"token without roles or tenant":  {"/orders/7", bearer(plain), 200},
			"protected route, no token":      {"/orders/7", nil, 401},
			"protected route, a wrong token": {"/orders/7", bearer(alice + "x"), 401},
		} {
			id := "spoof " + name
			got := send(t, r.addr, "GET", c.target, id, merge(c.header, spoofed()), "")
			s, ok := r.up.reached(id)
			if got.status != c.status || ok != (c.status == 200) {
				t.Errorf("%s: %d %s, reached the upstream %v; want %d", name, got.status, got.body, ok, c.status)
			}
			if !ok {
				continue
			}
			noSpoofedHeader(t, name, s)
			switch {
			case c.header == nil:
				for _, m := range rigManagedHeaders {
					if v := s.Header.Values(m); v != nil {
						t.Errorf("%s: upstream got %s %q, want none (anonymous)", name, m, v)
					}
				}
			case strings.HasPrefix(c.header["Authorization"], "Bearer "+plain):
				if s.Header.Get("X-Auth-Subject") != "plain" || s.Header.Values("X-Auth-Roles") != nil || s.Header.Values("X-Auth-Tenant") != nil {
					t.Errorf("%s: upstream subject %q roles %q tenant %q, want plain and none", name,
						s.Header.Get("X-Auth-Subject"), s.Header.Values("X-Auth-Roles"), s.Header.Values("X-Auth-Tenant"))
				}
			}
		}
		// Spelt with '_': nginx drops them; Caddy passes them on to
		// tokengate, which refuses the request (400 header_invalid).
		// Either way the upstream never reads them.
		for name, header := range map[string]map[string]string{
			"underscored, public route": nil,
			"underscored, a token":      bearer(alice),
		} {
			got := send(t, r.addr, "GET", "/public/info", name, merge(header, underscored()), "")
			s, ok := r.up.reached(name)
			if ok {
				noSpoofedHeader(t, name, s)
			} else if d := decodeDenial(got.body); got.status != 400 || d.Reason != "header_invalid" {
				t.Errorf("%s: %d %s, want the request without them, or 400 header_invalid", name, got.status, got.body)
			}
		}
	})

	t.Run("revoked token is 401 token_revoked with the challenge", func(t *testing.T) {
		bob := r.tg.mint(t, "bob", nil)
		if got := send(t, r.addr, "GET", "/orders/7", "bob before", bearer(bob), ""); got.status != 200 {
			t.Fatalf("before the revocation: %d %s", got.status, got.body)
		}
		jti, exp := claimsOf(t, bob)
		r.tg.revokeToken(t, jti, exp)
		got := send(t, r.addr, "GET", "/orders/7", "bob revoked", bearer(bob), "")
		wantDenial(t, "revoked", got, 401, "token_revoked")
		if c := got.header.Get("Www-Authenticate"); !strings.Contains(c, `error="invalid_token"`) || !strings.Contains(c, "token revoked") {
			t.Errorf("WWW-Authenticate %q, want tokengate's challenge (invalid_token, token revoked)", c)
		}
		if _, ok := r.up.reached("bob revoked"); ok {
			t.Errorf("the revoked token reached the upstream")
		}
	})

	t.Run("logout route revokes the token for the next request", func(t *testing.T) {
		carol := r.tg.mint(t, "carol", nil)
		got := send(t, r.addr, "POST", "/oauth2/logout", "carol logout",
			merge(bearer(carol), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}), "post_logout_redirect_uri=%2F")
		s, ok := r.up.reached("carol logout")
		if got.status != 200 || !ok {
			t.Fatalf("logout: %d %s, reached %v; want it to go on to the upstream", got.status, got.body, ok)
		}
		if s.Body != "post_logout_redirect_uri=%2F" || s.Method != "POST" {
			t.Errorf("logout reached the upstream as %s with body %q, want the POST and its body", s.Method, s.Body)
		}
		got = send(t, r.addr, "GET", "/orders/7", "carol after", bearer(carol), "")
		wantDenial(t, "after the logout", got, 401, "token_revoked")
		if _, ok := r.up.reached("carol after"); ok {
			t.Errorf("the logged-out token reached the upstream")
		}
		// Logging out again goes on to the IdP (a logout route only logs
		// out), without identity: nobody vouches for a revoked token.
		got = send(t, r.addr, "GET", "/oauth2/logout", "carol again", merge(bearer(carol), spoofed()), "")
		s, ok = r.up.reached("carol again")
		if got.status != 200 || !ok {
			t.Fatalf("logout again: %d %s, reached %v; want it to go on", got.status, got.body, ok)
		}
		noSpoofedHeader(t, "logout again", s)
		for _, m := range rigManagedHeaders {
			if v := s.Header.Values(m); v != nil {
				t.Errorf("logout again: upstream got %s %q, want none", m, v)
			}
		}
	})

	t.Run("the token does not go on where tokengate removes it", func(t *testing.T) {
		// tokengate lists authorization (and answers a rewritten cookie, or
		// lists cookie) where the upstream must not get the token: a rule
		// with forward_token: false, a revoked token's logout, a token it
		// did not accept on a public route. The proxy acts on that answer.
		frank := r.tg.mint(t, "frank", nil)
		jti, exp := claimsOf(t, frank)
		r.tg.revokeToken(t, jti, exp)
		tokenCookie := func(tok string) string { return rigTokenCookie + "=" + tok }
		// upstreamGot checks what the upstream got for the request id:
		// the identity, Authorization and Cookie given ("" none), and no
		// proxy's helper.
		upstreamGot := func(name string, got proxyAnswer, id, subject, authorization, cookie string) {
			t.Helper()
			s, ok := r.up.reached(id)
			if got.status != 200 || !ok {
				t.Errorf("%s: %d %s, reached %v; want 200 from the upstream", name, got.status, got.body, ok)
				return
			}
			if v := s.Header.Values("Authorization"); (authorization == "" && v != nil) || (authorization != "" && (len(v) != 1 || v[0] != authorization)) {
				t.Errorf("%s: the upstream got Authorization %.30q, want %.30q", name, v, authorization)
			}
			if v := s.Header.Values("Cookie"); (cookie == "" && v != nil) || (cookie != "" && (len(v) != 1 || v[0] != cookie)) {
				t.Errorf("%s: the upstream got Cookie %.60q, want %.60q", name, v, cookie)
			}
			if v := s.Header.Get("X-Auth-Subject"); v != subject {
				t.Errorf("%s: the upstream got X-Auth-Subject %q, want %q", name, v, subject)
			}
			noSpoofedHeader(t, name, s)
			for _, helper := range []string{"X-Envoy-Auth-Headers-To-Remove", "X-Tokengate-Cookie-Rewritten", "X-Tokengate-Remove", "X-Tokengate-Cookie"} {
				if v := s.Header.Values(helper); v != nil {
					t.Errorf("%s: the upstream got %s %q, a proxy's helper", name, helper, v)
				}
			}
		}
		for name, c := range map[string]struct {
			method, target string
			header         map[string]string
			subject        string // the identity the upstream gets; "" none
			authorization  string // the Authorization the upstream gets; "" none
			cookie         string // the Cookie the upstream gets; "" none
		}{
			"forward_token false, bearer": {"GET", "/internal/report", merge(bearer(alice), map[string]string{"Cookie": "theme=dark"}),
				"alice", "", "theme=dark"},
			"forward_token false, the token's cookie among others": {"GET", "/internal/report", map[string]string{"Cookie": "theme=dark; " + tokenCookie(alice) + "; lang=en"},
				"alice", "", "theme=dark; lang=en"},
			"forward_token false, the token's cookie alone": {"GET", "/internal/report", map[string]string{"Cookie": tokenCookie(alice)},
				"alice", "", ""},
			"revoked token on the logout route": {"GET", "/oauth2/logout", merge(bearer(frank), spoofed(), map[string]string{"Cookie": "idp.session=s1"}),
				"", "", "idp.session=s1"},
			"revoked token's cookie on the logout route": {"POST", "/oauth2/logout", map[string]string{"Cookie": tokenCookie(frank) + "; idp.session=s1"},
				"", "", "idp.session=s1"},
			"public route, a wrong token": {"GET", "/public/info", merge(bearer(alice+"x"), map[string]string{"Cookie": "theme=dark"}),
				"", "", "theme=dark"},
			// Where tokengate removes nothing, both go on as sent.
			"valid token": {"GET", "/orders/7", merge(bearer(alice), map[string]string{"Cookie": "theme=dark"}),
				"alice", "Bearer " + alice, "theme=dark"},
			"valid token's cookie": {"GET", "/orders/7", map[string]string{"Cookie": "theme=dark; " + tokenCookie(alice)},
				"alice", "", "theme=dark; " + tokenCookie(alice)},
		} {
			id := "strip " + name
			got := send(t, r.addr, c.method, c.target, id, c.header, "")
			upstreamGot(name, got, id, c.subject, c.authorization, c.cookie)
		}
		// The kept cookies are the client's: on Cookie lines of their own,
		// one is Caddy 2.6's literal placeholder for an answer without
		// Cookie, and tokengate's rewritten cookie is that text. The token's
		// cookie still must not go on.
		placeholder := "{http.reverse_proxy.header.Cookie}"
		for name, c := range map[string]struct {
			target          string
			token           string
			subject, cookie string
		}{
			"revoked token's cookie on the logout route, the placeholder on a line of its own": {"/oauth2/logout", frank, "", placeholder},
			"forward_token false, the placeholder on a line of its own":                        {"/internal/report", alice, "alice", placeholder},
			"public route, a revoked token's cookie, the placeholder on a line of its own":     {"/public/info", frank, "", placeholder},
		} {
			id := "strip " + name
			got := sendLines(t, r.addr, "GET", c.target, id, http.Header{"Cookie": {tokenCookie(c.token), placeholder}}, "")
			upstreamGot(name, got, id, c.subject, "", c.cookie)
		}
		// A client's own helpers set nothing: the request goes on as sent.
		// (nginx's helpers are variables; it passes these headers on as any
		// other of the client's.)
		sent := "theme=dark; " + tokenCookie(alice)
		send(t, r.addr, "GET", "/orders/7", "strip the client's helpers", map[string]string{"Cookie": sent,
			"X-Tokengate-Cookie": "theme=dark", "X-Tokengate-Cookie-Rewritten": "1", "X-Tokengate-Remove": "cookie, authorization"}, "")
		if s, ok := r.up.reached("strip the client's helpers"); !ok || len(s.Header.Values("Cookie")) != 1 || s.Header.Get("Cookie") != sent || s.Header.Get("X-Auth-Subject") != "alice" {
			t.Errorf("the client's own helpers: reached %v, the upstream got Cookie %.60q and X-Auth-Subject %q, want the cookie as sent and alice",
				ok, s.Header.Values("Cookie"), s.Header.Get("X-Auth-Subject"))
		}
	})

	t.Run("route policy 403 reaches the client with its reason", func(t *testing.T) {
		got := send(t, r.addr, "GET", "/admin/users", "alice admin", bearer(alice), "")
		wantDenial(t, "no admin role", got, 403, "forbidden")
		if _, ok := r.up.reached("alice admin"); ok {
			t.Errorf("the forbidden request reached the upstream")
		}
		if got := send(t, r.addr, "GET", "/admin/users", "root admin", bearer(root), ""); got.status != 200 {
			t.Errorf("admin role: %d %s, want 200", got.status, got.body)
		}
		// A missing scope: 403 with the challenge naming the scope (nginx's
		// auth_request copies WWW-Authenticate only from a 401).
		got = send(t, r.addr, "POST", "/orders", "alice write", bearer(alice), "")
		wantDenial(t, "no orders:write scope", got, 403, "insufficient_scope")
		if c := got.header.Get("Www-Authenticate"); !strings.Contains(c, `error="insufficient_scope"`) || !strings.Contains(c, "orders:write") {
			t.Errorf("WWW-Authenticate %q, want tokengate's insufficient_scope challenge with the scope", c)
		}
		if _, ok := r.up.reached("alice write"); ok {
			t.Errorf("the request without the scope reached the upstream")
		}
	})

	t.Run("a client cannot name another original request", func(t *testing.T) {
		// Both modes' headers, each claiming a public path and method: the
		// proxy sets its own mode's, tokengate ignores the other's.
		lie := map[string]string{
			"X-Original-URI": "/public/x", "X-Original-Method": "GET",
			"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "api.example.com",
		}
		for name, c := range map[string]struct {
			method, target string
			header         map[string]string
			status         int
			reason         string
		}{
			"no token, protected path":   {"GET", "/orders/7", nil, 401, "token_missing"},
			"no token, admin path":       {"GET", "/admin/users", nil, 401, "token_missing"},
			"no admin role, admin path":  {"DELETE", "/admin/users", bearer(alice), 403, "forbidden"},
			"traversal out of public":    {"GET", "/public/../admin/users", nil, 401, "token_missing"},
			"encoded dots out of public": {"GET", "/public/%2e%2e/admin/users", bearer(alice), 403, "forbidden"},
		} {
			id := "lie " + name
			got := send(t, r.addr, c.method, c.target, id, merge(c.header, lie), "")
			wantDenial(t, name, got, c.status, c.reason)
			if _, ok := r.up.reached(id); ok {
				t.Errorf("%s: reached the upstream", name)
			}
		}
	})

	t.Run("a client cannot choose the route policy", func(t *testing.T) {
		// The auth URL's path names a policy, from the proxy's
		// configuration; a query the client adds (which Caddy's
		// forward_auth keeps on the auth request) names none.
		for _, target := range []string{"/admin/users?policy=open", "/admin/users?x=1&policy=open", "/admin/users?policy=nonexistent"} {
			id := "policy " + target
			got := send(t, r.addr, "GET", target, id, bearer(alice), "")
			wantDenial(t, target, got, 403, "forbidden")
			if _, ok := r.up.reached(id); ok {
				t.Errorf("%s: reached the upstream", target)
			}
		}
	})

	t.Run("a request tokengate refuses to judge is 400", func(t *testing.T) {
		got := send(t, r.addr, "GET", "/orders%2F..%2Fadmin", "encoded slash", bearer(alice), "")
		wantDenial(t, "encoded slash", got, 400, "path_invalid")
		if _, ok := r.up.reached("encoded slash"); ok {
			t.Errorf("the refused request reached the upstream")
		}
	})

	t.Run("cannot decide is 503 with Retry-After", func(t *testing.T) {
		tok, err := r.tg.down.Mint("dave", time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := send(t, r.addr, "GET", "/orders/7", "keys never loaded", bearer(tok), "")
		if got.status != 503 || got.header.Get("Retry-After") != "1" || decodeDenial(got.body).Error != "temporarily_unavailable" {
			t.Errorf("an issuer whose keys never loaded: %d, Retry-After %q, %s; want 503 temporarily_unavailable with Retry-After: 1",
				got.status, got.header.Get("Retry-After"), got.body)
		}
		if _, ok := r.up.reached("keys never loaded"); ok {
			t.Errorf("the undecided request reached the upstream")
		}
	})

	// Last: the proxies fail closed.
	t.Run("tokengate stopped: an error, never the upstream", func(t *testing.T) {
		r.tg.stop(t)
		for _, c := range []struct{ name, target string }{{"token", "/orders/7"}, {"public", "/public/info"}} {
			id := "stopped " + c.name
			got := send(t, r.addr, "GET", c.target, id, bearer(alice), "")
			if got.status != 502 {
				t.Errorf("%s: %d %s, want 502 (no answer from tokengate)", c.name, got.status, got.body)
			}
			if _, ok := r.up.reached(id); ok {
				t.Errorf("%s: reached the upstream with tokengate stopped", c.name)
			}
		}
		if r.proxy.exited() {
			t.Errorf("the proxy exited: %v", r.proxy.err)
		}
	})
}

// claimsOf reads a token's jti and exp (the test minted it; no
// verification needed).
func claimsOf(t *testing.T, tok string) (string, time.Time) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		JTI string `json:"jti"`
		Exp int64  `json:"exp"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.JTI == "" || c.Exp == 0 {
		t.Fatalf("no jti or exp in the token: %v", err)
	}
	return c.JTI, time.Unix(c.Exp, 0)
}

// TestNginx runs real nginx with envoy/nginx/tokengate.conf in front of
// tokengate's HTTP endpoint in nginx mode.
func TestNginx(t *testing.T) {
	nginx := requireTool(t, "nginx", "nginx-light")
	bin := buildTokengateBinary(t)
	tg := startTokengateProc(t, bin, "nginx")
	up := startEchoUpstream(t)
	addr := freeLoopbackAddr(t)
	dir := t.TempDir()
	site := render(t, "nginx/tokengate.conf",
		"listen 80;", "listen "+addr+";",
		"server 127.0.0.1:9192;", "server "+tg.authzAddr+";",
		"server 127.0.0.1:8080;", "server "+strings.TrimPrefix(up.URL, "http://")+";",
	)
	writeTestFile(t, filepath.Join(dir, "tokengate.conf"), site)
	// The main configuration a package would ship, on temp paths; the
	// site is the shipped file.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers must reach the test's temp dirs
	}
	writeTestFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf(`
daemon off;
%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/tokengate.conf;
}
`, user, dir))
	check := exec.Command(nginx, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"))
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	proxy := startChild(t, "nginx", exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf")))
	proxy.waitListening(t, addr)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", log)
		}
	})
	t.Run("the auth location is internal", func(t *testing.T) {
		got := send(t, addr, "GET", "/_tokengate", "auth location", bearer(tg.mint(t, "eve", nil)), "")
		if got.status != 404 {
			t.Errorf("GET /_tokengate: %d %s, want 404", got.status, got.body)
		}
	})
	proveProxy(t, &proxyRig{proxy: proxy, addr: addr, tg: tg, up: up})
}

// TestCaddy runs real Caddy with envoy/caddy/Caddyfile in front of
// tokengate's HTTP endpoint in forwarded mode.
func TestCaddy(t *testing.T) {
	caddy := requireTool(t, "caddy", "caddy")
	bin := buildTokengateBinary(t)
	tg := startTokengateProc(t, bin, "forwarded")
	up := startEchoUpstream(t)
	addr := freeLoopbackAddr(t)
	dir := t.TempDir()
	_, port, _ := strings.Cut(addr, ":")
	caddyfile := render(t, "caddy/Caddyfile",
		"admin localhost:2019", "admin off",
		"api.example.com {", "http://api.example.com:"+port+" {\n\tbind 127.0.0.1",
		"forward_auth 127.0.0.1:9192 {", "forward_auth "+tg.authzAddr+" {",
		"reverse_proxy 127.0.0.1:8080", "reverse_proxy "+strings.TrimPrefix(up.URL, "http://"),
	)
	file := filepath.Join(dir, "Caddyfile")
	writeTestFile(t, file, caddyfile)
	cmd := exec.Command(caddy, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	proxy := startChild(t, "caddy", cmd)
	proxy.waitListening(t, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", proxy.output)
		}
	})
	proveProxy(t, &proxyRig{proxy: proxy, addr: addr, tg: tg, up: up})
}

func writeTestFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
