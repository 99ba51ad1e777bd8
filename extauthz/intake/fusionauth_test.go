package intake_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

var webhookSecret = []byte("fusionauth-webhook-hmac-secret-0123456789")

// faEnv is the FusionAuth webhook receiver over real HTTP on an embedded
// store, authenticated by an HMAC signature and Basic credentials.
type faEnv struct {
	url     string
	handler http.Handler
	dbPath  string
	store   *bolt.Store
	index   *storage.Index
	issuer  string
	mu      sync.Mutex
	reg     *prometheus.Registry
	refresh int
}

func newFAEnv(t testing.TB, mutate func(*intake.FusionAuthOptions)) *faEnv {
	t.Helper()
	e := &faEnv{dbPath: filepath.Join(t.TempDir(), "db"), index: storage.NewIndex(), issuer: "acme.com", reg: prometheus.NewRegistry()}
	s, err := bolt.Open(e.dbPath, bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: webhookSecret})
	if err != nil {
		t.Fatal(err)
	}
	iss := intake.Issuer{Name: "fa", Issuer: e.issuer, MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}
	opts := intake.FusionAuthOptions{
		Issuer: iss, Signature: sig, BasicUser: "fusionauth", BasicPassword: "basic-password-123",
		RevokeOnPasswordChange: true,
		Revoker:                newRevoker(t, s, newFollower(t, s, e.index, storage.FollowerOptions{}), []intake.Issuer{iss}, nil),
		RefreshKeys:            func(context.Context, string) error { e.refresh++; return nil },
		Registerer:             e.reg,
	}
	if mutate != nil {
		mutate(&opts)
	}
	fa, err := intake.NewFusionAuth(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fa)
	t.Cleanup(srv.Close)
	e.url, e.handler = srv.URL, fa
	return e
}

// sign is what FusionAuth puts in X-FusionAuth-Signature-JWT.
func sign(t *testing.T, body []byte, secret []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"request_body_sha256": base64.StdEncoding.EncodeToString(sum[:])})
	tok.Header["kid"] = "webhook-key"
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type delivery struct {
	body      []byte
	signature string // "" computes the right one; "-" sends none
	user      string
	password  string
}

