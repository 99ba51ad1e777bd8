package extauthz_test

import (
	"context"
	"crypto/rsa"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/policy/policytest"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/storagetest"
)

// Benchmarks of the check path, in process (no gRPC transport):
//
//	go test -run '^$' -bench . -benchmem ./extauthz
//
// BenchmarkCheck/cached is the steady state (a token seen before);
// BenchmarkCheck/uncached verifies the signature on every call and is
// compared with BenchmarkBareVerify, golang-jwt verifying the same RS256
// token with a static key and nothing else.

type benchEnv struct {
	iss *tokentest.Issuer
	tok string
	req *authv3.CheckRequest
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	iss := tokentest.NewServer(b, audience)
	claims := iss.Claims("user-1", time.Hour)
	claims["roles"] = []any{"admin", "billing"}
	tok, err := iss.Sign(claims, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{iss: iss, tok: tok, req: checkRequest(map[string]string{
		"authorization": "Bearer " + tok, "x-request-id": "bench", "user-agent": "bench/1.0",
		"accept": "application/json", ":authority": "api.example.com",
	})}
}

func (e *benchEnv) server(b *testing.B, cacheEntries int) *extauthz.Server {
	return e.serverWith(b, cacheEntries, nil)
}

// serverWith builds the server; with idx, revocations are checked against it.
func (e *benchEnv) serverWith(b *testing.B, cacheEntries int, idx *storage.Index) *extauthz.Server {
	b.Helper()
	headers, _ := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	var revocations extauthz.Revocations
	if idx != nil {
		revocations = idx
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, JWKSURI: e.iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: 2 * time.Hour}},
		CacheMaxEntries: cacheEntries,
		Derive:          extauthz.Derive(headers, revocations, nil),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Refresh(context.Background(), "a"); err != nil {
		b.Fatal(err)
	}
	return newServer(b, extauthz.Options{Verifier: v, Headers: headers, Revocations: revocations,
		MaxStaleness: time.Minute})
}

// BenchmarkCheckRevocations is the cached check with the revocation index
// consulted: empty, and holding 1,000,000 live revocations of mixed kinds
// (target: within 10% of empty).
func BenchmarkCheckRevocations(b *testing.B) {
	e := newBenchEnv(b)
	for _, n := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			idx := storage.NewIndex()
			if _, err := idx.Apply(storagetest.Mixed(n, e.iss.URL, time.Now().Add(time.Hour))); err != nil {
				b.Fatal(err)
			}
			srv := e.serverWith(b, 100_000, idx)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := srv.Check(ctx, e.req)
				if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					b.Fatalf("Check: %v %v", resp.GetStatus(), err)
				}
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	e := newBenchEnv(b)
	for name, entries := range map[string]int{"cached": 100_000, "uncached": 0} {
		b.Run(name, func(b *testing.B) {
			srv := e.server(b, entries)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := srv.Check(ctx, e.req)
				if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					b.Fatalf("Check: %v %v", resp.GetStatus(), err)
				}
			}
		})
	}
}

