package extauthz_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// revocationEnv is a Check server with a real (embedded) store behind its
// revocation index.
type revocationEnv struct {
	iss      *tokentest.Issuer
	store    storage.Store
	index    *storage.Index
	follower *storage.Follower
	stale    time.Duration
	failOpen bool
	srv      *extauthz.Server
}

func newRevocationEnv(t *testing.T, failOpen bool) *revocationEnv {
	t.Helper()
	e := &revocationEnv{iss: tokentest.NewServer(t, audience), index: storage.NewIndex(), failOpen: failOpen}
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	if e.follower, err = storage.NewFollower(s, e.index, storage.FollowerOptions{}); err != nil {
		t.Fatal(err)
	}
	headers, _ := policy.NewHeaderMap(nil)
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
			Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries: 100,
		Derive:          extauthz.Derive(headers, e.index, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	e.srv = newServer(t, extauthz.Options{
		Verifier: v, Headers: headers, Revocations: e.index,
		Staleness: func() time.Duration { return e.stale }, MaxStaleness: 30 * time.Second, FailOpen: failOpen,
	})
	return e
}

func (e *revocationEnv) revoke(t *testing.T, r storage.Revocation) {
	t.Helper()
	r.Issuer, r.Source = e.iss.URL, "test"
	if r.ExpiresAt.IsZero() {
		r.ExpiresAt = time.Now().Add(2 * time.Hour)
	}
	res, err := e.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{r}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.follower.WaitFor(t.Context(), res.Position); err != nil {
		t.Fatal(err)
	}
}

func (e *revocationEnv) check(t *testing.T, tok string) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.srv.Check(context.Background(), checkRequest(map[string]string{"authorization": "Bearer " + tok}))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestRevokedTokensAreDenied(t *testing.T) {
	e := newRevocationEnv(t, false)
	issuedAt := time.Now().Add(-time.Minute)
	cases := map[string]struct {
		revoke func(claims map[string]any) storage.Revocation
	}{
		"by jti": {func(c map[string]any) storage.Revocation {
			return storage.Revocation{Kind: storage.KindToken, Key: c["jti"].(string)}
		}},
		"by session": {func(c map[string]any) storage.Revocation {
			return storage.Revocation{Kind: storage.KindSession, Key: c["sid"].(string)}
		}},
		"by subject": {func(c map[string]any) storage.Revocation {
			return storage.Revocation{Kind: storage.KindSubject, Key: c["sub"].(string), RevokedBefore: time.Now()}
		}},
		"by subject for its audience": {func(c map[string]any) storage.Revocation {
			return storage.Revocation{Kind: storage.KindSubject, Key: c["sub"].(string), Audience: audience, RevokedBefore: time.Now()}
		}},
		"by issuer cutoff": {func(map[string]any) storage.Revocation {
			return storage.Revocation{Kind: storage.KindCutoff, RevokedBefore: time.Now()}
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newRevocationEnv(t, false) // each case starts from an empty store
			claims := e.iss.Claims("user-1", 10*time.Minute)
			claims["iat"], claims["sid"] = issuedAt.Unix(), "sid-1"
			tok := mint(t, e.iss, claims, nil)
			if resp := e.check(t, tok); resp.GetOkResponse() == nil {
				t.Fatalf("denied before the revocation: %v", resp.GetDynamicMetadata().AsMap())
			}
			e.revoke(t, tc.revoke(claims))
			resp := e.check(t, tok) // cached by the verifier: the revocation still applies
			assertDenied(t, resp, "token_revoked")
			md := resp.GetDynamicMetadata().AsMap()
			if md["jti"] != claims["jti"] || md["sub"] != claims["sub"] {
				t.Errorf("metadata = %v, want the token's jti and sub", md)
			}
		})
	}
	// A token issued after a subject cutoff is not revoked by it.
	e.revoke(t, storage.Revocation{Kind: storage.KindSubject, Key: "later", RevokedBefore: issuedAt.Add(-time.Hour)})
	claims := e.iss.Claims("later", 10*time.Minute)
	claims["iat"] = issuedAt.Unix()
	tok := mint(t, e.iss, claims, nil)
	if resp := e.check(t, tok); resp.GetOkResponse() == nil {
		t.Errorf("a token issued after the cutoff is denied: %v", resp.GetDynamicMetadata().AsMap())
	}
}

func TestStaleRevocationsFailClosed(t *testing.T) {
	e := newRevocationEnv(t, false)
	tok := mint(t, e.iss, e.iss.Claims("u", time.Minute), nil)
	e.stale = time.Minute
	resp := e.check(t, tok)
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.Unavailable {
		t.Errorf("status = %v, want Unavailable", got)
	}
	d := resp.GetDeniedResponse()
	if d.GetStatus().GetCode() != 503 || !strings.Contains(d.GetBody(), `"reason":"revocations_stale"`) {
		t.Errorf("denial = %v %s, want 503 revocations_stale", d.GetStatus(), d.GetBody())
	}
	e.stale = time.Second
	if resp := e.check(t, tok); resp.GetOkResponse() == nil {
		t.Error("still denied once fresh again")
	}
}

func TestStaleRevocationsFailOpenWhenConfigured(t *testing.T) {
	e := newRevocationEnv(t, true)
	tok := mint(t, e.iss, e.iss.Claims("u", time.Minute), nil)
	e.stale = time.Hour
	if resp := e.check(t, tok); resp.GetOkResponse() == nil {
		t.Errorf("on_stale allow denied: %v", resp.GetDynamicMetadata().AsMap())
	}
	// Known revocations still apply while failing open.
	claims := e.iss.Claims("v", time.Minute)
	tok = mint(t, e.iss, claims, nil)
	e.revoke(t, storage.Revocation{Kind: storage.KindToken, Key: claims["jti"].(string)})
	assertDenied(t, e.check(t, tok), "token_revoked")
}

// failingLogout stands in for a store that cannot take the write.
type failingLogout struct{}

func (failingLogout) RevokeLogout(context.Context, *token.Identity, bool, bool, bool) error {
	return errors.New("store unavailable")
}

// TestLogoutRouteFailsClosed: when the logout cannot be made durable, the
// logout request is denied (503), never allowed with the token still valid.
func TestLogoutRouteFailsClosed(t *testing.T) {
	e := newRevocationEnv(t, false)
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	headers, _ := policy.NewHeaderMap(nil)
	v, _ := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		MaxTokenLifetime: time.Hour}}})
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index,
		MaxStaleness: time.Minute, LogoutRoutes: routes, Logout: failingLogout{}})
	tok := mint(t, e.iss, e.iss.Claims("u", time.Minute), nil)
	req := checkRequest(map[string]string{"authorization": "Bearer " + tok})
	req.Attributes.Request.Http.Path = "/logout"
	resp, err := srv.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 503 || !strings.Contains(d.GetBody(), "logout_failed") {
		t.Errorf("failed logout: %v, want 503 logout_failed", d)
	}
}

// TestNoDecisionBeforeRevocationsLoad: until the revocations have loaded,
// Check makes no decision (UNAVAILABLE), even with on_stale: allow — an
// empty index is not a view of the revocations.
func TestNoDecisionBeforeRevocationsLoad(t *testing.T) {
	e := newRevocationEnv(t, true)
	headers, _ := policy.NewHeaderMap(nil)
	v, _ := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, Audiences: []string{audience},
		MaxTokenLifetime: time.Hour}}})
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: e.index,
		Loaded: func() bool { return false }, Staleness: func() time.Duration { return time.Hour }, FailOpen: true})
	tok := mint(t, e.iss, e.iss.Claims("u", time.Minute), nil)
	_, err := srv.Check(t.Context(), checkRequest(map[string]string{"authorization": "Bearer " + tok}))
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("Check before the revocations loaded: %v, want Unavailable", err)
	}
}
