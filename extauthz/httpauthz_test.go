package extauthz_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
)

// line is one header line of a raw HTTP request.
type line struct{ k, v string }

// wireRequest is an HTTP/1.1 request written byte for byte, so that its
// request-target reaches the server exactly as given (Go's client would
// clean a path like //a or /a/../b).
type wireRequest struct {
	method, target, host string
	headers              []line
}

// do sends r to addr over a fresh connection and reads the answer.
func (r wireRequest) do(t *testing.T, addr string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", r.method, r.target, r.host)
	for _, h := range r.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.k, h.v)
	}
	b.WriteString("\r\n")
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// modeRequest is the request a proxy in mode sends to ask about the
// original request (method, target, host, headers).
func modeRequest(mode extauthz.HTTPMode, orig wireRequest, policyName string) wireRequest {
	auth := "/check"
	if policyName != "" {
		auth = "/policy/" + policyName
	}
	switch mode {
	case extauthz.HTTPModeForwarded:
		return wireRequest{method: "GET", target: auth, host: "tokengate.internal", headers: append(slices.Clone(orig.headers),
			line{"X-Forwarded-Method", orig.method}, line{"X-Forwarded-Host", orig.host},
			line{"X-Forwarded-Uri", orig.target}, line{"X-Forwarded-Proto", "https"})}
	case extauthz.HTTPModeNginx:
		return wireRequest{method: "GET", target: auth, host: orig.host, headers: append(slices.Clone(orig.headers),
			line{"X-Original-Method", orig.method}, line{"X-Original-URI", orig.target})}
	}
	return orig
}

// asRaw is the original request a CheckRequest describes.
func asRaw(req *authv3.CheckRequest) wireRequest {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := wireRequest{method: h.GetMethod(), target: h.GetPath(), host: h.GetHost()}
	keys := make([]string, 0, len(h.GetHeaders()))
	for k := range h.GetHeaders() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, ":") && k != "host" {
			r.headers = append(r.headers, line{k, h.GetHeaders()[k]})
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if !strings.HasPrefix(hv.GetKey(), ":") && hv.GetKey() != "host" {
			r.headers = append(r.headers, line{hv.GetKey(), hv.GetValue()})
		}
	}
	return r
}