// BenchmarkCheckParallel is the cached path under concurrency, as under a
// loaded Envoy.
func BenchmarkCheckParallel(b *testing.B) {
	e := newBenchEnv(b)
	srv := e.server(b, 100_000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := srv.Check(ctx, e.req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBareVerify is the floor for an uncached check: the library alone
// verifying the same token with the key in hand.
func BenchmarkBareVerify(b *testing.B) {
	e := newBenchEnv(b)
	pub := e.iss.PublicKey(e.iss.KID()).(*rsa.PublicKey)
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(audience), jwt.WithExpirationRequired())
	keyfunc := func(*jwt.Token) (any, error) { return pub, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parser.ParseWithClaims(e.tok, jwt.MapClaims{}, keyfunc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckPolicy is the cached check without a route policy and with
// a 1,000-rule one (mostly prefixes, some exact paths, 20 regexes, 10 CEL
// rules), the request decided by a prefix rule near the end (target:
// within 10% of none).
func BenchmarkCheckPolicy(b *testing.B) {
	e := newBenchEnv(b)
	set := thousandRules(b, e.iss.URL)
	for _, c := range []struct {
		name string
		set  *policy.Set
	}{{"none", nil}, {"rules=1000", set}} {
		b.Run(c.name, func(b *testing.B) {
			srv := e.serverPolicy(b, c.set)
			ctx := context.Background()
			req := checkRequest(e.req.Attributes.Request.Http.Headers)
			req.Attributes.Request.Http.Path = "/svc-990/items/42?x=1"
			b.ReportAllocs()
			for b.Loop() {
				resp, err := srv.Check(ctx, req)
				if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
					b.Fatalf("Check: %v %v", resp.GetStatus(), err)
				}
			}
		})
	}
}

func (e *benchEnv) serverPolicy(b *testing.B, set *policy.Set) *extauthz.Server {
	b.Helper()
	headers, _ := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	var subjects *policy.Subjects
	if set != nil {
		subjects = policy.NewSubjects([]policy.IssuerInfo{{Name: "a", Iss: e.iss.URL}}, set.NeedsClaims())
	}
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: e.iss.URL, JWKSURI: e.iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: 2 * time.Hour}},
		CacheMaxEntries: 100_000,
		Derive:          extauthz.Derive(headers, nil, subjects),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Refresh(context.Background(), "a"); err != nil {
		b.Fatal(err)
	}
	opts := extauthz.Options{Verifier: v, Headers: headers, MaxStaleness: time.Minute}
	if set != nil {
		opts.Policy = func() *policy.Set { return set }
	}
	return newServer(b, opts)
}

// thousandRules is policytest.ThousandRules, compiled.
func thousandRules(b *testing.B, iss string) *policy.Set {
	b.Helper()
	rules := policytest.ThousandRules()
	set, err := policy.Compile(policy.Options{
		Issuers:  []policy.IssuerInfo{{Name: "a", Iss: iss}},
		Policies: map[string][]policy.RuleSpec{"default": rules},
	})
	if err != nil {
		b.Fatal(err)
	}
	return set
}

// nopWriter is a ResponseWriter that keeps headers and drops the rest: the
// HTTP endpoint's own cost, without a transport.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkHTTPHandler is BenchmarkCheck/cached through the HTTP endpoint
// (envoy mode): reading the request into a CheckRequest, deciding, and
// writing the answer as headers.
func BenchmarkHTTPHandler(b *testing.B) {
	e := newBenchEnv(b)
	srv := e.server(b, 1000)
	h, err := srv.HTTPHandler(extauthz.HTTPOptions{})
	if err != nil {
		b.Fatal(err)
	}
	hr := httptest.NewRequest("GET", "/orders?id=1", nil)
	hr.Host = "api.example.com"
	hr.Header = http.Header{"Authorization": {"Bearer " + e.tok}, "X-Request-Id": {"bench"},
		"User-Agent": {"bench/1.0"}, "Accept": {"application/json"}}
	w := &nopWriter{h: http.Header{}}
	h.ServeHTTP(w, hr)
	if got := w.h["x-auth-subject"]; len(got) != 1 || got[0] != "user-1" {
		b.Fatalf("not allowed: %v", w.h)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, hr)
	}
}

// BenchmarkHTTPEndpoint is the HTTP endpoint over real loopback HTTP with
// keep-alive connections, beside a do-nothing handler on the same
// transport: the in-process view of make bench-http.
func BenchmarkHTTPEndpoint(b *testing.B) {
	e := newBenchEnv(b)
	h, err := e.server(b, 1000).HTTPHandler(extauthz.HTTPOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for name, handler := range map[string]http.Handler{
		"noop":      http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
		"tokengate": h,
	} {
		b.Run(name, func(b *testing.B) {
			hs := httptest.NewServer(handler)
			defer hs.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("GET", hs.URL+"/orders?id=1", nil)
					req.Host = "api.example.com"
					req.Header.Set("Authorization", "Bearer "+e.tok)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
