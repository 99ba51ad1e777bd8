package token_test

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
)

// TestIDTokensAreNotAccessTokens: FusionAuth signs ID and access tokens
// alike (typ JWT, the same aud), so an ID token would pass as an access
// token. Only ID tokens carry at_hash or c_hash: such a token is refused
// unless the issuer accepts ID tokens. nonce alone proves nothing (Keycloak
// before keycloak#26893 put it in access tokens).
func TestIDTokensAreNotAccessTokens(t *testing.T) {
	cases := map[string]struct {
		extra          map[string]any
		acceptIDTokens bool
		want           error
	}{
		"access token":                     {},
		"nonce alone":                      {extra: map[string]any{"nonce": "n-1"}},
		"at_hash":                          {extra: map[string]any{"at_hash": "x1Y2", "nonce": "n-1"}, want: token.ErrType},
		"c_hash":                           {extra: map[string]any{"c_hash": "x1Y2"}, want: token.ErrType},
		"at_hash null":                     {extra: map[string]any{"at_hash": nil}, want: token.ErrType},
		"at_hash with accept_id_tokens":    {extra: map[string]any{"at_hash": "x1Y2"}, acceptIDTokens: true},
		"c_hash with accept_id_tokens":     {extra: map[string]any{"c_hash": "x1Y2"}, acceptIDTokens: true},
		"access token with accept_id_toks": {acceptIDTokens: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(o *token.Options) { o.Issuers[0].AcceptIDTokens = c.acceptIDTokens })
			claims := f.iss.Claims("user", 10*time.Minute)
			maps.Copy(claims, c.extra)
			if v, ok := c.extra["at_hash"]; ok && v == nil {
				claims["at_hash"] = nil // present, null
			}
			raw, err := f.iss.Sign(claims, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.verifier.Verify(t.Context(), raw)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
}

// TestRequireTyp: an issuer that types its access tokens (RFC 9068 at+jwt)
// can require it, and then a token with another typ, or none, is refused:
// the ID tokens of such an issuer are typ JWT.
func TestRequireTyp(t *testing.T) {
	cases := map[string]struct {
		require string
		typ     any // nil: no typ header
		want    error
	}{
		"not required, JWT":                {typ: "JWT"},
		"at+jwt required, at+jwt":          {require: "at+jwt", typ: "at+jwt"},
		"at+jwt required, AT+JWT":          {require: "at+jwt", typ: "AT+JWT"},
		"at+jwt required, application/":    {require: "at+jwt", typ: "application/at+jwt"},
		"at+jwt required, JWT":             {require: "at+jwt", typ: "JWT", want: token.ErrType},
		"at+jwt required, none":            {require: "at+jwt", want: token.ErrType},
		"at+jwt required, number":          {require: "at+jwt", typ: 1, want: token.ErrType},
		"at+jwt required, application/JWT": {require: "at+jwt", typ: "application/jwt", want: token.ErrType},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(o *token.Options) { o.Issuers[0].RequireTyp = c.require })
			raw := f.mint(t, map[string]any{"typ": c.typ})
			_, err := f.verifier.Verify(t.Context(), raw)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
}
