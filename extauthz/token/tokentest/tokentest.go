// Package tokentest gives tests a token issuer: a [devissuer.Issuer] whose
// JWKS and discovery document are served on loopback for as long as the
// test runs. It is the counterpart of the verifier, the way httptest is of
// net/http; it builds on testing, so only tests import it.
package tokentest

import (
	"testing"

	"github.com/tokengate/tokengate/extauthz/token/devissuer"
)

// Issuer signs tokens with keys it generated; see [devissuer.Issuer].
type Issuer = devissuer.Issuer

// New returns an issuer with one RSA-2048 key (RS256), served nowhere: for a
// test that checks signatures against its public keys, or that needs a
// second issuer with the same iss whose keys were never published.
func New(url, audience string) (*Issuer, error) { return devissuer.New(url, audience) }

// NewServer starts an issuer whose JWKS and discovery document are served
// over HTTP on loopback; its URL is the server's. The server stops with the
// test.
func NewServer(tb testing.TB, audience string) *Issuer {
	tb.Helper()
	srv, err := devissuer.Listen("127.0.0.1:0", audience)
	if err != nil {
		tb.Fatalf("tokentest: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Errorf("tokentest: %v", err)
		}
	})
	return srv.Issuer
}
