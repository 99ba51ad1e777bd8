package extauthz_test

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// TestLogoutRouteWithRevokedTokenReachesTheIdP: a token already revoked
// (a back-channel logout, an admin, a logout elsewhere) is still let through
// on a logout route, so that the IdP ends its session too; a logout route
// can only log out. It carries no identity: every identity header is
// removed, none is set. The route's revocations are still made durable.
// Everywhere else the token stays denied. Over real gRPC.
func TestLogoutRouteWithRevokedTokenReachesTheIdP(t *testing.T) {
	e := newRevocationEnv(t, false)
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/logout", RevokeSession: true}})
	if err != nil {
		t.Fatal(err)
	}
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}, CacheMaxEntries: 100, Derive: extauthz.Derive(headers, e.index, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	rev, err := intake.NewRevoker(e.store, e.follower, []intake.Issuer{{Name: "a", Issuer: e.iss.URL,
		MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := serveGRPC(t, newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index,
		MaxStaleness: time.Minute, LogoutRoutes: routes, Logout: rev}))

	claims := e.iss.Claims("user-1", 10*time.Minute)
	claims["sid"], claims["roles"] = "sid-1", []any{"admin"}
	tok := mint(t, e.iss, claims, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
	check := func(path string) *authv3.CheckResponse {
		t.Helper()
		req := checkRequest(map[string]string{"authorization": "Bearer " + tok, "x-auth-subject": "admin"})
		req.Attributes.Request.Http.Path = path
		resp, err := client.Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check %s: %v", path, err)
		}
		return resp
	}
	assertDenied(t, check("/orders"), "token_revoked")

	resp := check("/logout")
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatal("a revoked token on a logout route was denied; the IdP never hears of the logout")
	}
	if len(ok.GetHeaders()) != 0 {
		t.Errorf("identity headers set for a revoked token: %v", ok.GetHeaders())
	}
	removed := ok.GetHeadersToRemove()
	for _, h := range []string{"x-auth-subject", "x-auth-issuer", "x-auth-token-id", "x-auth-roles"} {
		if !slices.Contains(removed, h) {
			t.Errorf("headers_to_remove = %v, want %s among them (a client could supply it)", removed, h)
		}
	}
	// An upstream that verifies the JWT by itself, statelessly, would take
	// the revoked token: it goes no further than tokengate.
	if !slices.Contains(removed, "authorization") {
		t.Errorf("headers_to_remove = %v, want authorization among them (the revoked token would reach the upstream)", removed)
	}
	// Envoy rules (RBAC, Lua, access logs) keyed on reason == allowed, or on
	// a sub, must not take the revoked token for an authenticated one.
	md := resp.GetDynamicMetadata().AsMap()
	if md["reason"] != "logout_revoked" {
		t.Errorf("metadata reason = %v, want logout_revoked", md["reason"])
	}
	for _, k := range []string{"sub", "jti", "iss"} {
		if v, ok := md[k]; ok {
			t.Errorf("metadata carries %s = %v for a revoked token: %v", k, v, md)
		}
	}
	if md["decision_id"] == "" || md["decision_id"] == nil {
		t.Errorf("metadata has no decision_id: %v", md)
	}
	// The route's session revocation was made durable on the way.
	found := false
	if _, err := e.store.Snapshot(t.Context(), time.Now(), func(r storage.Revocation) error {
		found = found || (r.Kind == storage.KindSession && r.Key == "sid-1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Error("the logout route's session revocation was not stored")
	}
	assertDenied(t, check("/orders"), "token_revoked")
}

// logoutEnv is a Check server (called directly) with one logout route
// and a real revoker behind it.
type logoutEnv struct {
	*revocationEnv
	srv     *extauthz.Server
	applies *countingStore // the revoker's store: counts its writes
}

// countingStore counts the Apply calls made through it: a store write is a
// transaction (bbolt with fdatasync, PostgreSQL with row locks) even when
// it changes nothing.
type countingStore struct {
	storage.Store
	n    atomic.Int64
	fail atomic.Bool // every Apply fails with storage.ErrUnavailable
}

func (c *countingStore) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	c.n.Add(1)
	if c.fail.Load() {
		return storage.Result{}, storage.ErrUnavailable
	}
	return c.Store.Apply(ctx, w)
}

func newLogoutEnv(t *testing.T, route policy.LogoutRoute, opts ...func(*extauthz.Options)) *logoutEnv {
	t.Helper()
	e := newRevocationEnv(t, false)
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{route})
	if err != nil {
		t.Fatal(err)
	}
	headers, _ := policy.NewHeaderMap(nil)
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}, CacheMaxEntries: 100, Derive: extauthz.Derive(headers, e.index, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: e.store}
	rev, err := intake.NewRevoker(cs, e.follower, []intake.Issuer{{Name: "a", Issuer: e.iss.URL,
		MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index, MaxStaleness: time.Minute,
		LogoutRoutes: routes, Logout: rev}
	for _, f := range opts {
		f(&o)
	}
	return &logoutEnv{revocationEnv: e, applies: cs, srv: newServer(t, o)}
}

func (e *logoutEnv) checkPath(t *testing.T, tok, path string) *authv3.CheckResponse {
	t.Helper()
	req := checkRequest(map[string]string{"authorization": "Bearer " + tok})
	req.Attributes.Request.Http.Path = path
	resp, err := e.srv.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check %s: %v", path, err)
	}
	return resp
}