func (e *faEnv) send(t *testing.T, d delivery) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url, bytes.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json")
	switch d.signature {
	case "":
		req.Header.Set("X-FusionAuth-Signature-JWT", sign(t, d.body, webhookSecret))
	case "-":
	default:
		req.Header.Set("X-FusionAuth-Signature-JWT", d.signature)
	}
	if d.user == "" {
		d.user, d.password = "fusionauth", "basic-password-123"
	}
	req.SetBasicAuth(d.user, d.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// event builds a body shaped like FusionAuth's documented examples.
func event(typ, id string, createInstant int64, fields string) []byte {
	if fields != "" {
		fields = "," + fields
	}
	return []byte(fmt.Sprintf(`{"event":{"createInstant":%d,"id":%q,"info":{"ipAddress":"10.0.0.1","userAgent":"Mozilla/5.0"},"tenantId":"30663132-6464-6665-3032-326466613934","type":%q%s}}`,
		createInstant, id, typ, fields))
}

const (
	userID = "00000000-0000-0000-0000-000000000001"
	appID  = "3c219e58-ed0e-4b18-ad48-f4f92793ae32"
	rtID   = "8c5a8e4b-41e2-4f36-8d6b-7a2e4fbd9c10"
)

func userJSON() string {
	return fmt.Sprintf(`"user":{"active":true,"email":"richard@example.com","id":%q,"tenantId":"30663132-6464-6665-3032-326466613934","username":"richard"}`, userID)
}

// TestFusionAuthEventMapping: each event type becomes the documented entries.
func TestFusionAuthEventMapping(t *testing.T) {
	now := time.Now().Add(-time.Second).UnixMilli()
	ttl := fmt.Sprintf(`"applicationTimeToLiveInSeconds":{%q:7200}`, appID)
	cases := map[string]struct {
		body []byte
		want []string // kind/key/audience
	}{
		"refresh-token.revoke, one token": {event("jwt.refresh-token.revoke", "e1", now, fmt.Sprintf(
			`"applicationId":%q,"userId":%q,%s,"refreshToken":{"id":%q,"applicationId":%q,"userId":%q,"insertInstant":1,"startInstant":1,"metaData":{}},%s`,
			appID, userID, userJSON(), rtID, appID, userID, ttl)), []string{"session/" + rtID + "/"}},
		"refresh-token.revoke, all of a user's tokens": {event("jwt.refresh-token.revoke", "e2", now, fmt.Sprintf(
			`"userId":%q,%s,%s`, userID, userJSON(), ttl)), []string{"subject/" + userID + "/"}},
		"refresh-token.revoke, a user's tokens for one app": {event("jwt.refresh-token.revoke", "e3", now, fmt.Sprintf(
			`"applicationId":%q,"userId":%q,%s,%s`, appID, userID, userJSON(), ttl)), []string{"subject/" + userID + "/" + appID}},
		"refresh-token.revoke, all tokens of an app": {event("jwt.refresh-token.revoke", "e4", now, fmt.Sprintf(
			`"applicationId":%q,%s`, appID, ttl)), []string{"cutoff//" + appID}},
		"user.delete":                 {event("user.delete", "e5", now, userJSON()), []string{"subject/" + userID + "/"}},
		"user.deactivate":             {event("user.deactivate", "e6", now, userJSON()), []string{"subject/" + userID + "/"}},
		"user.registration.delete":    {event("user.registration.delete", "e7", now, fmt.Sprintf(`"applicationId":%q,"registration":{"applicationId":%q,"roles":["user"]},%s`, appID, appID, userJSON())), []string{"subject/" + userID + "/" + appID}},
		"user.password.update":        {event("user.password.update", "e8", now, userJSON()), []string{"subject/" + userID + "/"}},
		"user.password.reset.success": {event("user.password.reset.success", "e9", now, userJSON()), []string{"subject/" + userID + "/"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newFAEnv(t, nil)
			code, body := e.send(t, delivery{body: tc.body})
			if code != http.StatusOK || !strings.Contains(body, `"applied"`) {
				t.Fatalf("delivery: %d %s", code, body)
			}
			var got []string
			if _, err := e.store.Snapshot(t.Context(), time.Now(), func(r storage.Revocation) error {
				got = append(got, fmt.Sprintf("%s/%s/%s", r.Kind, r.Key, r.Audience))
				if r.Issuer != "acme.com" || !strings.HasPrefix(r.Source, "fusionauth:") {
					t.Errorf("entry %+v: want issuer acme.com and a fusionauth source", r)
				}
				if (r.Kind == storage.KindSubject || r.Kind == storage.KindCutoff) && r.RevokedBefore.UnixMilli() != now {
					t.Errorf("revoked_before %v, want createInstant %v", r.RevokedBefore, time.UnixMilli(now))
				}
				if strings.Contains(string(tc.body), "7200") && r.ExpiresAt.Before(time.UnixMilli(now).Add(2*time.Hour)) {
					t.Errorf("expires_at %v: shorter than the application's access-token TTL", r.ExpiresAt)
				}
				return nil
			}); err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("entries = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFusionAuthOptInSubjectOnRefreshTokenRevoke(t *testing.T) {
	e := newFAEnv(t, func(o *intake.FusionAuthOptions) { o.RevokeSubjectOnRefreshTokenRevoke = true })
	body := event("jwt.refresh-token.revoke", "e1", time.Now().UnixMilli(), fmt.Sprintf(
		`"applicationId":%q,"userId":%q,"refreshToken":{"id":%q,"applicationId":%q,"userId":%q}`, appID, userID, rtID, appID, userID))
	if code, b := e.send(t, delivery{body: body}); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	if n := countEntries(t, e); n != 2 {
		t.Errorf("%d entries, want the session and the subject for the app", n)
	}
}

func countEntries(t *testing.T, e *faEnv) int {
	t.Helper()
	n := 0
	if _, err := e.store.Snapshot(t.Context(), time.Now(), func(storage.Revocation) error { n++; return nil }); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return n
}

// TestFusionAuthRejectsAndWritesNothing: every bad delivery gets its 4xx and
// the store file is byte-for-byte what it was.
func TestFusionAuthRejectsAndWritesNothing(t *testing.T) {
	e := newFAEnv(t, nil)
	good := event("user.delete", "e-good", time.Now().UnixMilli(), userJSON())
	tampered := bytes.Replace(good, []byte("richard"), []byte("mallory"), 1)
	cases := map[string]struct {
		d    delivery
		code int
	}{
		"missing signature":          {delivery{body: good, signature: "-"}, 401},
		"forged signature":           {delivery{body: good, signature: sign(t, good, []byte("not-the-webhook-secret-0123456789"))}, 401},
		"tampered body":              {delivery{body: tampered, signature: sign(t, good, webhookSecret)}, 401},
		"garbage signature":          {delivery{body: good, signature: "not a jws"}, 401},
		"alg none signature":         {delivery{body: good, signature: "eyJhbGciOiJub25lIn0.eyJyZXF1ZXN0X2JvZHlfc2hhMjU2IjoieCJ9."}, 401},
		"wrong basic password":       {delivery{body: good, user: "fusionauth", password: "guess"}, 401},
		"wrong basic user":           {delivery{body: good, user: "admin", password: "basic-password-123"}, 401},
		"oversized body":             {delivery{body: append([]byte(`{"event":{"x":"`), bytes.Repeat([]byte("a"), 2<<20)...)}, 413},
		"invalid JSON":               {delivery{body: []byte(`{"event":`)}, 400},
		"not an event":               {delivery{body: []byte(`[1,2,3]`)}, 400},
		"missing createInstant":      {delivery{body: []byte(`{"event":{"id":"e-x","type":"user.delete",` + userJSON() + `}}`)}, 400},
		"user.delete without a user": {delivery{body: event("user.delete", "e-u", time.Now().UnixMilli(), "")}, 400},
		"missing event id":           {delivery{body: []byte(`{"event":{"type":"user.delete","createInstant":1,` + userJSON() + `}}`)}, 400},
	}
	before, err := os.ReadFile(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range cases {
		code, body := e.send(t, tc.d)
		if code != tc.code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d with an error", name, code, body, tc.code)
		}
	}
	after, err := os.ReadFile(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("rejected deliveries changed the store file")
	}
	// The genuine delivery still works.
	if code, body := e.send(t, delivery{body: good}); code != 200 {
		t.Errorf("good delivery after the bad ones: %d %s", code, body)
	}
}

func TestFusionAuthDuplicateAndOutOfOrder(t *testing.T) {
	e := newFAEnv(t, nil)
	newer := time.Now().Add(-time.Second)
	older := newer.Add(-time.Minute)
	first := event("user.deactivate", "e-new", newer.UnixMilli(), userJSON())
	if code, body := e.send(t, delivery{body: first}); code != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("first: %d %s", code, body)
	}
	snap := func() string {
		var s string
		if _, err := e.store.Snapshot(t.Context(), time.Now(), func(r storage.Revocation) error {
			s += fmt.Sprintf("%d %s %s;", r.Seq, r.RevokedBefore.Format(time.RFC3339Nano), r.ExpiresAt.Format(time.RFC3339Nano))
			return nil
		}); err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		return s
	}
	state := snap()
	if code, body := e.send(t, delivery{body: first}); code != 200 || !strings.Contains(body, "duplicate") {
		t.Errorf("redelivery: %d %s, want 200 duplicate", code, body)
	}
	if code, _ := e.send(t, delivery{body: event("user.deactivate", "e-old", older.UnixMilli(), userJSON())}); code != 200 {
		t.Errorf("older event: %d", code)
	}
	if got := snap(); got != state {
		t.Errorf("a duplicate or older event changed the entry:\n got %s\nwant %s", got, state)
	}
}

func TestFusionAuthIgnoresTestAndUnknownTypes(t *testing.T) {
	e := newFAEnv(t, func(o *intake.FusionAuthOptions) { o.TenantIDs = []string{"30663132-6464-6665-3032-326466613934"} })
	for _, typ := range []string{"test", "user.login.success", "user.create"} {
		if code, body := e.send(t, delivery{body: event(typ, "e-"+typ, time.Now().UnixMilli(), userJSON())}); code != 200 || !strings.Contains(body, "ignored") {
			t.Errorf("%s: %d %s, want 200 ignored", typ, code, body)
		}
	}
	other := bytes.Replace(event("user.delete", "e-t", time.Now().UnixMilli(), userJSON()), []byte("30663132-6464"), []byte("99999999-6464"), 1)
	if code, body := e.send(t, delivery{body: other}); code != 200 || !strings.Contains(body, "ignored") {
		t.Errorf("another tenant's event: %d %s, want 200 ignored", code, body)
	}
	if n := countEntries(t, e); n != 0 {
		t.Errorf("ignored events wrote %d entries", n)
	}
	if got := webhookCount(t, e.reg, "fusionauth", "test", "ignored"); got != 1 {
		t.Errorf("test/ignored events counted %v, want 1", got)
	}
	if got := webhookCount(t, e.reg, "fusionauth", "other", "ignored"); got != 2 {
		t.Errorf("other/ignored events counted %v, want 2", got)
	}
	// The refresh comes after the answer, from Run (TestFusionAuthPublicKeyUpdateRefreshesAfterTheAnswer).
	if code, _ := e.send(t, delivery{body: event("jwt.public-key.update", "e-k", time.Now().UnixMilli(), `"applicationIds":["`+appID+`"]`)}); code != 200 || e.refresh != 0 {
		t.Errorf("jwt.public-key.update: %d, %d refreshes during the call; want 200 and none", code, e.refresh)
	}
}

// TestFusionAuthSignedWithJWKS: asymmetric signing keys come from
// FusionAuth's JWKS, with pinned algorithms.
func TestFusionAuthSignedWithJWKS(t *testing.T) {
	fa := tokentest.NewServer(t, "")
	sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{JWKSURI: fa.URL + "/jwks.json", Algorithms: []string{"RS256"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sig.Run(ctx)
	e := newFAEnv(t, func(o *intake.FusionAuthOptions) { o.Signature, o.BasicPassword = sig, "" })
	body := event("user.delete", "e-rsa", time.Now().UnixMilli(), userJSON())
	sum := sha256.Sum256(body)
	jws, err := fa.Sign(jwt.MapClaims{"request_body_sha256": base64.StdEncoding.EncodeToString(sum[:])}, map[string]any{"typ": nil})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, resp := e.send(t, delivery{body: body, signature: jws})
		if code == 200 {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("RS256-signed delivery: %d %s", code, resp)
		}
		time.Sleep(10 * time.Millisecond) // keys still loading
	}
	// HS256 is not pinned for this receiver: an HMAC signature made with the public key bytes fails.
	if code, _ := e.send(t, delivery{body: body, signature: sign(t, body, []byte("anything-at-all-0123456789-abcdefgh"))}); code != 401 {
		t.Errorf("HS256 signature against a JWKS-only receiver: %d, want 401", code)
	}
}

// TestFusionAuthStoreDownIs503: when the store cannot take the write,
// FusionAuth gets a 503 and retries (or fails its transaction).
func TestFusionAuthStoreDownIs503(t *testing.T) {
	e := newFAEnv(t, nil)
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := e.send(t, delivery{body: event("user.delete", "e-down", time.Now().UnixMilli(), userJSON())}); code != http.StatusServiceUnavailable {
		t.Errorf("store closed: %d %s, want 503", code, body)
	}
}

// TestFusionAuthTenantFromUser: user events may carry the tenant only in
// user.tenantId; a configured tenant there is processed, another ignored.
func TestFusionAuthTenantFromUser(t *testing.T) {
	e := newFAEnv(t, func(o *intake.FusionAuthOptions) { o.TenantIDs = []string{"tenant-a"} })
	body := func(id, tenant string) []byte {
		return []byte(fmt.Sprintf(`{"event":{"createInstant":%d,"id":%q,"type":"user.deactivate","user":{"id":%q,"tenantId":%q}}}`,
			time.Now().UnixMilli(), id, userID, tenant))
	}
	if code, resp := e.send(t, delivery{body: body("e-a", "tenant-a")}); code != 200 || !strings.Contains(resp, "applied") {
		t.Errorf("configured tenant in user.tenantId: %d %s, want applied", code, resp)
	}
	if code, resp := e.send(t, delivery{body: body("e-b", "tenant-b")}); code != 200 || !strings.Contains(resp, "ignored") {
		t.Errorf("another tenant in user.tenantId: %d %s, want ignored", code, resp)
	}
}

// TestFusionAuthDuplicateWaitsForTheOriginal: FusionAuth redelivers an event
// to another replica after the first one committed it (its answer was
// lost). The redelivery writes nothing, and is answered only once the
// original change is in that replica's index too.
func TestFusionAuthDuplicateWaitsForTheOriginal(t *testing.T) {
	e := newFAEnv(t, nil)
	first := event("user.deactivate", "e-dup", time.Now().Add(-time.Second).UnixMilli(), userJSON())
	if code, body := e.send(t, delivery{body: first}); code != 200 || !strings.Contains(body, "applied") {
		t.Fatalf("first: %d %s", code, body)
	}
	// Replica B: the same store, its own index, its follower not running.
	other := storage.NewIndex()
	sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: webhookSecret})
	if err != nil {
		t.Fatal(err)
	}
	iss := intake.Issuer{Name: "fa", Issuer: e.issuer, MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}
	fa, err := intake.NewFusionAuth(intake.FusionAuthOptions{
		Issuer: iss, Signature: sig, BasicUser: "fusionauth", BasicPassword: "basic-password-123",
		Revoker:     newRevoker(t, e.store, newFollower(t, e.store, other, storage.FollowerOptions{}), []intake.Issuer{iss}, nil),
		RefreshKeys: func(context.Context, string) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fa)
	t.Cleanup(srv.Close)
	b := &faEnv{url: srv.URL}
	if code, body := b.send(t, delivery{body: first}); code != 200 || !strings.Contains(body, "duplicate") {
		t.Fatalf("redelivery to replica B: %d %s, want 200 duplicate", code, body)
	}
	if got, want := other.Seq(), e.index.Seq(); got < want || other.Len() == 0 {
		t.Errorf("replica B answered the duplicate at seq %d with %d entries; the original is at seq %d", got, other.Len(), want)
	}
}
