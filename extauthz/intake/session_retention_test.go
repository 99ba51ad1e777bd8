package intake_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
)

// TestSessionStaysRevokedForTheSessionLifetime: a session (a FusionAuth
// refresh token, an OIDC sid) outlives any one access token by refreshing,
// and FusionAuth's /oauth2/logout does not end the refresh token. So a
// revoked session stays revoked — a token of that sid issued long after the
// revocation is denied — until the issuer's session lifetime (default 30
// days) has passed, plus the lifetime of the last token the session could
// mint; then the entry is swept from the store and dropped from the index.
// Every source that revokes a session is covered.
func TestSessionStaysRevokedForTheSessionLifetime(t *testing.T) {
	sources := map[string]func(t *testing.T, e *retentionEnv, now time.Time, sid string){
		"admin API": func(t *testing.T, e *retentionEnv, now time.Time, sid string) {
			post(t, e.admin+"/v1/revocations", "application/json", fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":%q}`,
				e.iss.URL, sid), http.StatusCreated, adminAuth())
		},
		"logout route": func(t *testing.T, e *retentionEnv, now time.Time, sid string) {
			id := &token.Identity{Issuer: e.iss.URL, Subject: "alice", TokenID: "j-logout", SessionID: sid,
				IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(10 * time.Minute)}
			if err := e.revoker.RevokeLogout(t.Context(), id, true, false, false); err != nil {
				t.Fatal(err)
			}
		},
		"back-channel logout": func(t *testing.T, e *retentionEnv, now time.Time, sid string) {
			lt := e.logoutToken(t, "lt-session", now.Add(-5*time.Second), "", sid)
			post(t, e.bcl, "application/x-www-form-urlencoded", "logout_token="+url.QueryEscape(lt), http.StatusOK, http.Header{})
		},
		"fusionauth refresh-token revoke": func(t *testing.T, e *retentionEnv, now time.Time, sid string) {
			e.fusionAuth(t, event("jwt.refresh-token.revoke", "fa-session", now.Add(-2*time.Second).UnixMilli(), fmt.Sprintf(
				`"applicationId":%q,"userId":%q,"refreshToken":{"id":%q,"applicationId":%q,"userId":%q,"insertInstant":%d,"startInstant":%d},"applicationTimeToLiveInSeconds":{%q:3600}`,
				appID, userID, sid, appID, userID, now.Add(-time.Hour).UnixMilli(), now.Add(-time.Hour).UnixMilli(), appID)))
		},
	}
	for name, revoke := range sources {
		t.Run(name, func(t *testing.T) {
			e := newRetentionEnv(t)
			start := e.clock.Now()
			const sid = "s-refreshed"
			revoke(t, e, start, sid)
			// A token the session mints at `at`, by refreshing.
			fresh := func(at time.Time) string {
				return e.token(t, fmt.Sprintf("j-%d", at.Unix()), at.Add(-time.Minute), at.Add(10*time.Minute), jwt.MapClaims{"sid": sid})
			}
			for _, after := range []time.Duration{time.Minute, maxLifetime + leeway + time.Hour, 24 * time.Hour,
				intake.DefaultSessionLifetime - time.Minute} {
				at := start.Add(after)
				e.clock.Set(at)
				if got := e.decision(t, fresh(at)); got != "token_revoked" {
					t.Errorf("%v after the revocation, a token of the session: %s, want token_revoked", after, got)
				}
			}
			// The last token the session can mint, just before it ends, lives
			// up to max_token_lifetime (+ leeway) more: the entry stays that long.
			end := start.Add(intake.DefaultSessionLifetime + maxLifetime + leeway)
			// (FusionAuth dates the entry from createInstant, 2s before start.)
			e.clock.Set(end.Add(-5 * time.Second))
			e.index.Expire(e.clock.Now())
			if n := e.index.Counts()[storage.KindSession]; n != 1 {
				t.Errorf("before the session lifetime is over: %d sessions in the index, want 1", n)
			}
			e.clock.Set(end.Add(time.Second))
			if n, err := e.store.Sweep(t.Context(), e.clock.Now(), time.Hour); err != nil || n == 0 {
				t.Errorf("Sweep past the session lifetime: %d, %v; want the session swept", n, err)
			}
			if list, err := e.store.List(t.Context(), storage.ListOptions{Kind: storage.KindSession}); err != nil || len(list) != 0 {
				t.Errorf("after the sweep: %d session entries (%v), want 0", len(list), err)
			}
			e.index.Expire(e.clock.Now())
			if n := e.index.Counts()[storage.KindSession]; n != 0 {
				t.Errorf("past the session lifetime: %d sessions in the index, want 0", n)
			}
			if got := e.decision(t, fresh(e.clock.Now())); got != "allowed" {
				t.Errorf("past the session lifetime, a token of the sid: %s, want allowed", got)
			}
		})
	}
}