// TestRevokedTokenLogoutReplaysWriteNothing: a revoked token replayed on a
// logout route is no write trigger. The first pass writes what the route
// asks for and the index does not hold yet (a subject route: the user's
// cutoff, as of now); every replay after it finds it all in the index and
// makes no store call at all; and a stolen, revoked token cannot keep its
// user logged out: a token the user gets after (a new session, in between
// the replays) stays valid.
func TestRevokedTokenLogoutReplaysWriteNothing(t *testing.T) {
	for name, route := range map[string]policy.LogoutRoute{
		"revoke session":             {PathPrefix: "/logout", RevokeSession: true},
		"revoke subject":             {PathPrefix: "/logout", RevokeSubject: true},
		"revoke session and subject": {PathPrefix: "/logout", RevokeSession: true, RevokeSubject: true},
	} {
		t.Run(name, func(t *testing.T) {
			e := newLogoutEnv(t, route)
			claims := e.iss.Claims("user-1", 10*time.Minute)
			claims["iat"], claims["sid"] = time.Now().Add(-2*time.Minute).Unix(), "sid-1"
			stolen := mint(t, e.iss, claims, nil)
			e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
			from := e.index.Position()

			replay := func(n int) {
				t.Helper()
				for range n {
					if resp := e.checkPath(t, stolen, "/logout"); resp.GetOkResponse() == nil {
						t.Fatalf("the revoked token's logout was denied: %v", resp.GetDynamicMetadata().AsMap())
					}
				}
			}
			replay(1)
			first := e.index.Position()
			cutoff := false
			for _, c := range mustChanges(t, e, from) {
				cutoff = cutoff || (c.Revocation.Kind == storage.KindSubject && c.Revocation.Key == "user-1")
			}
			if route.RevokeSubject && !cutoff {
				t.Error("the first logout on a subject route wrote no cutoff for the user")
			}
			applies := e.applies.n.Load()
			replay(4)
			// The user signs in again (a new session), and the replays go on.
			// iat is in whole seconds, and the cutoff covers its own second.
			fresh := e.iss.Claims("user-1", 10*time.Minute)
			fresh["iat"], fresh["sid"] = time.Now().Add(2*time.Second).Unix(), "sid-2"
			newTok := mint(t, e.iss, fresh, nil)
			replay(5)
			if n := e.applies.n.Load() - applies; n != 0 {
				t.Errorf("%d store writes from 9 replays after the first logout, want 0", n)
			}
			if got := mustChanges(t, e, first); len(got) != 0 {
				t.Errorf("%d feed changes from 9 replays after the first logout, want 0", len(got))
			}

			changes := mustChanges(t, e, from)
			perEntry := map[string]int{}
			for _, c := range changes {
				perEntry[c.Revocation.Kind.String()+"/"+c.Revocation.Key]++
			}
			for k, n := range perEntry {
				if n > 1 {
					t.Errorf("%d feed changes to %s from 10 replays of a revoked token, want at most 1", n, k)
				}
			}
			if want := 2; len(changes) > want {
				t.Errorf("%d feed changes from 10 replays of a revoked token, want at most %d", len(changes), want)
			}
			if resp := e.checkPath(t, newTok, "/orders"); resp.GetOkResponse() == nil {
				t.Errorf("the user's new session is revoked by replays of an old revoked token: %v",
					resp.GetDynamicMetadata().AsMap())
			}
			assertDenied(t, e.checkPath(t, stolen, "/orders"), "token_revoked")
		})
	}
}

