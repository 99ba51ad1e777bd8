package token_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

const aud = "api"

type fixture struct {
	iss      *tokentest.Issuer
	verifier *token.Verifier
	derived  atomic.Int64
	now      atomic.Pointer[time.Time]
}

func (f *fixture) setNow(t time.Time) { f.now.Store(&t) }

func newFixture(t *testing.T, mutate func(*token.Options)) *fixture {
	t.Helper()
	f := &fixture{iss: tokentest.NewServer(t, aud)}
	f.setNow(time.Now())
	opts := token.Options{
		Issuers: []token.Issuer{{
			Name: "a", Issuer: f.iss.URL, Audiences: []string{aud},
			Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour,
		}},
		CacheMaxEntries:    100,
		RefreshInterval:    time.Hour,
		UnknownKIDInterval: time.Hour,
		Now:                func() time.Time { return *f.now.Load() },
		Derive:             func(*token.Identity, map[string]any) any { f.derived.Add(1); return nil },
	}
	if mutate != nil {
		mutate(&opts)
	}
	v, err := token.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.verifier = v
	if err := v.Refresh(t.Context(), "a"); err != nil {
		t.Fatalf("load the keys: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go v.Run(ctx) // loaded already: only the hourly refresh
	return f
}

func (f *fixture) mint(t *testing.T, header map[string]any) string {
	t.Helper()
	s, err := f.iss.Sign(f.iss.Claims("user", 10*time.Minute), header)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUnknownKIDFloodIsRateLimited: 1,000 tokens with random unknown kids,
// sent concurrently, cost at most one JWKS fetch (the limiter's burst) on top
// of the initial load, and each is denied as key_unknown.
func TestUnknownKIDFloodIsRateLimited(t *testing.T) {
	f := newFixture(t, nil)
	before := f.iss.Fetches()
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for i := range 1000 {
		tok := f.mint(t, map[string]any{"kid": fmt.Sprintf("random-%d", i)})
		wg.Go(func() {
			if _, err := f.verifier.Verify(t.Context(), tok); !errors.Is(err, token.ErrKeyUnknown) {
				wrong.Add(1)
			}
		})
	}
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d tokens were not denied as key unknown", n)
	}
	if got := f.iss.Fetches() - before; got > 1 {
		t.Errorf("1000 unknown kids caused %d JWKS fetches, want at most 1", got)
	}
}

// TestNewKeyIsFetchedOnDemand: after the IdP rotates in a new key, the first
// token signed with it triggers one fetch and verifies.
func TestNewKeyIsFetchedOnDemand(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.iss.AddKey("ES256"); err != nil {
		t.Fatal(err)
	}
	tok := f.mint(t, nil)
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatalf("token signed with the rotated-in key: %v", err)
	}
}

// TestKeySetChangeFlushesCache: a cached token stops counting when its
// issuer publishes a different key set, and is verified again.
func TestKeySetChangeFlushesCache(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(t, nil)
	for range 3 {
		if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.derived.Load(); got != 1 {
		t.Fatalf("verified %d times for 3 calls, want 1 (cached)", got)
	}
	if _, err := f.iss.AddKey("RS256"); err != nil {
		t.Fatal(err)
	}
	if err := f.verifier.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if got := f.derived.Load(); got != 2 {
		t.Errorf("after the key set changed: verified %d times, want 2", got)
	}
}

// TestCacheEntryExpiresWithToken: a cached token is denied once it expires
// (beyond the leeway), without waiting for any sweep.
func TestCacheEntryExpiresWithToken(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(t, nil)
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	f.setNow(time.Now().Add(11 * time.Minute))
	if _, err := f.verifier.Verify(t.Context(), tok); !errors.Is(err, token.ErrExpired) {
		t.Errorf("11 minutes later: err %v, want ErrExpired", err)
	}
}

// TestJWKSOutageKeepsLastGoodKeys: when the JWKS endpoint fails, refreshes
// fail but tokens keep verifying with the keys already loaded.
func TestJWKSOutageKeepsLastGoodKeys(t *testing.T) {
	f := newFixture(t, func(o *token.Options) { o.CacheMaxEntries = 0 })
	f.iss.FailJWKS(true)
	if err := f.verifier.Refresh(t.Context(), "a"); err == nil {
		t.Fatal("refresh during the outage succeeded")
	}
	if _, err := f.verifier.Verify(t.Context(), f.mint(t, nil)); err != nil {
		t.Errorf("during the JWKS outage: %v", err)
	}
}

// TestDiscoveryMustNameTheIssuer: a discovery document that names another
// issuer is refused, although its jwks_uri (on loopback, like the document)
// would serve good keys: without the issuer check, the keys would load.
func TestDiscoveryMustNameTheIssuer(t *testing.T) {
	keys := tokentest.NewServer(t, aud)
	const impostor = "https://impostor.example"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, impostor, keys.URL+"/jwks.json")
	}))
	t.Cleanup(srv.Close)
	v, err := token.New(token.Options{Issuers: []token.Issuer{
		{Name: "a", Issuer: srv.URL, Audiences: []string{aud}, MaxTokenLifetime: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = v.Refresh(t.Context(), "a")
	if want := fmt.Sprintf("document issuer %q does not match", impostor); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Refresh = %v, want an error containing %q", err, want)
	}
	if v.Loaded()["a"] {
		t.Error("keys loaded from a mismatched discovery document")
	}
	if n := keys.Fetches(); n != 0 {
		t.Errorf("the impostor's jwks_uri was fetched %d times, want 0", n)
	}
}

// TestHMACIssuer: an issuer with an HMAC secret (FusionAuth HS256 tenants)
// verifies HS256 tokens with that secret, and only those of its own iss.
func TestHMACIssuer(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := token.New(token.Options{Issuers: []token.Issuer{
		{Name: "fa", Issuer: "acme.com", Audiences: []string{aud}, HMACSecret: secret, MaxTokenLifetime: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Loaded()["fa"] {
		t.Fatal("an HMAC-only issuer needs no keys and must be loaded")
	}
	now := time.Now()
	sign := func(key []byte, iss string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": iss, "aud": aud, "sub": "u", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := v.Verify(t.Context(), sign(secret, "acme.com")); err != nil {
		t.Errorf("HS256 with the right secret: %v", err)
	}
	if _, err := v.Verify(t.Context(), sign([]byte("another secret, also 32 bytes long"), "acme.com")); !errors.Is(err, token.ErrSignature) {
		t.Errorf("HS256 with a wrong secret: err %v, want ErrSignature", err)
	}
	if _, err := v.Verify(t.Context(), sign(secret, "other.com")); !errors.Is(err, token.ErrIssuerUnknown) {
		t.Errorf("HS256 for another iss: err %v, want ErrIssuerUnknown", err)
	}
}

func TestNewRejectsUnsafeIssuers(t *testing.T) {
	base := token.Issuer{Name: "a", Issuer: "https://a.example", Audiences: []string{aud}, MaxTokenLifetime: time.Hour}
	cases := map[string]func(*token.Issuer){
		"HS256 without secret": func(i *token.Issuer) { i.Algorithms = []string{"HS256"} },
		"alg none":             func(i *token.Issuer) { i.Algorithms = []string{"none"} },
		"no audience":          func(i *token.Issuer) { i.Audiences = nil },
		"no lifetime bound":    func(i *token.Issuer) { i.MaxTokenLifetime = 0 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			iss := base
			mutate(&iss)
			if _, err := token.New(token.Options{Issuers: []token.Issuer{iss}}); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

// TestDiscoveredJWKSMustBeSecure: a discovery document that points the keys
// at plain http beyond loopback is refused (keys in cleartext can be
// swapped on the path).
func TestDiscoveredJWKSMustBeSecure(t *testing.T) {
	var url string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":"http://keys.example.com/jwks.json"}`, url)
	}))
	defer srv.Close()
	url = srv.URL
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "a", Issuer: url, Audiences: []string{aud}, MaxTokenLifetime: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "a"); err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Errorf("Refresh = %v, want a refusal of the plain-http jwks_uri", err)
	}
}

// TestSharedFetchOutlivesItsCaller: a caller that gives up (a cancelled
// webhook request) does not abort the fetch that others share. The issuer
// holds its answers until the caller has given up; in a synctest bubble,
// synctest.Wait then returns once the fetch has ended, one way or the other.
func TestSharedFetchOutlivesItsCaller(t *testing.T) {
	iss, err := tokentest.New("", aud)
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	// Outside the bubble: the server's goroutines wait on the network.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-hold
		iss.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(release) // runs first: no request is left held
	iss.URL = srv.URL
	synctest.Test(t, func(t *testing.T) {
		v, err := token.New(token.Options{
			Issuers:    []token.Issuer{{Name: "a", Issuer: iss.URL, Audiences: []string{aud}, MaxTokenLifetime: time.Hour}},
			HTTPClient: bubbleClient(),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := v.Refresh(ctx, "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Refresh with a cancelled context = %v, want context.Canceled", err)
		}
		release()
		synctest.Wait()
		if !v.Loaded()["a"] {
			t.Error("the fetch was aborted with its first caller")
		}
	})
}

// bubbleClient is an HTTP client for a synctest bubble: without keep-alive,
// no connection goroutine stays behind waiting on the network, which would
// keep the bubble from ever being idle.
func bubbleClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

// TestKeysRefreshOnTheirSchedule: Run retries a failing first fetch with
// backoff (250ms, then 500ms…), then refreshes every RefreshInterval, so a
// key the issuer rotates in is known without any token asking for it. Time
// is the subject, so it is fake: the test runs in a synctest bubble.
func TestKeysRefreshOnTheirSchedule(t *testing.T) {
	iss := tokentest.NewServer(t, aud) // outside the bubble: its goroutines wait on the network
	iss.FailJWKS(true)
	synctest.Test(t, func(t *testing.T) {
		v, err := token.New(token.Options{
			Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
				Audiences: []string{aud}, MaxTokenLifetime: time.Hour}},
			RefreshInterval:    15 * time.Minute,
			UnknownKIDInterval: time.Hour,
			HTTPClient:         bubbleClient(),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go v.Run(ctx)

		steps := []struct {
			name    string
			do      func()
			sleep   time.Duration
			fetches int64
			loaded  bool
		}{
			{name: "first fetch fails", fetches: 1},
			{name: "just before the first retry", sleep: 249 * time.Millisecond, fetches: 1},
			{name: "first retry fails", sleep: time.Millisecond, fetches: 2},
			{name: "second retry, 500ms later, loads", do: func() { iss.FailJWKS(false) }, sleep: 500 * time.Millisecond, fetches: 3, loaded: true},
			{name: "no fetch before the interval", sleep: 15*time.Minute - time.Millisecond, fetches: 3, loaded: true},
			{name: "refresh on the interval", sleep: time.Millisecond, fetches: 4, loaded: true},
			{name: "and on the next", sleep: 15 * time.Minute, fetches: 5, loaded: true},
		}
		for _, st := range steps {
			if st.do != nil {
				st.do()
			}
			time.Sleep(st.sleep)
			synctest.Wait()
			if got := iss.Fetches(); got != st.fetches {
				t.Fatalf("%s: %d JWKS fetches, want %d", st.name, got, st.fetches)
			}
			if got := v.Loaded()["a"]; got != st.loaded {
				t.Fatalf("%s: loaded = %v, want %v", st.name, got, st.loaded)
			}
		}

		// A key rotated in is picked up by the next scheduled refresh: a
		// token signed with it then verifies without a fetch of its own.
		if _, err := iss.AddKey("ES256"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Minute)
		synctest.Wait()
		before := iss.Fetches()
		tok, err := iss.Mint("user", 10*time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("token signed with the rotated-in key: %v", err)
		}
		if got := iss.Fetches() - before; got != 0 {
			t.Errorf("verifying it cost %d fetches, want 0: the scheduled refresh should have found the key", got)
		}
	})
}

// TestSharedFetchServesTheOthersWhenOneCallerLeaves: two callers share one
// fetch; the first gives up while the fetch is in flight, the second still
// gets the keys, and the endpoint was asked once.
func TestSharedFetchServesTheOthersWhenOneCallerLeaves(t *testing.T) {
	iss, err := tokentest.New("https://idp.example", aud)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := iss.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var requests atomic.Int64
		slow := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			requests.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
			return &http.Response{StatusCode: http.StatusOK, Request: r,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body:   io.NopCloser(bytes.NewReader(jwks))}, nil
		})
		v, err := token.New(token.Options{
			Issuers: []token.Issuer{{
				Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json", Audiences: []string{aud}, MaxTokenLifetime: time.Hour,
			}},
			HTTPClient: &http.Client{Transport: slow},
		})
		if err != nil {
			t.Fatal(err)
		}
		first, cancelFirst := context.WithCancel(t.Context())
		firstDone, secondDone := make(chan error, 1), make(chan error, 1)
		go func() { firstDone <- v.Refresh(first, "a") }()
		synctest.Wait() // the fetch is in flight
		go func() { secondDone <- v.Refresh(t.Context(), "a") }()
		synctest.Wait() // the second caller waits on it too
		cancelFirst()
		if err := <-firstDone; !errors.Is(err, context.Canceled) {
			t.Errorf("first caller: Refresh = %v, want context.Canceled", err)
		}
		close(release)
		if err := <-secondDone; err != nil {
			t.Errorf("second caller: Refresh = %v, want the shared fetch's success", err)
		}
		if !v.Loaded()["a"] {
			t.Error("keys not loaded after the shared fetch")
		}
		if n := requests.Load(); n != 1 {
			t.Errorf("JWKS requested %d times, want 1 (one shared fetch)", n)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
