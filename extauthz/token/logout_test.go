package token_test

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/token"
)

// TestLogoutTokenTypes: a logout token typed logout+jwt, JWT (Keycloak ≤ 24,
// Authentik ≤ 2025.12) or not at all verifies as a logout token, and never
// as an access token; a logout token typed as an access token (at+jwt) or
// anything else is refused.
func TestLogoutTokenTypes(t *testing.T) {
	f := newFixture(t, func(o *token.Options) { o.Issuers[0].LogoutAudiences = []string{"web"} })
	now := *f.now.Load()
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": f.iss.URL, "aud": "web", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
			"jti": "lt-1", "sid": "s-1",
			"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}}}
	}
	for typ, accept := range map[any]bool{
		"logout+jwt": true, "application/logout+jwt": true, "JWT": true, "jwt": true, nil: true,
		"at+jwt": false, "application/at+jwt": false, "secevent+jwt": false, "JOSE": false, 7.0: false,
	} {
		raw, err := f.iss.Sign(claims(), map[string]any{"typ": typ})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.verifier.VerifyLogout(t.Context(), raw)
		if accept && err != nil {
			t.Errorf("logout token typed %v: %v, want accepted", typ, err)
		}
		if !accept && !errors.Is(err, token.ErrType) {
			t.Errorf("logout token typed %v: %v, want %v", typ, err, token.ErrType)
		}
		// Used as an access token (its audience made right), it is refused by
		// its events claim whatever its type.
		c := claims()
		c["aud"] = aud
		raw, err = f.iss.Sign(c, map[string]any{"typ": typ})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.verifier.Verify(t.Context(), raw); !errors.Is(err, token.ErrType) {
			t.Errorf("logout token typed %v verified as an access token: %v, want %v", typ, err, token.ErrType)
		}
	}
}
