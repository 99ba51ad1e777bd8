package extauthz_test

import (
	"net"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
		Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}, CacheMaxEntries: 100, Derive: extauthz.Derive(headers, e.index)})
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index,
		MaxStaleness: time.Minute, LogoutRoutes: routes, Logout: rev}))
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)

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
	srv *extauthz.Server
}

func newLogoutEnv(t *testing.T, route policy.LogoutRoute) *logoutEnv {
	t.Helper()
	e := newRevocationEnv(t, false)
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{route})
	if err != nil {
		t.Fatal(err)
	}
	headers, _ := policy.NewHeaderMap(nil)
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}, CacheMaxEntries: 100, Derive: extauthz.Derive(headers, e.index)})
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
	return &logoutEnv{revocationEnv: e, srv: newServer(t, extauthz.Options{Verifier: v, Headers: headers,
		Revocations: e.index, MaxStaleness: time.Minute, LogoutRoutes: routes, Logout: rev})}
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
// logout route is no write trigger. What the route writes for it is dated
// by the token itself (the subject's cutoff at its iat, the session's
// retention from its iat), so the first pass may add the route's session
// or subject entry once and every replay after it changes nothing in the
// feed; and a stolen, revoked token cannot keep its user logged out: a
// token the user gets after (a new session, in between the replays) stays
// valid.
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
			replay(5)
			// The user signs in again (a new session), and the replays go on.
			fresh := e.iss.Claims("user-1", 10*time.Minute)
			fresh["sid"] = "sid-2"
			newTok := mint(t, e.iss, fresh, nil)
			replay(5)

			changes, err := e.store.Changes(t.Context(), from, 1000)
			if err != nil {
				t.Fatal(err)
			}
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
