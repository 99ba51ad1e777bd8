package main

import (
	"bufio"
	"net"
	"net/http"
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
