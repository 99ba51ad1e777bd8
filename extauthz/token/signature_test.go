package token_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

var bodySecret = []byte("fusionauth-webhook-hmac-secret-0123456789")

func bodyClaims(body []byte) jwt.MapClaims {
	sum := sha256.Sum256(body)
	return jwt.MapClaims{"request_body_sha256": base64.StdEncoding.EncodeToString(sum[:])}
}

// hs256 signs claims as FusionAuth does with an HMAC key; header entries
// override (nil deletes) kid and typ.
func hs256(t *testing.T, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = "webhook-key"
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(bodySecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBodySignatureHeaderAndClaims: a body signature is FusionAuth's JWS and
// nothing else: typ JWT or absent, no iss, no exp in the past, and, when a
// kid is configured, that kid.
func TestBodySignatureHeaderAndClaims(t *testing.T) {
	now := time.Now()
	body := []byte(`{"event":{"id":"e-1"}}`)
	with := func(k string, v any) jwt.MapClaims {
		c := bodyClaims(body)
		c[k] = v
		return c
	}
	for name, tc := range map[string]struct {
		kid    string
		jws    string
		accept bool
	}{
		"plain":                    {jws: hs256(t, bodyClaims(body), nil), accept: true},
		"typ JWT":                  {jws: hs256(t, bodyClaims(body), map[string]any{"typ": "JWT"}), accept: true},
		"no typ":                   {jws: hs256(t, bodyClaims(body), map[string]any{"typ": nil}), accept: true},
		"typ at+jwt":               {jws: hs256(t, bodyClaims(body), map[string]any{"typ": "at+jwt"})},
		"typ logout+jwt":           {jws: hs256(t, bodyClaims(body), map[string]any{"typ": "logout+jwt"})},
		"typ not a string":         {jws: hs256(t, bodyClaims(body), map[string]any{"typ": 1})},
		"iss":                      {jws: hs256(t, with("iss", "acme.com"), nil)},
		"exp ahead":                {jws: hs256(t, with("exp", now.Add(time.Minute).Unix()), nil), accept: true},
		"exp past":                 {jws: hs256(t, with("exp", now.Add(-time.Minute).Unix()), nil)},
		"exp not a number":         {jws: hs256(t, with("exp", "soon"), nil)},
		"pinned kid":               {kid: "webhook-key", jws: hs256(t, bodyClaims(body), nil), accept: true},
		"another kid":              {kid: "webhook-key", jws: hs256(t, bodyClaims(body), map[string]any{"kid": "other-key"})},
		"no kid, one pinned":       {kid: "webhook-key", jws: hs256(t, bodyClaims(body), map[string]any{"kid": nil})},
		"any kid when none pinned": {jws: hs256(t, bodyClaims(body), map[string]any{"kid": "other-key"}), accept: true},
	} {
		v, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: bodySecret, KeyID: tc.kid,
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		err = v.Verify(t.Context(), tc.jws, body)
		if tc.accept && err != nil {
			t.Errorf("%s: %v, want accepted", name, err)
		}
		if !tc.accept && err == nil {
			t.Errorf("%s: accepted, want rejected", name)
		}
	}
}

// TestBodySignaturePinnedKIDOverJWKS: FusionAuth's JWKS publishes every
// asymmetric key it holds, access-token keys included. With a kid pinned,
// only the webhook key signs a body, not another key of the same JWKS.
func TestBodySignaturePinnedKIDOverJWKS(t *testing.T) {
	fa := tokentest.NewServer(t, "")
	body := []byte(`{"event":{"id":"e-2"}}`)
	webhookKID := fa.KID()
	good, err := fa.Sign(bodyClaims(body), map[string]any{"typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fa.AddKey("ES256"); err != nil { // an access-token key, say
		t.Fatal(err)
	}
	other, err := fa.Sign(bodyClaims(body), map[string]any{"typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	for name, pin := range map[string]string{"pinned": webhookKID, "unpinned": ""} {
		v, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{JWKSURI: fa.URL + "/jwks.json",
			Algorithms: []string{"RS256", "ES256"}, KeyID: pin})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go v.Run(ctx)
		err = v.Verify(t.Context(), good, body)
		for errors.Is(err, token.ErrKeysUnavailable) { // the first fetch is under way
			time.Sleep(10 * time.Millisecond)
			err = v.Verify(t.Context(), good, body)
		}
		if err != nil {
			t.Errorf("%s: signed with the webhook key: %v", name, err)
		}
		err = v.Verify(t.Context(), other, body)
		if pin != "" && !errors.Is(err, token.ErrSignature) {
			t.Errorf("%s: signed with another key of the same JWKS: %v, want %v", name, err, token.ErrSignature)
		}
		if pin == "" && err != nil {
			t.Errorf("%s: signed with another key of the same JWKS: %v, want accepted (no kid pinned)", name, err)
		}
		cancel()
	}
}
