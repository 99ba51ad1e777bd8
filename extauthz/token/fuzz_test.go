package token_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
)

// FuzzSignedClaims signs arbitrary header and payload bytes correctly (with
// an HMAC issuer, so each run is cheap) and checks the verifier's invariants:
// it never panics, and whatever it accepts is really valid for the issuer —
// right iss, an accepted audience, within its time window and lifetime.
//
//	go test -run '^$' -fuzz FuzzSignedClaims -fuzztime 30s ./extauthz/token
func FuzzSignedClaims(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	const leeway = 30 * time.Second
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "fa", Issuer: "acme.com", Audiences: []string{"api", "web"},
			HMACSecret: secret, Leeway: leeway, MaxTokenLifetime: time.Hour}},
		Now: func() time.Time { return now },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"alg":"HS256","typ":"JWT"}`), []byte(`{"iss":"acme.com","aud":"api","sub":"u","iat":1800000000,"exp":1800000600}`))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"iss":"acme.com","aud":["x","web"],"iat":1799999990.5,"exp":1.8000006e9,"nbf":0}`))
	f.Add([]byte(`{"alg":"HS256","crit":["b64"]}`), []byte(`{"iss":"acme.com","aud":"api","iat":1800000000,"exp":1800000600}`))
	f.Add([]byte(`{"alg":"none"}`), []byte(`{"iss":"acme.com"}`))
	f.Add([]byte(`{"alg":"HS256","typ":"logout+jwt"}`), []byte(`{"iss":"acme.com","aud":"api","iat":1800000000,"exp":1800000600,"sid":7}`))
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signing))
		raw := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		id, err := v.Verify(t.Context(), raw)
		if err != nil {
			return
		}
		if id.Issuer != "acme.com" {
			t.Fatalf("accepted iss %q", id.Issuer)
		}
		if !slices.Contains(id.Audience, "api") && !slices.Contains(id.Audience, "web") {
			t.Fatalf("accepted audience %v", id.Audience)
		}
		if !id.ExpiresAt.Add(leeway).After(now) {
			t.Fatalf("accepted a token expired at %v", id.ExpiresAt)
		}
		if id.IssuedAt.After(now.Add(leeway)) {
			t.Fatalf("accepted a token issued in the future at %v", id.IssuedAt)
		}
		if id.ExpiresAt.Sub(id.IssuedAt) > time.Hour {
			t.Fatalf("accepted lifetime %v", id.ExpiresAt.Sub(id.IssuedAt))
		}
	})
}

// FuzzLogoutToken: correctly signed arbitrary logout tokens. VerifyLogout
// never panics, and whatever it accepts meets Back-Channel Logout 1.0 §2.6.
//
//	go test -run '^$' -fuzz FuzzLogoutToken -fuzztime 30s ./extauthz/token
func FuzzLogoutToken(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "op", Issuer: "https://op.example", Audiences: []string{"api"}, LogoutAudiences: []string{"web"},
			HMACSecret: secret, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		Now: func() time.Time { return now },
	})
	if err != nil {
		f.Fatal(err)
	}
	const ev = `"events":{"http://schemas.openid.net/event/backchannel-logout":{}}`
	f.Add([]byte(`{"alg":"HS256","typ":"logout+jwt"}`), []byte(`{"iss":"https://op.example","aud":"web","iat":1800000000,"exp":1800000120,"jti":"j","sid":"s",`+ev+`}`))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"iss":"https://op.example","aud":["web"],"iat":1800000000,"exp":1800000120,"jti":"j","sub":"u","nonce":"n",`+ev+`}`))
	f.Add([]byte(`{"alg":"HS256","typ":"JWT"}`), []byte(`{"iss":"https://op.example","aud":"web","iat":1800000000,"exp":1800000120,"jti":"j","sub":"u","events":{}}`))
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signing))
		lt, err := v.VerifyLogout(t.Context(), signing+"."+base64.RawURLEncoding.EncodeToString(mac.Sum(nil)))
		if err != nil {
			return
		}
		if lt.Subject == "" && lt.SessionID == "" || lt.TokenID == "" {
			t.Fatalf("accepted a logout token without sub/sid or jti: %+v", lt)
		}
		if !lt.ExpiresAt.Add(30*time.Second).After(now) || lt.IssuedAt.After(now.Add(30*time.Second)) {
			t.Fatalf("accepted a logout token outside its time window: %+v", lt)
		}
		if strings.Contains(string(payload), `"nonce"`) && !strings.Contains(string(payload), `\`) {
			t.Fatalf("accepted a logout token with a nonce: %s", payload)
		}
	})
}
