package intake_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

const clientID = "orders-web"

type bclEnv struct {
	op    *tokentest.Issuer
	url   string
	store *bolt.Store
}

func newBCLEnv(t *testing.T) *bclEnv {
	t.Helper()
	e := &bclEnv{op: tokentest.NewServer(t, "api")}
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "op", Issuer: e.op.URL, Audiences: []string{"api"},
		LogoutAudiences: []string{clientID}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "op"); err != nil {
		t.Fatal(err)
	}
	iss := intake.Issuer{Name: "op", Issuer: e.op.URL, MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}
	bc, err := intake.NewBackchannel(intake.BackchannelOptions{
		Verifier: v, RevokeSubject: true,
		Revoker: newRevoker(t, s, newFollower(t, s, storage.NewIndex(), storage.FollowerOptions{}), []intake.Issuer{iss}, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(bc)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// logoutClaims are a valid logout token's claims (§2.4).
func (e *bclEnv) logoutClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": e.op.URL, "aud": clientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": "lt-" + now.Format("150405.000000000"), "sub": "alice", "sid": "sid-42",
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

func (e *bclEnv) post(t *testing.T, logoutToken string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.PostForm(e.url, url.Values{"logout_token": {logoutToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (e *bclEnv) sign(t *testing.T, c jwt.MapClaims, header map[string]any) string {
	t.Helper()
	if header == nil {
		header = map[string]any{"typ": "logout+jwt"}
	}
	s, err := e.op.Sign(c, header)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *bclEnv) entries(t *testing.T) []string {
	t.Helper()
	var out []string
	if _, err := e.store.Snapshot(t.Context(), time.Now(), func(r storage.Revocation) error {
		out = append(out, r.Kind.String()+":"+r.Key)
		return nil
	}); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return out
}

func TestBackchannelLogoutRevokesSessionAndSubject(t *testing.T) {
	e := newBCLEnv(t)
	code, body, h := e.post(t, e.sign(t, e.logoutClaims(), nil))
	if code != http.StatusOK || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("valid logout token: %d %s (Cache-Control %q)", code, body, h.Get("Cache-Control"))
	}
	if got := strings.Join(e.entries(t), ","); got != "session:sid-42,subject:alice" {
		t.Errorf("entries = %s, want the session and the subject", got)
	}
	// Untyped logout tokens are allowed too (typ is optional in §2.4).
	c := e.logoutClaims()
	c["jti"], c["sid"] = "lt-untyped", "sid-43"
	delete(c, "sub")
	if code, body, _ := e.post(t, e.sign(t, c, map[string]any{"typ": nil})); code != 200 {
		t.Errorf("untyped logout token with only sid: %d %s", code, body)
	}
}

func TestBackchannelLogoutRejections(t *testing.T) {
	e := newBCLEnv(t)
	replayed := e.sign(t, e.logoutClaims(), nil)
	if code, body, _ := e.post(t, replayed); code != 200 {
		t.Fatalf("first use: %d %s", code, body)
	}
	before := e.entries(t)
	mutate := func(f func(jwt.MapClaims)) string {
		c := e.logoutClaims()
		f(c)
		return e.sign(t, c, nil)
	}
	access, _ := e.op.Mint("alice", time.Minute, nil)
	cases := map[string]string{
		"nonce present":  mutate(func(c jwt.MapClaims) { c["nonce"] = "n-1" }),
		"events missing": mutate(func(c jwt.MapClaims) { delete(c, "events") }),
		"events without the logout event": mutate(func(c jwt.MapClaims) {
			c["events"] = map[string]any{"https://schemas.openid.net/secevent/risc/event-type/account-disabled": map[string]any{}}
		}),
		"wrong aud":           mutate(func(c jwt.MapClaims) { c["aud"] = "another-client" }),
		"access token":        access,
		"neither sub nor sid": mutate(func(c jwt.MapClaims) { delete(c, "sub"); delete(c, "sid") }),
		"no jti":              mutate(func(c jwt.MapClaims) { delete(c, "jti") }),
		"expired":             mutate(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
		"typ at+jwt":          e.sign(t, e.logoutClaims(), map[string]any{"typ": "at+jwt"}),
		"unknown issuer":      mutate(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }),
		"not a JWT":           "logout",
		"signed by another OP": func() string {
			o, _ := tokentest.New(e.op.URL, "")
			s, _ := o.Sign(e.logoutClaims(), map[string]any{"typ": "logout+jwt"})
			return s
		}(),
	}
	for name, lt := range cases {
		code, body, _ := e.post(t, lt)
		if code != http.StatusBadRequest || !strings.Contains(body, `"error":"invalid_request"`) || !strings.Contains(body, "error_description") {
			t.Errorf("%s: %d %s, want 400 invalid_request", name, code, body)
		}
	}
	resp, err := http.Post(e.url, "application/x-www-form-urlencoded", strings.NewReader("nothing=here"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("no logout_token: %d, want 400", resp.StatusCode)
	}
	if after := e.entries(t); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("rejected logout tokens changed the store: %v → %v", before, after)
	}
}

// TestBackchannelLogoutTypedJWT: Keycloak up to 24 and Authentik up to
// 2025.12 type their logout tokens "JWT". §2.4 only recommends logout+jwt;
// the events claim, the logout audience and the absent nonce keep a logout
// token apart from access and ID tokens, so typ JWT is accepted.
func TestBackchannelLogoutTypedJWT(t *testing.T) {
	e := newBCLEnv(t)
	for _, typ := range []string{"JWT", "jwt"} {
		c := e.logoutClaims()
		c["jti"] = "lt-typ-" + typ
		if code, body, _ := e.post(t, e.sign(t, c, map[string]any{"typ": typ})); code != http.StatusOK {
			t.Errorf("logout token typed %q: %d %s, want 200", typ, code, body)
		}
	}
	if got := strings.Join(e.entries(t), ","); got != "session:sid-42,subject:alice" {
		t.Errorf("entries = %s, want the session and the subject", got)
	}
}

// TestBackchannelLogoutReplayIsIdempotent: an OP that lost the answer to a
// delivery that committed retries it; the retry succeeds (200) and writes
// nothing a second time.
func TestBackchannelLogoutReplayIsIdempotent(t *testing.T) {
	e := newBCLEnv(t)
	lt := e.sign(t, e.logoutClaims(), nil)
	if code, body, _ := e.post(t, lt); code != http.StatusOK {
		t.Fatalf("first delivery: %d %s", code, body)
	}
	var before []string
	pos, err := e.store.Snapshot(t.Context(), time.Now(), func(r storage.Revocation) error {
		before = append(before, fmt.Sprintf("%d %s %v", r.Seq, r.Key, r.ExpiresAt))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body, h := e.post(t, lt)
	if code != http.StatusOK || h.Get("Cache-Control") != "no-store" {
		t.Errorf("replayed delivery: %d %s (Cache-Control %q), want 200 no-store", code, body, h.Get("Cache-Control"))
	}
	changes, err := e.store.Changes(t.Context(), storage.Position{Feed: pos.Feed}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != len(before) {
		t.Errorf("the replay wrote: %d changes for %d entries", len(changes), len(before))
	}
}

// TestBackchannelLogoutLongTokenID: the logout token's jti names the
// entries' source, which the store bounds; a long jti (the OP's to choose)
// still logs out: the source keeps its class, the rest digested.
func TestBackchannelLogoutLongTokenID(t *testing.T) {
	e := newBCLEnv(t)
	c := e.logoutClaims()
	c["jti"] = strings.Repeat("j", 2000)
	if code, body, _ := e.post(t, e.sign(t, c, nil)); code != http.StatusOK {
		t.Fatalf("logout token with a 2,000-byte jti: %d %s", code, body)
	}
	if got := strings.Join(e.entries(t), ","); got != "session:sid-42,subject:alice" {
		t.Errorf("entries = %s, want the session and the subject", got)
	}
	// The same logout again is the same source: idempotent, nothing new.
	if code, body, _ := e.post(t, e.sign(t, c, nil)); code != http.StatusOK {
		t.Fatalf("replay: %d %s", code, body)
	}
}
