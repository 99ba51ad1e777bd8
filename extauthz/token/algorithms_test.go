package token_test

import (
	"testing"
	"time"
)

// TestDefaultAlgorithmsAcceptFusionAuthKeys: an issuer configured without
// an algorithm list accepts access tokens signed with every asymmetric key
// FusionAuth's Key Master can make (RSA with RS* or PS*, EC P-256, P-384
// and P-521), each published in its JWKS.
func TestDefaultAlgorithmsAcceptFusionAuthKeys(t *testing.T) {
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, nil) // no Algorithms: the defaults
			if _, err := f.iss.AddKey(alg); err != nil {
				t.Fatal(err)
			}
			tok, err := f.iss.Sign(f.iss.Claims("user", 10*time.Minute), nil)
			if err != nil {
				t.Fatal(err)
			}
			id, err := f.verifier.Verify(t.Context(), tok)
			if err != nil {
				t.Fatalf("%s access token with default algorithms: %v", alg, err)
			}
			if id.Subject != "user" {
				t.Errorf("subject %q, want user", id.Subject)
			}
		})
	}
}
