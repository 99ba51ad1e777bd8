package extauthz_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// population is n distinct access tokens, each in its own CheckRequest:
// minimal ones (iss, aud, sub, jti, iat, exp and roles), or, with full,
// shaped like FusionAuth's (also sid, tid, applicationId, scope, auth_time
// and UUIDs). They are signed with ES256, which is fast to sign; what the
// cache keeps of a token does not depend on its algorithm.
type population struct {
	iss  *tokentest.Issuer
	reqs []*authv3.CheckRequest
}

func newPopulation(tb testing.TB, n int, full bool) *population {
	tb.Helper()
	iss := tokentest.NewServer(tb, audience)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if err := iss.UseKey("es256", key); err != nil {
		tb.Fatal(err)
	}
	p := &population{iss: iss, reqs: make([]*authv3.CheckRequest, n)}
	for i := range p.reqs {
		claims := iss.Claims(fmt.Sprintf("user-%d", i), time.Hour)
		claims["roles"] = []any{"admin", "billing"}
		if full {
			p.fusionAuth(claims, i)
		}
		tok, err := iss.Sign(claims, nil)
		if err != nil {
			tb.Fatal(err)
		}
		p.reqs[i] = checkRequest(map[string]string{"authorization": "Bearer " + tok, ":authority": "api.example.com"})
	}
	return p
}

func (p *population) fusionAuth(claims map[string]any, i int) {
	claims["sub"] = fmt.Sprintf("2b6a1f0e-6d1c-4c3e-9a1b-%012d", i)
	claims["jti"] = fmt.Sprintf("c4d5e6f7-1a2b-4c3d-8e9f-%012d", i)
	claims["sid"] = fmt.Sprintf("7f3d2c1b-0a9e-4d8c-b7a6-%012d", i)
	claims["tid"] = "f8e7d6c5-b4a3-4291-8f7e-6d5c4b3a2910"
	claims["applicationId"] = "85a03867-dccf-4882-adde-1a79aeec50df"
	claims["scope"] = "openid offline_access"
	claims["auth_time"] = claims["iat"]
}

// server is a Check server whose verifier caches at most maxEntries tokens
// and maxBytes bytes, with one claim header and the revocation index.
func (p *population) server(tb testing.TB, maxEntries, maxBytes int) (*extauthz.Server, *token.Verifier) {
	tb.Helper()
	headers, err := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles", "x-auth-tenant": "tid"})
	if err != nil {
		tb.Fatal(err)
	}
	idx := storage.NewIndex()
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: p.iss.URL, JWKSURI: p.iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: 2 * time.Hour}},
		CacheMaxEntries: maxEntries,
		CacheMaxBytes:   maxBytes,
		Derive:          extauthz.Derive(headers, idx, nil),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := v.Refresh(tb.Context(), "a"); err != nil {
		tb.Fatal(err)
	}
	return newServer(tb, extauthz.Options{Verifier: v, Headers: headers, Revocations: idx, MaxStaleness: time.Minute}), v
}

func (p *population) checkAll(tb testing.TB, srv *extauthz.Server) {
	tb.Helper()
	for _, req := range p.reqs {
		resp, err := srv.Check(tb.Context(), req)
		if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
			tb.Fatalf("Check: %v %v", resp.GetStatus(), err)
		}
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCacheEntryBytes reports what one cached verified token costs:
// the live heap after GC, once N distinct tokens went through Check, less
// the live heap before (B/entry), and what the cache's weigher charges for
// it (weight/entry). README's sizing table comes from it:
//
//	go test -run '^$' -bench CacheEntryBytes -benchtime 1x ./extauthz
func BenchmarkCacheEntryBytes(b *testing.B) {
	const n = 20_000
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "minimal", true: "fusionauth"}[full], func(b *testing.B) {
			benchmarkCacheEntryBytes(b, newPopulation(b, n, full), n)
		})
	}
}

func benchmarkCacheEntryBytes(b *testing.B, p *population, n int) {
	for b.Loop() {
		srv, v := p.server(b, 1_000_000, 64<<20)
		before := liveHeap()
		p.checkAll(b, srv)
		after := liveHeap()
		stats := v.CacheStats()
		if stats.Entries != n {
			b.Fatalf("cache holds %d entries, want %d", stats.Entries, n)
		}
		b.ReportMetric(float64(after-before)/float64(n), "B/entry")
		b.ReportMetric(float64(stats.Weight)/float64(n), "weight/entry")
		runtime.KeepAlive(srv)
	}
}

// TestCacheBounds pushes twice as many distinct tokens through Check as the
// verified-token cache may hold, under each of its two bounds, and checks
// after every request that the bound holds: weights are computed, not
// measured, so this is exact on every run.
func TestCacheBounds(t *testing.T) {
	p := newPopulation(t, 200, true)
	for name, tc := range map[string]struct{ maxEntries, maxBytes int }{
		"bytes bind":   {maxEntries: 1_000_000, maxBytes: 64 << 10},
		"entries bind": {maxEntries: 50, maxBytes: 64 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			srv, v := p.server(t, tc.maxEntries, tc.maxBytes)
			maxEntries := 0
			for i, req := range p.reqs {
				resp, err := srv.Check(t.Context(), req)
				if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					t.Fatalf("token %d: Check: %v %v", i, resp.GetStatus(), err)
				}
				s := v.CacheStats()
				if s.MaxWeight != uint64(tc.maxBytes) {
					t.Fatalf("cache bound %d bytes, want %d", s.MaxWeight, tc.maxBytes)
				}
				if s.Weight > s.MaxWeight || s.Entries > tc.maxEntries {
					t.Fatalf("after %d tokens: %d entries weighing %d bytes, want at most %d and %d",
						i+1, s.Entries, s.Weight, tc.maxEntries, s.MaxWeight)
				}
				maxEntries = max(maxEntries, s.Entries)
			}
			if len(p.reqs) < 2*maxEntries {
				t.Errorf("%d tokens for a cache that held up to %d: not twice its bound", len(p.reqs), maxEntries)
			}
			if maxEntries < 10 {
				t.Errorf("the cache held at most %d entries: too few to test its bound", maxEntries)
			}
			// A token the cache let go of verifies again.
			resp, err := srv.Check(t.Context(), p.reqs[0])
			if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
				t.Fatalf("first token again: Check: %v %v", resp.GetStatus(), err)
			}
		})
	}
}
