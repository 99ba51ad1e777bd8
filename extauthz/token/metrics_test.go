package token_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokengate/tokengate/extauthz/token"
)

// TestJWKSFetchesCounted: every issuer with a JWKS has every fetch result at
// zero from the start (an alert on "error" sees a series before the first
// failure), an HMAC-only issuer has none, and each fetch is counted once.
func TestJWKSFetchesCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *token.Options) {
		o.Registerer = reg
		o.Issuers = append(o.Issuers, token.Issuer{
			Name: "hmac", Issuer: "https://hmac.example", Audiences: []string{aud}, MaxTokenLifetime: time.Hour,
			HMACSecret: []byte("0123456789abcdef0123456789abcdef"),
		})
	})
	const head = `
# HELP tokengate_jwks_fetches_total JWKS fetches by issuer and result (changed, unchanged, error).
# TYPE tokengate_jwks_fetches_total counter
`
	want := head + `tokengate_jwks_fetches_total{issuer="a",result="changed"} 1
tokengate_jwks_fetches_total{issuer="a",result="error"} 0
tokengate_jwks_fetches_total{issuer="a",result="unchanged"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokengate_jwks_fetches_total"); err != nil {
		t.Errorf("after the first load: %v", err)
	}
	if err := f.verifier.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	want = head + `tokengate_jwks_fetches_total{issuer="a",result="changed"} 1
tokengate_jwks_fetches_total{issuer="a",result="error"} 0
tokengate_jwks_fetches_total{issuer="a",result="unchanged"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokengate_jwks_fetches_total"); err != nil {
		t.Errorf("after a refresh: %v", err)
	}
}
