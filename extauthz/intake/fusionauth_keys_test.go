package intake_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
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

// TestFusionAuthPublicKeyUpdateRefreshesAfterTheAnswer: jwt.public-key.update
// is transactional, and FusionAuth commits the new key only after the
// webhook answers, so a JWKS fetched during the call would be the old set,
// and a 503 (JWKS unreachable) would block the key change. The receiver
// answers 200 at once, never 503, and refreshes the keys after the answer,
// and again a few seconds later.
func TestFusionAuthPublicKeyUpdateRefreshesAfterTheAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu       sync.Mutex
			calls    []time.Time
			answered = make(chan struct{})
		)
		fa, err := intake.NewFusionAuth(intake.FusionAuthOptions{
			Issuer:     intake.Issuer{Name: "fa", Issuer: "acme.com", MaxTokenLifetime: time.Hour},
			HeaderName: "X-Webhook-Secret", HeaderValue: "0123456789abcdef0123",
			RefreshKeys: func(ctx context.Context, issuer string) error {
				select {
				case <-answered:
				default:
					t.Error("the keys were refreshed before the webhook was answered")
				}
				if issuer != "fa" {
					t.Errorf("refreshed issuer %q, want fa", issuer)
				}
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, time.Now())
				return errors.New("jwks unreachable")
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go fa.Run(ctx)
		start := time.Now()
		req := httptest.NewRequest("POST", "/webhooks/fusionauth", bytes.NewReader(
			event("jwt.public-key.update", "e-key", start.UnixMilli(), `"applicationIds":["`+appID+`"]`)))
		req.Header.Set("X-Webhook-Secret", "0123456789abcdef0123")
		rec := httptest.NewRecorder()
		fa.ServeHTTP(rec, req)
		close(answered)
		if rec.Code != http.StatusOK {
			t.Fatalf("jwt.public-key.update with the JWKS unreachable: %d %s, want 200", rec.Code, rec.Body)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		var after []time.Duration
		for _, c := range calls {
			after = append(after, c.Sub(start))
		}
		if len(after) != 2 || after[0] <= 0 || after[0] > 2*time.Second || after[1] < after[0]+2*time.Second || after[1] > 30*time.Second {
			t.Errorf("refreshes %v after the answer, want two: within 2s, and a few seconds later", after)
		}
	})
}
