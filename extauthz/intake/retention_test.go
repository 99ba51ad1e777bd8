package intake_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// The issuer of the retention tests: tokens live at most an hour, and are
// accepted up to 30 seconds past their exp.
const (
	maxLifetime = time.Hour
	leeway      = 30 * time.Second
)

// clock is the injected time of every part of a retentionEnv.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// retentionEnv is every way a revocation enters tokengate — the admin API,
// back-channel logout, FusionAuth webhooks, logout routes — and the Check
// server, over one embedded store, all on one injected clock that starts
// 400 days before the real one (so nothing depends on the calendar).
type retentionEnv struct {
	clock   *clock
	iss     *tokentest.Issuer
	store   *bolt.Store
	index   *storage.Index
	revoker *intake.Revoker
	check   *extauthz.Server
	admin   string // URL of the admin API
	bcl     string // URL of the back-channel logout receiver
	fa      string // URL of the FusionAuth webhook receiver
}

func newRetentionEnv(t *testing.T) *retentionEnv {
	t.Helper()
	e := &retentionEnv{clock: &clock{t: time.Now().Add(-400 * 24 * time.Hour).UTC().Truncate(time.Second)},
		iss: tokentest.NewServer(t, "api")}
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	e.store = s
	index := storage.NewIndex()
	e.index = index
	headers, err := policy.NewHeaderMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "idp", Issuer: e.iss.URL, Audiences: []string{"api"},
			LogoutAudiences: []string{clientID}, Leeway: leeway, MaxTokenLifetime: maxLifetime}},
		Now:    e.clock.Now,
		Derive: extauthz.Derive(headers, index, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "idp"); err != nil {
		t.Fatal(err)
	}
	iss := intake.Issuer{Name: "idp", Issuer: e.iss.URL, MaxTokenLifetime: maxLifetime, Leeway: leeway}
	f := newFollower(t, s, index, storage.FollowerOptions{Now: e.clock.Now})
	e.revoker = newRevoker(t, s, f, []intake.Issuer{iss}, e.clock.Now)
	if e.check, err = extauthz.NewServer(extauthz.Options{Verifier: v, Headers: headers, Revocations: index, Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}

	serve := func(h http.Handler) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	mux := http.NewServeMux()
	intake.NewAdmin(intake.AdminOptions{Token: adminToken, Revoker: e.revoker, Store: s, Verifier: v,
		Revocations: index, Now: e.clock.Now}).Mount(mux)
	e.admin = serve(mux)
	bc, err := intake.NewBackchannel(intake.BackchannelOptions{Verifier: v, Revoker: e.revoker, RevokeSubject: true, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.bcl = serve(bc)
	sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: webhookSecret})
	if err != nil {
		t.Fatal(err)
	}
	fa, err := intake.NewFusionAuth(intake.FusionAuthOptions{Issuer: iss, Signature: sig, Revoker: e.revoker, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.fa = serve(fa)
	return e
}

// token signs an access token of the test issuer, issued at iat and
// expiring at exp.
func (e *retentionEnv) token(t *testing.T, jti string, iat, exp time.Time, extra jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"iss": e.iss.URL, "aud": "api", "sub": "alice", "jti": jti, "iat": iat.Unix(), "exp": exp.Unix()}
	for k, v := range extra {
		c[k] = v
	}
	tok, err := e.iss.Sign(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends body to url and fails the test unless it answers want.
func post(t *testing.T, url, contentType, body string, want int, header http.Header) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d, want %d", url, resp.StatusCode, want)
	}
}

// stored returns the one entry of this kind and key.
func (e *retentionEnv) stored(t *testing.T, kind storage.Kind, key string) storage.Revocation {
	t.Helper()
	list, err := e.store.List(t.Context(), storage.ListOptions{Kind: kind, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d %s entries with key %q, want 1: %+v", len(list), kind, key, list)
	}
	return list[0]
}

// TestRetention: every source sets every kind's expires_at by the rules of
// the revocation model, the latest instant at which a token the entry
// matches can still pass verification:
//
//	token    exp + leeway
//	subject  revoked_before + max token lifetime + leeway
//	cutoff   revoked_before + max token lifetime + leeway
//	session  revocation time + session lifetime + max token lifetime + leeway
//
// A session outlives any one token by refreshing: it can mint tokens for
// its whole lifetime (default 30 days), and the last of them lives max
// token lifetime (+ leeway) more.
func TestRetention(t *testing.T) {
	type entry struct {
		kind    storage.Kind
		key     string
		before  time.Duration // revoked_before, from the clock when the request is made; subject and cutoff only
		expires time.Duration // expires_at, from the clock when the request is made
	}
	// Every instant below is relative to now, the clock when the request is made.
	const exp = 20 * time.Minute // the revoked token's exp
	keep := maxLifetime + leeway
	keepSession := intake.DefaultSessionLifetime + maxLifetime + leeway
	cases := map[string]struct {
		send func(t *testing.T, e *retentionEnv, now time.Time)
		want []entry
	}{
		"admin token by value": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				tok := e.token(t, "j-value", now.Add(-time.Minute), now.Add(exp), nil)
				post(t, e.admin+"/v1/revocations", "application/json", `{"token":"`+tok+`"}`, http.StatusCreated, adminAuth())
			},
			want: []entry{{kind: storage.KindToken, key: "j-value", expires: exp + leeway}},
		},
		"admin token by jti": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				post(t, e.admin+"/v1/revocations", "application/json", fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"j-id","expires_at":%q}`,
					e.iss.URL, now.Add(exp).Format(time.RFC3339)), http.StatusCreated, adminAuth())
			},
			// Without the token, its exp is only the operator's word: the
			// entry is kept for the max token lifetime from now (keep).
			want: []entry{{kind: storage.KindToken, key: "j-id", expires: keep}},
		},
		"admin session": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				post(t, e.admin+"/v1/revocations", "application/json", fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":"s-admin"}`,
					e.iss.URL), http.StatusCreated, adminAuth())
			},
			want: []entry{{kind: storage.KindSession, key: "s-admin", expires: keepSession}},
		},
		"admin subject, revoked now": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				post(t, e.admin+"/v1/revocations", "application/json", fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"bob"}`,
					e.iss.URL), http.StatusCreated, adminAuth())
			},
			want: []entry{{kind: storage.KindSubject, key: "bob", expires: keep}},
		},
		"admin cutoff, revoked before ten minutes ago": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				post(t, e.admin+"/v1/revocations", "application/json", fmt.Sprintf(`{"kind":"cutoff","issuer":%q,"revoked_before":%q}`,
					e.iss.URL, now.Add(-10*time.Minute).Format(time.RFC3339)), http.StatusCreated, adminAuth())
			},
			want: []entry{{kind: storage.KindCutoff, before: -10 * time.Minute, expires: -10*time.Minute + keep}},
		},
		"logout route": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				id := &token.Identity{Issuer: e.iss.URL, Subject: "carol", TokenID: "j-logout", SessionID: "s-logout",
					IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(exp)}
				if err := e.revoker.RevokeLogout(t.Context(), id, true, true, false); err != nil {
					t.Fatal(err)
				}
			},
			want: []entry{
				{kind: storage.KindToken, key: "j-logout", expires: exp + leeway},
				{kind: storage.KindSession, key: "s-logout", expires: keepSession},
				{kind: storage.KindSubject, key: "carol", expires: keep},
			},
		},
		// A token already revoked logs out as of now too (dating it by its iat
		// would leave the user's later tokens valid on a subject route, and
		// under-keep a sliding session); its replays are kept from writing by
		// skipping what the index holds, not by dating.
		"logout route, token already revoked": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				id := &token.Identity{Issuer: e.iss.URL, Subject: "carl", TokenID: "j-revoked", SessionID: "s-revoked",
					IssuedAt: now.Add(-5 * time.Minute), ExpiresAt: now.Add(exp)}
				if err := e.revoker.RevokeLogout(t.Context(), id, true, true, true); err != nil {
					t.Fatal(err)
				}
			},
			want: []entry{
				{kind: storage.KindToken, key: "j-revoked", expires: exp + leeway},
				{kind: storage.KindSession, key: "s-revoked", expires: keepSession},
				{kind: storage.KindSubject, key: "carl", expires: keep},
			},
		},
		"logout route, IdP clock ahead": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				id := &token.Identity{Issuer: e.iss.URL, Subject: "dave", IssuedAt: now.Add(10 * time.Second), ExpiresAt: now.Add(exp)}
				if err := e.revoker.RevokeLogout(t.Context(), id, false, true, false); err != nil {
					t.Fatal(err)
				}
			},
			want: []entry{{kind: storage.KindSubject, key: "dave", before: 10 * time.Second, expires: 10*time.Second + keep}},
		},
		"back-channel logout": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				lt := e.logoutToken(t, "lt-1", now.Add(-5*time.Second), "erin", "s-bcl")
				post(t, e.bcl, "application/x-www-form-urlencoded", "logout_token="+url.QueryEscape(lt), http.StatusOK, http.Header{})
			},
			want: []entry{
				{kind: storage.KindSession, key: "s-bcl", expires: keepSession},
				{kind: storage.KindSubject, key: "erin", before: -5 * time.Second, expires: keep},
			},
		},
		"back-channel logout, OP clock ahead": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				lt := e.logoutToken(t, "lt-2", now.Add(20*time.Second), "frank", "")
				post(t, e.bcl, "application/x-www-form-urlencoded", "logout_token="+url.QueryEscape(lt), http.StatusOK, http.Header{})
			},
			want: []entry{{kind: storage.KindSubject, key: "frank", before: 20 * time.Second, expires: 20*time.Second + keep}},
		},
		"fusionauth user.delete": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				e.fusionAuth(t, event("user.delete", "fa-1", now.Add(-2*time.Second).UnixMilli(), userJSON()))
			},
			want: []entry{{kind: storage.KindSubject, key: userID, before: -2 * time.Second, expires: -2*time.Second + keep}},
		},
		"fusionauth user's refresh tokens, application TTL longer than the issuer's": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				e.fusionAuth(t, event("jwt.refresh-token.revoke", "fa-4", now.Add(-2*time.Second).UnixMilli(), fmt.Sprintf(
					`"applicationId":%q,"userId":%q,"applicationTimeToLiveInSeconds":{%q:7200}`, appID, userID, appID)))
			},
			want: []entry{{kind: storage.KindSubject, key: userID, before: -2 * time.Second, expires: -2*time.Second + 2*time.Hour + leeway}},
		},
		"fusionauth one refresh token: its session, for the session lifetime": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				e.fusionAuth(t, event("jwt.refresh-token.revoke", "fa-2", now.Add(-2*time.Second).UnixMilli(), fmt.Sprintf(
					`"applicationId":%q,"userId":%q,"refreshToken":{"id":%q,"applicationId":%q,"userId":%q},"applicationTimeToLiveInSeconds":{%q:7200}`,
					appID, userID, rtID, appID, userID, appID)))
			},
			want: []entry{{kind: storage.KindSession, key: rtID, expires: -2*time.Second + keepSession}},
		},
		"fusionauth application cutoff": {
			send: func(t *testing.T, e *retentionEnv, now time.Time) {
				e.fusionAuth(t, event("jwt.refresh-token.revoke", "fa-3", now.Add(-2*time.Second).UnixMilli(), fmt.Sprintf(
					`"applicationId":%q`, appID)))
			},
			want: []entry{{kind: storage.KindCutoff, before: -2 * time.Second, expires: -2*time.Second + keep}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newRetentionEnv(t)
			now := e.clock.Now()
			tc.send(t, e, now)
			for _, w := range tc.want {
				got := e.stored(t, w.kind, w.key)
				if want := now.Add(w.expires); !got.ExpiresAt.Equal(want) {
					t.Errorf("%s %q: expires_at = now%+v, want now%+v", w.kind, w.key, got.ExpiresAt.Sub(now), w.expires)
				}
				if w.kind != storage.KindSubject && w.kind != storage.KindCutoff {
					continue
				}
				if want := now.Add(w.before); !got.RevokedBefore.Equal(want) {
					t.Errorf("%s %q: revoked_before = now%+v, want now%+v", w.kind, w.key, got.RevokedBefore.Sub(now), w.before)
				}
			}
		})
	}
}

// TestRevokedTokenDeniedUntilItExpires: a token revoked by value is denied
// for as long as it would otherwise pass verification — one second before
// its exp, and one second before the end of the leeway after it — and only
// then does the verifier, not an allow, take over.
func TestRevokedTokenDeniedUntilItExpires(t *testing.T) {
	e := newRetentionEnv(t)
	start := e.clock.Now()
	exp := start.Add(10 * time.Minute)
	tok := e.token(t, "j-1", start, exp, nil)
	if got := e.decision(t, tok); got != "allowed" {
		t.Fatalf("before the revocation: %s, want allowed", got)
	}
	post(t, e.admin+"/v1/revocations", "application/json", `{"token":"`+tok+`"}`, http.StatusCreated, adminAuth())
	steps := []struct {
		at   time.Time
		want string
	}{
		{start, "token_revoked"},
		{exp.Add(-time.Second), "token_revoked"},
		{exp, "token_revoked"},
		{exp.Add(leeway - time.Second), "token_revoked"},
		{exp.Add(leeway + time.Second), "token_expired"},
	}
	for _, s := range steps {
		e.clock.Set(s.at)
		if got := e.decision(t, tok); got != s.want {
			t.Errorf("at exp%+v: %s, want %s", s.at.Sub(exp), got, s.want)
		}
	}
}

// decision is "allowed" or the denial reason of a Check with tok.
func (e *retentionEnv) decision(t *testing.T, tok string) string {
	t.Helper()
	resp, err := e.check.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "api.example.com", Path: "/",
			Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		return "allowed"
	}
	reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
	return reason
}

// logoutToken signs a back-channel logout token issued at iat; sid may be
// empty.
func (e *retentionEnv) logoutToken(t *testing.T, jti string, iat time.Time, sub, sid string) string {
	t.Helper()
	c := jwt.MapClaims{"iss": e.iss.URL, "aud": clientID, "iat": iat.Unix(), "exp": iat.Add(2 * time.Minute).Unix(),
		"jti": jti, "sub": sub, "events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}}}
	if sid != "" {
		c["sid"] = sid
	}
	lt, err := e.iss.Sign(c, map[string]any{"typ": "logout+jwt"})
	if err != nil {
		t.Fatal(err)
	}
	return lt
}

// fusionAuth delivers a signed webhook body.
func (e *retentionEnv) fusionAuth(t *testing.T, body []byte) {
	t.Helper()
	post(t, e.fa, "application/json", string(body), http.StatusOK,
		http.Header{"X-Fusionauth-Signature-Jwt": {sign(t, body, webhookSecret)}})
}

func adminAuth() http.Header { return http.Header{"Authorization": {"Bearer " + adminToken}} }
