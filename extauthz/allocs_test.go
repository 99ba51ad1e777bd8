package extauthz_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/storagetest"
)

// cachedCheckAllocs is what one Check of a token seen before costs, as a
// memory profile of BenchmarkCheck/cached shows: three in allowResponse (the
// answer, one allocation for all its per-request parts, and the metadata
// map) and one for the decision id; the verifier's cache hit and the
// revocation lookup allocate nothing. A change shows up here before it shows up in a benchmark; if it is
// an improvement, lower the pin so it is kept.
const cachedCheckAllocs = 4

// TestCachedCheckAllocations pins the allocations of the steady state
// (BenchmarkCheck/cached), revocation lookup included: the index holds
// revocations of every kind for the token's issuer, one of them for its
// subject, none of which revokes it. Allocations are deterministic, time is
// not. The path holds no sync.Pool, so the race detector (which drops pooled
// items at random) does not change the count, and the test runs under -race
// too.
func TestCachedCheckAllocations(t *testing.T) {
	iss := tokentest.NewServer(t, audience)
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	if err != nil {
		t.Fatal(err)
	}
	claims := iss.Claims("user-1", time.Hour)
	claims["roles"] = []any{"admin", "billing"}
	iat := time.Unix(claims["iat"].(int64), 0)
	idx := storage.NewIndex()
	changes := storagetest.Mixed(1000, iss.URL, time.Now().Add(time.Hour))
	changes = append(changes, storage.Change{Seq: uint64(len(changes) + 1), Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindSubject, Issuer: iss.URL, Key: "user-1", RevokedBefore: iat.Add(-time.Hour), ExpiresAt: time.Now().Add(time.Hour)}})
	if _, err := idx.Apply(changes); err != nil {
		t.Fatal(err)
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: 2 * time.Hour}},
		CacheMaxEntries: 1000,
		Derive:          extauthz.Derive(headers, idx, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	// An introspection route is configured: requests elsewhere pay only the
	// (allocation-free) look-up of Envoy's route marker and the path match,
	// never the body's parsing.
	introspection, err := policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{{PathPrefix: "/oauth2/introspect"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v, Headers: headers, Revocations: idx, MaxStaleness: time.Minute,
		IntrospectionRoutes: introspection})
	req := checkRequest(map[string]string{
		"authorization": "Bearer " + mint(t, iss, claims, nil), "x-request-id": "allocs", "user-agent": "test/1.0",
		"accept": "application/json", ":authority": "api.example.com",
	})
	// As Envoy's API route sends it (envoy/envoy.yaml): context_extensions
	// without tokengate's introspection marker.
	req.Attributes.ContextExtensions = map[string]string{"route": "api"}
	ctx := t.Context()
	check := func() {
		resp, err := srv.Check(ctx, req)
		if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Fatalf("Check: %v %v", resp.GetStatus(), err)
		}
	}
	check() // verify once, and cache
	if got := testing.AllocsPerRun(100, check); got != cachedCheckAllocs {
		t.Errorf("cached Check: %v allocations, want %d", got, cachedCheckAllocs)
	}

	// The pinned path is the one that consults the index: a revocation of
	// the subject from now on denies the cached token.
	if _, err := idx.Apply([]storage.Change{{Seq: idx.Seq() + 1, Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindSubject, Issuer: iss.URL, Key: "user-1", RevokedBefore: iat, ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := srv.Check(ctx, req); err != nil || resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Errorf("Check after the subject's revocation: %v %v, want a denial", resp.GetStatus(), err)
	}
}