// serveHTTPModes serves srv's HTTP endpoint in every mode on loopback.
func serveHTTPModes(t *testing.T, srv *extauthz.Server) map[extauthz.HTTPMode]string {
	t.Helper()
	addrs := map[extauthz.HTTPMode]string{}
	for _, mode := range []extauthz.HTTPMode{extauthz.HTTPModeEnvoy, extauthz.HTTPModeForwarded, extauthz.HTTPModeNginx} {
		h, err := srv.HTTPHandler(extauthz.HTTPOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(h)
		t.Cleanup(hs.Close)
		addrs[mode] = hs.Listener.Addr().String()
	}
	return addrs
}

// TestHTTPDecidesAsGRPC runs every golden request through both protocols,
// over real gRPC and real HTTP in each mode, and compares the answers:
// the reason; for an allow, every header set and removed upstream; for a
// denial, the status, headers and body. (Introspection is gRPC's alone:
// it needs Envoy's route marker.)
func TestHTTPDecidesAsGRPC(t *testing.T) {
	e := newGoldenEnv(t)
	for name, c := range goldenCases() {
		if c.introspect {
			continue
		}
		t.Run(name, func(t *testing.T) {
			srv := e.server(t, c.stale, c.logoutOK, c.policy)
			client := serveGRPC(t, srv)
			addrs := serveHTTPModes(t, srv)
			req := c.request(t, e)
			want, err := client.Check(t.Context(), req)
			if err != nil {
				t.Fatalf("gRPC Check: %v", err)
			}
			for mode, addr := range addrs {
				if mode == extauthz.HTTPModeEnvoy && c.policyName != "" {
					continue // no context_extensions over Envoy's HTTP mode
				}
				t.Run(mode.String(), func(t *testing.T) {
					resp, body := modeRequest(mode, asRaw(req), c.policyName).do(t, addr)
					compareAnswers(t, want, resp, body)
				})
			}
		})
	}
}

// compareAnswers fails t unless the HTTP answer says what the gRPC one does.
func compareAnswers(t *testing.T, want *authv3.CheckResponse, resp *http.Response, body string) {
	t.Helper()
	md := want.GetDynamicMetadata().GetFields()
	if got := resp.Header.Get(extauthz.HeaderReason); got != md["reason"].GetStringValue() {
		t.Errorf("reason %q over HTTP, %q over gRPC", got, md["reason"].GetStringValue())
	}
	if resp.Header.Get(extauthz.HeaderDecisionID) == "" {
		t.Errorf("no %s", extauthz.HeaderDecisionID)
	}
	if d := want.GetDeniedResponse(); d != nil {
		if resp.StatusCode != int(d.GetStatus().GetCode()) {
			t.Errorf("status %d over HTTP, %d over gRPC", resp.StatusCode, d.GetStatus().GetCode())
		}
		for _, h := range d.GetHeaders() {
			if got := resp.Header.Values(h.GetHeader().GetKey()); !slices.Equal(got, []string{h.GetHeader().GetValue()}) {
				t.Errorf("header %s: %q over HTTP, %q over gRPC", h.GetHeader().GetKey(), got, h.GetHeader().GetValue())
			}
		}
		if body != d.GetBody() {
			t.Errorf("body %q over HTTP, %q over gRPC", body, d.GetBody())
		}
		if got := resp.Header.Get(extauthz.HeaderStatus); got != fmt.Sprint(int(d.GetStatus().GetCode())) {
			t.Errorf("%s = %q, want %d", extauthz.HeaderStatus, got, d.GetStatus().GetCode())
		}
		return
	}
	ok := want.GetOkResponse()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d over HTTP, an allow over gRPC; body %s", resp.StatusCode, body)
	}
	for _, h := range ok.GetHeaders() {
		if got := resp.Header.Values(h.GetHeader().GetKey()); !slices.Equal(got, []string{h.GetHeader().GetValue()}) {
			t.Errorf("upstream header %s: %q over HTTP, %q over gRPC", h.GetHeader().GetKey(), got, h.GetHeader().GetValue())
		}
	}
	if got, want := resp.Header.Get(extauthz.HeaderRemove), strings.Join(ok.GetHeadersToRemove(), ", "); got != want {
		t.Errorf("%s = %q over HTTP, %q over gRPC", extauthz.HeaderRemove, got, want)
	}
}