// TestRevokedByJTILogoutOnSubjectRouteLogsOutEverywhere: a token revoked by
// its jti only, presented on a revoke-subject logout route, still logs its
// user out everywhere as of the logout: the user's other token, issued
// after the revoked one but before the logout, is denied afterwards. Its
// replays then write nothing, and make no store call at all; a token the
// user gets after the logout (a new session) stays valid.
func TestRevokedByJTILogoutOnSubjectRouteLogsOutEverywhere(t *testing.T) {
	e := newLogoutEnv(t, policy.LogoutRoute{PathPrefix: "/logout", RevokeSubject: true})
	claims := e.iss.Claims("user-1", 10*time.Minute)
	claims["iat"], claims["sid"] = time.Now().Add(-2*time.Minute).Unix(), "sid-1"
	stolen := mint(t, e.iss, claims, nil)
	other := e.iss.Claims("user-1", 10*time.Minute)
	other["iat"], other["sid"] = time.Now().Add(-time.Minute).Unix(), "sid-2"
	otherTok := mint(t, e.iss, other, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
	if resp := e.checkPath(t, otherTok, "/orders"); resp.GetOkResponse() == nil {
		t.Fatalf("the user's other token is denied before any logout: %v", resp.GetDynamicMetadata().AsMap())
	}

	if resp := e.checkPath(t, stolen, "/logout"); resp.GetOkResponse() == nil {
		t.Fatalf("the revoked token's logout was denied: %v", resp.GetDynamicMetadata().AsMap())
	}
	assertDenied(t, e.checkPath(t, otherTok, "/orders"), "token_revoked")

	from, applies := e.index.Position(), e.applies.n.Load()
	if applies == 0 {
		t.Fatal("the first logout made no store write")
	}
	for range 5 {
		if resp := e.checkPath(t, stolen, "/logout"); resp.GetOkResponse() == nil {
			t.Fatalf("the revoked token's logout was denied: %v", resp.GetDynamicMetadata().AsMap())
		}
	}
	if n := e.applies.n.Load() - applies; n != 0 {
		t.Errorf("%d store writes from 5 replays of a logged-out token, want 0", n)
	}
	changes, err := e.store.Changes(t.Context(), from, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 0 {
		t.Errorf("%d feed changes from 5 replays of a logged-out token, want 0: %v", len(changes), changes)
	}
	// The user signs in again after the logout: iat is in whole seconds and
	// the cutoff covers its own second, so the new token is a second later.
	fresh := e.iss.Claims("user-1", 10*time.Minute)
	fresh["iat"], fresh["sid"] = time.Now().Add(2*time.Second).Unix(), "sid-3"
	if resp := e.checkPath(t, mint(t, e.iss, fresh, nil), "/orders"); resp.GetOkResponse() == nil {
		t.Errorf("a token issued after the logout is denied: %v", resp.GetDynamicMetadata().AsMap())
	}
	assertDenied(t, e.checkPath(t, stolen, "/orders"), "token_revoked")
}

func mustChanges(t *testing.T, e *logoutEnv, from storage.Position) []storage.Change {
	t.Helper()
	changes, err := e.store.Changes(t.Context(), from, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

// TestRevokedLogoutLogsAreBounded: replays of a revoked token on a logout
// route are logged under the denial log limit, like denials: a replay is
// as cheap to send as a junk token. The bound is the burst (10 at 1 per
// second) plus what the limiter refills while the replays run.
func TestRevokedLogoutLogsAreBounded(t *testing.T) {
	h := &countingHandler{count: map[string]int{}}
	e := newLogoutEnv(t, policy.LogoutRoute{PathPrefix: "/logout", RevokeSession: true}, func(o *extauthz.Options) {
		o.Logger, o.DenialLogsPerSecond = slog.New(h), 1
	})
	claims := e.iss.Claims("user-1", 10*time.Minute)
	claims["sid"] = "sid-1"
	stolen := mint(t, e.iss, claims, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
	start := time.Now()
	const n = 100
	for range n {
		if resp := e.checkPath(t, stolen, "/logout"); resp.GetOkResponse() == nil {
			t.Fatalf("the revoked token's logout was denied: %v", resp.GetDynamicMetadata().AsMap())
		}
	}
	bound := 10 + int(time.Since(start).Seconds()) + 1
	if got := h.count["logged out at the gateway"]; got > bound || got == 0 {
		t.Errorf("%d log lines from %d replays of a revoked token, want 1 to %d (the denial log limit)", got, n, bound)
	}

	// A store that fails: every logout is denied (logout_failed), and its
	// error lines are bounded too.
	h = &countingHandler{count: map[string]int{}}
	e = newLogoutEnv(t, policy.LogoutRoute{PathPrefix: "/logout", RevokeSession: true}, func(o *extauthz.Options) {
		o.Logger, o.DenialLogsPerSecond = slog.New(h), 1
	})
	e.applies.fail.Store(true)
	valid := e.iss.Claims("user-2", 10*time.Minute)
	valid["sid"] = "sid-2"
	tok := mint(t, e.iss, valid, nil)
	start = time.Now()
	for range n {
		resp := e.checkPath(t, tok, "/logout")
		if md := resp.GetDynamicMetadata().AsMap(); resp.GetDeniedResponse() == nil || md["reason"] != "logout_failed" {
			t.Fatalf("a logout the store failed was not denied as logout_failed: %v", md)
		}
	}
	bound = 10 + int(time.Since(start).Seconds()) + 1
	if got := h.count["logout route: revocation failed; denying"]; got > bound || got == 0 {
		t.Errorf("%d error lines from %d failed logouts, want 1 to %d (the denial log limit)", got, n, bound)
	}
}
