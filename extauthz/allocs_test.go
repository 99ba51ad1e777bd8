package extauthz_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
)

// cachedCheckAllocs is what one Check of a token seen before costs, as a
// memory profile of BenchmarkCheck/cached shows: three in allowResponse (the
// answer, one allocation for all its per-request parts, and the metadata
// map) and one for the decision id; the verifier's cache hit allocates
// nothing. A change shows up here before it shows up in a benchmark; if it is
// an improvement, lower the pin so it is kept.
const cachedCheckAllocs = 4

// TestCachedCheckAllocations pins the allocations of the steady state
// (BenchmarkCheck/cached): allocations are deterministic, time is not. The
// path holds no sync.Pool, so the race detector (which drops pooled items at
// random) does not change the count, and the test runs under -race too.
func TestCachedCheckAllocations(t *testing.T) {
	iss := tokentest.NewServer(t, audience)
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: 2 * time.Hour}},
		CacheMaxEntries: 1000,
		Derive:          extauthz.Derive(headers, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v, Headers: headers, MaxStaleness: time.Minute})
	claims := iss.Claims("user-1", time.Hour)
	claims["roles"] = []any{"admin", "billing"}
	req := checkRequest(map[string]string{
		"authorization": "Bearer " + mint(t, iss, claims, nil), "x-request-id": "allocs", "user-agent": "test/1.0",
		"accept": "application/json", ":authority": "api.example.com",
	})
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
}
