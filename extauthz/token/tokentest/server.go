package tokentest

import (
	"net/http/httptest"
	"testing"
)

// NewServer starts an issuer whose JWKS and discovery document are served
// over HTTP on loopback; its URL is the server's. The server stops with the
// test.
func NewServer(tb testing.TB, audience string) *Issuer {
	tb.Helper()
	iss, err := New("", audience)
	if err != nil {
		tb.Fatalf("tokentest: %v", err)
	}
	srv := httptest.NewServer(iss.Handler())
	tb.Cleanup(srv.Close)
	iss.URL = srv.URL
	return iss
}
