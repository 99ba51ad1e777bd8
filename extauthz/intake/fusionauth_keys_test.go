package intake_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// TestFusionAuthSignedWithES512: a webhook signed with an ES512 key from
// FusionAuth's Key Master (EC P-521), published in its JWKS, is accepted
// by a receiver configured with the default algorithms; a lost signature
// check here would lose the revocation.
func TestFusionAuthSignedWithES512(t *testing.T) {
	fa := tokentest.NewServer(t, "")
	if _, err := fa.AddKey("ES512"); err != nil {
		t.Fatal(err)
	}
	sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{JWKSURI: fa.URL + "/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sig.Run(ctx)
	e := newFAEnv(t, func(o *intake.FusionAuthOptions) { o.Signature, o.BasicPassword = sig, "" })
	body := event("user.delete", "e-es512", time.Now().UnixMilli(), userJSON())
	sum := sha256.Sum256(body)
	jws, err := fa.Sign(jwt.MapClaims{"request_body_sha256": base64.StdEncoding.EncodeToString(sum[:])}, map[string]any{"typ": nil})
	if err != nil {
		t.Fatal(err)
	}
	if alg := jwtAlg(t, jws); alg != "ES512" {
		t.Fatalf("the test signed with %s, want ES512", alg)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, resp := e.send(t, delivery{body: body, signature: jws})
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("ES512-signed delivery: %d %s, want 200", code, resp)
		}
		time.Sleep(10 * time.Millisecond) // keys still loading
	}
	if n := countEntries(t, e); n != 1 {
		t.Errorf("%d entries after the ES512-signed user.delete, want 1", n)
	}
}

// jwtAlg is the alg header of a compact JWS.
func jwtAlg(t *testing.T, jws string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(jws, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	alg, _ := tok.Header["alg"].(string)
	return alg
}
