package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestAuthzHTTPAnswersEveryRequest: every request to the HTTP
// authorization endpoint is tokengate's to answer. net/http answers
// "OPTIONS *" with 200 by itself, which a proxy would take for an allow
// with no identity (and nothing removed).
func TestAuthzHTTPAnswersEveryRequest(t *testing.T) {
	in := start(t, []string{"dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--authz-http", "127.0.0.1:0",
		"--data", t.TempDir(), "--log-format", "json"}, nil)
	if in.authzAddr == "" {
		t.Fatal("no authz_http_addr in the serving line")
	}
	waitReady(t, in)
	conn, err := net.Dial("tcp", in.authzAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("OPTIONS * HTTP/1.1\r\nHost: api.example.com\r\nX-Auth-Subject: admin\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Tokengate-Reason") != "request_invalid" {
		t.Fatalf("OPTIONS *: %d, reason %q; want 400 request_invalid", resp.StatusCode, resp.Header.Get("X-Tokengate-Reason"))
	}
}

// TestAuthzHTTPConfig: the endpoint's settings are refused where they
// would do nothing or could not work, each problem named.
func TestAuthzHTTPConfig(t *testing.T) {
	for name, c := range map[string]struct {
		yaml string
		want []string // in the error; none: accepted
	}{
		"off":                       {``, nil},
		"on, each mode":             {"listen: {authz_http: 127.0.0.1:0}\nauthz_http: {mode: nginx}", nil},
		"prefix in envoy mode":      {"listen: {authz_http: 127.0.0.1:0}\nauthz_http: {path_prefix: /authz}", nil},
		"unknown mode":              {"listen: {authz_http: 127.0.0.1:0}\nauthz_http: {mode: traefik}", []string{"authz_http.mode"}},
		"prefix in forwarded mode":  {"listen: {authz_http: 127.0.0.1:0}\nauthz_http: {mode: forwarded, path_prefix: /authz}", []string{"authz_http.path_prefix"}},
		"prefix ending in /":        {"listen: {authz_http: 127.0.0.1:0}\nauthz_http: {path_prefix: /authz/}", []string{"authz_http.path_prefix"}},
		"bad address":               {"listen: {authz_http: nope}", []string{"listen.authz_http"}},
		"mode without the listener": {"authz_http: {mode: nginx}", []string{"authz_http.mode", "without listen.authz_http"}},
		"prefix without the listener": {"authz_http: {path_prefix: /authz}",
			[]string{"authz_http.path_prefix", "without listen.authz_http"}},
		"TLS without the listener": {"listen: {authz_http_tls: {cert_file: a.crt, key_file: a.key}}", []string{"listen.authz_http_tls"}},
	} {
		_, err := loadConfig(strings.NewReader(policyIssuers+c.yaml), func(string) string { return "" })
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != nil && err == nil:
			t.Errorf("%s: accepted", name)
		}
		for _, w := range c.want {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not mention %q:\n%v", name, w, err)
			}
		}
	}
}