// TestHTTPCannotDecide: what gRPC answers UNAVAILABLE (the revocations
// never loaded) is 503 with Retry-After over HTTP, so that the proxy's own
// failure setting applies; and it is counted as an error under protocol
// http.
func TestHTTPCannotDecide(t *testing.T) {
	e := newGoldenEnv(t)
	reg := prometheus.NewRegistry()
	srv := newServer(t, extauthz.Options{Verifier: e.verifier, Headers: e.headers, Revocations: e.revocations,
		Loaded: func() bool { return false }, MaxStaleness: time.Minute, Registerer: reg})
	req := goldenCases()["allowed"].request(t, e)
	if _, err := serveGRPC(t, srv).Check(t.Context(), req); grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC: %v, want UNAVAILABLE", err)
	}
	for mode, addr := range serveHTTPModes(t, srv) {
		resp, body := modeRequest(mode, asRaw(req), "").do(t, addr)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			resp.Header.Get(extauthz.HeaderStatus) != "503" || !strings.Contains(body, `"error":"temporarily_unavailable"`) {
			t.Errorf("%s: %d, retry-after %q, body %s; want 503 with Retry-After", mode, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tokengate_check_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	// One over gRPC, one per HTTP mode.
	if want := map[string]float64{"grpc": 1, "http": 3}; !maps.Equal(got, want) {
		t.Errorf("tokengate_check_errors_total by protocol = %v, want %v", got, want)
	}
}

// TestHTTPModesTrustOneSource: each mode reads the request to authorise
// from its own source only: the others' headers, which a client can send,
// change nothing. The client asks for /admin (a deny rule) and claims
// /public (a public route) in every other way.
func TestHTTPModesTrustOneSource(t *testing.T) {
	e := newGoldenEnv(t)
	srv := e.server(t, false, false, true)
	addrs := serveHTTPModes(t, srv)
	lies := []line{
		{"X-Forwarded-Uri", "/public"}, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Host", "api.example.com"},
		{"X-Original-URI", "/public"}, {"X-Original-Method", "GET"},
	}
	orig := wireRequest{method: "GET", target: "/admin/users", host: "api.example.com"}
	for mode, addr := range addrs {
		ask := modeRequest(mode, orig, "")
		// The lies go first, so that a mode reading the first of repeated
		// headers would take them; its own then make it a repeat (400).
		var headers []line
		for _, l := range lies {
			if !slices.ContainsFunc(ask.headers, func(h line) bool { return strings.EqualFold(h.k, l.k) }) {
				headers = append(headers, l)
			}
		}
		ask.headers = append(headers, ask.headers...)
		if mode == extauthz.HTTPModeEnvoy {
			ask.target = "/admin/users"
		}
		resp, body := ask.do(t, addr)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get(extauthz.HeaderReason) != "forbidden" {
			t.Errorf("%s mode: %d %s, want 403 forbidden", mode, resp.StatusCode, body)
		}
	}
}

// TestHTTPRequestInvalid: in each mode, a request that does not say which
// request to authorise is 400 request_invalid, never an allow, and never
// reaches the decision.
func TestHTTPRequestInvalid(t *testing.T) {
	e := newGoldenEnv(t)
	srv := e.server(t, false, false, true)
	addrs := serveHTTPModes(t, srv)
	tok := goldenCases()["allowed"].token(t, e)
	auth := line{"Authorization", "Bearer " + tok}
	prefixed, err := srv.HTTPHandler(extauthz.HTTPOptions{Mode: extauthz.HTTPModeEnvoy, PathPrefix: "/authz"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(prefixed)
	t.Cleanup(hs.Close)
	prefixAddr := hs.Listener.Addr().String()
	fwd := func(extra ...line) []line {
		return append([]line{auth, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Host", "api.example.com"}, {"X-Forwarded-Uri", "/orders"}}, extra...)
	}
	without := func(ls []line, k string) []line {
		return slices.DeleteFunc(slices.Clone(ls), func(l line) bool { return l.k == k })
	}
	ngx := []line{auth, {"X-Original-Method", "GET"}, {"X-Original-URI", "/orders"}}
	for _, c := range []struct {
		name string
		addr string
		req  wireRequest
	}{
		{"forwarded without X-Forwarded-Uri", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", without(fwd(), "X-Forwarded-Uri")}},
		{"forwarded without X-Forwarded-Method", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", without(fwd(), "X-Forwarded-Method")}},
		{"forwarded without X-Forwarded-Host", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", without(fwd(), "X-Forwarded-Host")}},
		{"forwarded with X-Forwarded-Uri twice", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", fwd(line{"X-Forwarded-Uri", "/admin"})}},
		{"forwarded with a host list", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t",
			append(without(fwd(), "X-Forwarded-Host"), line{"X-Forwarded-Host", "a.example, api.example.com"})}},
		{"forwarded with an absolute URI", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t",
			append(without(fwd(), "X-Forwarded-Uri"), line{"X-Forwarded-Uri", "http://api.example.com/orders"})}},
		{"forwarded with a bad method", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t",
			append(without(fwd(), "X-Forwarded-Method"), line{"X-Forwarded-Method", "GE T"})}},
		{"forwarded with a bad proto", addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", fwd(line{"X-Forwarded-Proto", "gopher"})}},
		{"nginx without X-Original-URI", addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com", without(ngx, "X-Original-URI")}},
		{"nginx without X-Original-Method", addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com", without(ngx, "X-Original-Method")}},
		{"nginx with an empty X-Original-URI", addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com",
			append(without(ngx, "X-Original-URI"), line{"X-Original-URI", ""})}},
		{"nginx with an asterisk", addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com",
			append(without(ngx, "X-Original-URI"), line{"X-Original-URI", "*"})}},
		{"envoy with an absolute URI", addrs[extauthz.HTTPModeEnvoy], wireRequest{"GET", "http://api.example.com/orders", "api.example.com", []line{auth}}},
		{"envoy without the path prefix", prefixAddr, wireRequest{"GET", "/orders", "api.example.com", []line{auth}}},
		{"envoy with the prefix as a longer segment", prefixAddr, wireRequest{"GET", "/authzx/orders", "api.example.com", []line{auth}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := c.req.do(t, c.addr)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(extauthz.HeaderReason) != "request_invalid" ||
				body != `{"error":"invalid_request","reason":"request_invalid"}` {
				t.Errorf("%d %q %s, want 400 request_invalid", resp.StatusCode, resp.Header.Get(extauthz.HeaderReason), body)
			}
		})
	}
	// The same token with the prefix, and in each mode done right: allowed.
	for name, c := range map[string]struct {
		addr string
		req  wireRequest
	}{
		"envoy behind the prefix": {prefixAddr, wireRequest{"GET", "/authz/orders", "api.example.com", []line{auth}}},
		"forwarded":               {addrs[extauthz.HTTPModeForwarded], wireRequest{"GET", "/authz", "t", fwd()}},
		"nginx":                   {addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com", ngx}},
	} {
		if resp, body := c.req.do(t, c.addr); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", name, resp.StatusCode, body)
		}
	}
}

// TestGoldenHTTP compares the HTTP form of a few answers with the files in
// testdata/http/: an allow, an allow that removes headers, a denial, a
// 400 only HTTP has (request_invalid)
// and the 503 of a request that cannot be decided. go test ./extauthz
// -update rewrites them.
func TestGoldenHTTP(t *testing.T) {
	e := newGoldenEnv(t)
	srv := e.server(t, false, false, false)
	addrs := serveHTTPModes(t, srv)
	policyAddrs := serveHTTPModes(t, e.server(t, false, false, true))
	unloaded := newServer(t, extauthz.Options{Verifier: e.verifier, Headers: e.headers, Revocations: e.revocations,
		Loaded: func() bool { return false }, MaxStaleness: time.Minute})
	unloadedAddrs := serveHTTPModes(t, unloaded)
	cases := goldenCases()
	for name, c := range map[string]struct {
		addr string
		req  wireRequest
	}{
		"allowed":       {addrs[extauthz.HTTPModeEnvoy], asRaw(cases["allowed"].request(t, e))},
		"token_revoked": {addrs[extauthz.HTTPModeEnvoy], asRaw(cases["token_revoked"].request(t, e))},
		// An allow with headers to remove (x-envoy-auth-headers-to-remove).
		"anonymous":       {policyAddrs[extauthz.HTTPModeEnvoy], asRaw(cases["anonymous"].request(t, e))},
		"request_invalid": {addrs[extauthz.HTTPModeNginx], wireRequest{"GET", "/authz", "api.example.com", nil}},
		"undecided":       {unloadedAddrs[extauthz.HTTPModeEnvoy], asRaw(cases["allowed"].request(t, e))},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := c.req.do(t, c.addr)
			got := dumpHTTP(resp, body)
			file := filepath.Join("testdata", "http", name+".http")
			if *update {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (go test ./extauthz -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("answer differs from %s:\n--- got\n%s\n--- want\n%s", file, got, want)
			}
		})
	}
}

// dumpHTTP is an answer as text: the status line, the headers sorted
// (the decision id and Date normalised), the body.
func dumpHTTP(resp *http.Response, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %s\n", resp.Status)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			switch k {
			case "Date":
				v = "(normalised)"
			case http.CanonicalHeaderKey(extauthz.HeaderDecisionID):
				v = goldenDecisionID
			}
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", body)
	return b.String()
}

// TestHTTPPolicyFromTheAuthPath: in forwarded and nginx modes the route
// policy is named by the auth request's path, /policy/NAME, which every
// proxy sets from its configuration; never by its query, which Caddy's
// forward_auth carries over from the client's request.
func TestHTTPPolicyFromTheAuthPath(t *testing.T) {
	e := newGoldenEnv(t)
	srv := e.server(t, false, false, true)
	addrs := serveHTTPModes(t, srv)
	tok := goldenCases()["allowed_by_rule"].token(t, e)
	orig := wireRequest{method: "GET", target: "/orders?id=1", host: "api.example.com",
		headers: []line{{"Authorization", "Bearer " + tok}}}
	for _, mode := range []extauthz.HTTPMode{extauthz.HTTPModeForwarded, extauthz.HTTPModeNginx} {
		for _, c := range []struct {
			authTarget, reason string
		}{
			{"/check", "allowed"},
			{"/check?policy=nonexistent", "allowed"}, // a client's query: ignored
			{"/check?policy=default&policy=nonexistent", "allowed"},
			{"/policy/default", "allowed"},
			{"/policy/nonexistent", "policy_unknown"},
			{"/policy/", "policy_unknown"},
			{"/policy/default/x", "policy_unknown"},
		} {
			ask := modeRequest(mode, orig, "")
			ask.target = c.authTarget
			resp, body := ask.do(t, addrs[mode])
			if got := resp.Header.Get(extauthz.HeaderReason); got != c.reason {
				t.Errorf("%s mode, auth request %s: %d %s (%s), want %s", mode, c.authTarget, resp.StatusCode, got, body, c.reason)
			}
		}
	}
}

// TestHTTPCookieRewrittenFlag: an allow that rewrites the Cookie header
// (the token cookie taken out) says so in x-tokengate-cookie-rewritten,
// whatever the rest of the cookies are; one that does not rewrite it has
// no flag. The cookie value alone cannot say it: the client chooses the
// cookies that are kept, and could make them read as a proxy's "no such
// header" (Caddy 2.6's literal placeholder).
func TestHTTPCookieRewrittenFlag(t *testing.T) {
	srv := publicCookieServer(t)
	addr := serveHTTPModes(t, srv)[extauthz.HTTPModeForwarded]
	for _, c := range []struct {
		cookies []string
		flag    string
	}{
		{[]string{"app.at=tokA", "{http.reverse_proxy.header.Cookie}"}, "1"},
		{[]string{"app.at=tokA; theme=dark"}, "1"},
		{[]string{"theme=dark"}, ""},
		{[]string{"app.at=tokA"}, ""}, // removed, not rewritten
	} {
		req := wireRequest{method: "GET", target: "/check", host: "t", headers: []line{
			{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Host", "api.example.com"}, {"X-Forwarded-Uri", "/public/info"}}}
		for _, v := range c.cookies {
			req.headers = append(req.headers, line{"Cookie", v})
		}
		resp, body := req.do(t, addr)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: %d %s", c.cookies, resp.StatusCode, body)
		}
		if got := resp.Header.Get(extauthz.HeaderCookieRewritten); got != c.flag {
			t.Errorf("%q: %s = %q (cookie %q), want %q", c.cookies, extauthz.HeaderCookieRewritten, got, resp.Header.Get("Cookie"), c.flag)
		}
	}
}
