package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

const (
	faSecret = "fusionauth-webhook-signing-secret-0123456789"
	faApp    = "3c219e58-ed0e-4b18-ad48-f4f92793ae32"
	faApp2   = "9a3f0b2c-5d1e-4c7a-8e6f-1b2c3d4e5f60"
	faTenant = "30663132-6464-6665-3032-326466613934"
)

// faIssuer is a FusionAuth tenant as tokengate sees it: a plain-string iss
// ("acme.com") and a JWKS served over HTTP.
func faIssuer(t *testing.T) (*tokentest.Issuer, string) {
	t.Helper()
	iss, err := tokentest.New("acme.com", faApp)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	t.Cleanup(srv.Close)
	return iss, srv.URL + "/jwks.json"
}

func faConfig(t *testing.T, jwks, postgresURL string) string {
	t.Helper()
	return writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: fusionauth, issuer: acme.com, jwks_uri: %q, audiences: [%q, %q]}]
storage: {postgres_url: %q}
revocation: {poll_interval: 200ms}
webhooks:
  fusionauth:
    issuer: fusionauth
    tenant_ids: [%q]
    signing_key: {hmac_secret: %q}
`, jwks, faApp, faApp2, postgresURL, faTenant, faSecret))
}

func (in *instance) webhook(t *testing.T, body string) (int, string) {
	t.Helper()
	sum := sha256.Sum256([]byte(body))
	sig, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"request_body_sha256": base64.StdEncoding.EncodeToString(sum[:])}).SignedString([]byte(faSecret))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", "http://"+in.httpAddr+"/webhooks/fusionauth", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-FusionAuth-Signature-JWT", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestFusionAuthWebhooksRevokeOnEveryReplica: for each event type, a token
// allowed before the event is denied after it (token_revoked), on the
// replica that received the webhook and on a second one.
func TestFusionAuthWebhooksRevokeOnEveryReplica(t *testing.T) {
	iss, jwks := faIssuer(t)
	url := pgtest.URL(t)
	a := start(t, []string{"serve", "--config", faConfig(t, jwks, url)}, nil)
	b := start(t, []string{"serve", "--config", faConfig(t, jwks, url)}, nil)
	waitReady(t, a)
	waitReady(t, b)

	type tc struct {
		aud    string
		fields func(user, rt string) string
	}
	userJSON := func(user string) string {
		return fmt.Sprintf(`"user":{"id":%q,"email":"u@example.com","active":true,"tenantId":%q}`, user, faTenant)
	}
	ttl := fmt.Sprintf(`"applicationTimeToLiveInSeconds":{%q:3600}`, faApp)
	cases := map[string]tc{
		"jwt.refresh-token.revoke": {faApp, func(user, rt string) string {
			return fmt.Sprintf(`"applicationId":%q,"userId":%q,%s,"refreshToken":{"id":%q,"applicationId":%q,"userId":%q},%s`,
				faApp, user, userJSON(user), rt, faApp, user, ttl)
		}},
		"jwt.refresh-token.revoke (user)": {faApp, func(user, _ string) string {
			return fmt.Sprintf(`"userId":%q,%s,%s`, user, userJSON(user), ttl)
		}},
		"jwt.refresh-token.revoke (user, app)": {faApp, func(user, _ string) string {
			return fmt.Sprintf(`"applicationId":%q,"userId":%q,%s,%s`, faApp, user, userJSON(user), ttl)
		}},
		"jwt.refresh-token.revoke (app)": {faApp2, func(string, string) string {
			return fmt.Sprintf(`"applicationId":%q,"applicationTimeToLiveInSeconds":{%q:3600}`, faApp2, faApp2)
		}},
		"user.delete":                 {faApp, func(user, _ string) string { return userJSON(user) }},
		"user.deactivate":             {faApp, func(user, _ string) string { return userJSON(user) }},
		"user.password.update":        {faApp, func(user, _ string) string { return userJSON(user) }},
		"user.password.reset.success": {faApp, func(user, _ string) string { return userJSON(user) }},
		"user.registration.delete": {faApp, func(user, _ string) string {
			return fmt.Sprintf(`"applicationId":%q,"registration":{"applicationId":%q,"roles":[]},%s`, faApp, faApp, userJSON(user))
		}},
	}
	n := 0
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			n++
			user := fmt.Sprintf("00000000-0000-0000-0000-%012d", n)
			rt := fmt.Sprintf("rt-%d", n)
			issued := time.Now().Add(-10 * time.Second)
			claims := iss.Claims(user, 30*time.Minute)
			claims["aud"], claims["sid"], claims["iat"] = c.aud, rt, issued.Unix()
			claims["applicationId"], claims["tid"] = c.aud, faTenant
			tok, err := iss.Sign(claims, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range []*instance{a, b} {
				if got := in.decision(t, tok); got != "allowed" {
					t.Fatalf("before the event: %s", got)
				}
			}
			typ, _, _ := strings.Cut(name, " ")
			body := fmt.Sprintf(`{"event":{"createInstant":%d,"id":"evt-%d","tenantId":%q,"type":%q,"info":{"ipAddress":"10.0.0.1"},%s}}`,
				time.Now().UnixMilli(), n, faTenant, typ, c.fields(user, rt))
			if code, resp := a.webhook(t, body); code != http.StatusOK || !strings.Contains(resp, "applied") {
				t.Fatalf("webhook: %d %s", code, resp)
			}
			if got := a.decision(t, tok); got != "token_revoked" {
				t.Errorf("on the receiving replica right after the webhook: %s, want token_revoked", got)
			}
			eventually(t, "the other replica denies", func() bool { return b.decision(t, tok) == "token_revoked" })
		})
	}
}

// TestFusionAuthPublicKeyUpdateRefreshesAfterAnswer: serve answers
// jwt.public-key.update at once and fetches the issuer's JWKS after the
// answer (FusionAuth commits the new key only then).
func TestFusionAuthPublicKeyUpdateRefreshesAfterAnswer(t *testing.T) {
	iss, jwks := faIssuer(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: fusionauth, issuer: acme.com, jwks_uri: %q, audiences: [%q]}]
storage: {path: %q}
webhooks:
  fusionauth:
    issuer: fusionauth
    signing_key: {hmac_secret: %q}
`, jwks, faApp, t.TempDir()+"/db", faSecret))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	before := iss.Fetches()
	body := fmt.Sprintf(`{"event":{"createInstant":%d,"id":"evt-key","tenantId":%q,"type":"jwt.public-key.update","applicationIds":[%q]}}`,
		time.Now().UnixMilli(), faTenant, faApp)
	if code, resp := in.webhook(t, body); code != http.StatusOK {
		t.Fatalf("jwt.public-key.update: %d %s, want 200", code, resp)
	}
	eventually(t, "the JWKS is fetched after the answer", func() bool { return iss.Fetches() > before })
}
