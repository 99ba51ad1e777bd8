package token

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// maxDocumentBytes bounds a JWKS or discovery document. Real key sets are a
// few kilobytes; anything larger is a misconfiguration or an attack.
const maxDocumentBytes = 1 << 20

// keys is one fetched JWKS, immutable once published. Verified-token cache
// entries remember the *keys that verified them: when an issuer publishes a
// different set, the pointer changes and those entries stop counting.
type keys struct {
	kf          keyfunc.Keyfunc
	fingerprint [sha256.Size]byte
	count       int
}

// keySet keeps one issuer's JWKS current: fetched at start (with backoff until
// the first success), on a fixed interval, and on demand when a token names a
// key id it does not know. On-demand fetches are rate limited, and concurrent
// callers share one fetch, so a flood of random kids costs at most one fetch
// per interval. A failed fetch keeps the last good keys.
type keySet struct {
	issuer        string
	jwksURI       string // empty: discovered
	allowInsecure bool   // plain http beyond loopback
	client        *http.Client
	log           *slog.Logger
	interval      time.Duration
	limiter       *rate.Limiter
	onChange      func()
	observe       func(result string)

	current atomic.Pointer[keys]
	flight  singleflight.Group // one fetch at a time, shared by its callers

	mu  sync.Mutex
	uri string // resolved jwks_uri, guarded by mu
}

// errRateLimited: an on-demand fetch was not started, the limiter said no.
var errRateLimited = errors.New("jwks fetch rate limited")

// lookup finds the verification key for t, refreshing the set once (rate
// limited) when the kid is unknown. It returns the key set that held the key.
func (s *keySet) lookup(ctx context.Context, t *jwt.Token) (any, *keys, error) {
	k := s.load()
	if k == nil {
		return nil, nil, ErrKeysUnavailable
	}
	key, err := k.kf.KeyfuncCtx(ctx)(t)
	if err == nil {
		return key, k, nil
	}
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return nil, nil, err
	}
	if !s.refreshUnknownKID(ctx) {
		return nil, nil, ErrKeyUnknown
	}
	if fresh := s.load(); fresh != k {
		key, err = fresh.kf.KeyfuncCtx(ctx)(t)
		if err == nil {
			return key, fresh, nil
		}
		if !errors.Is(err, jwkset.ErrKeyNotFound) {
			return nil, nil, err
		}
	}
	return nil, nil, ErrKeyUnknown
}

// load returns the current keys, or nil before the first successful fetch.
func (s *keySet) load() *keys { return s.current.Load() }

// run fetches until the first success, then refreshes on the interval, until
// ctx ends.
func (s *keySet) run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for s.load() == nil {
		if err := s.refresh(ctx); err != nil {
			s.log.Warn("jwks not loaded yet; retrying", "issuer", s.issuer, "retry_in", backoff, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.refresh(ctx); err != nil {
				s.log.Warn("jwks refresh failed; keeping the last good keys", "issuer", s.issuer, "err", err)
			}
		}
	}
}

// refresh fetches now (joining a fetch already in flight) and waits for it.
func (s *keySet) refresh(ctx context.Context) error {
	for {
		err := s.fetch(ctx, false)
		if !errors.Is(err, errRateLimited) {
			return err
		}
		// It joined an unknown-kid attempt that the limiter stopped before
		// it fetched anything (that attempt is over): start a fetch of its own.
	}
}

// refreshUnknownKID fetches for a token whose kid is not in the current set.
// It joins a fetch in flight, starts one if the limiter allows, and otherwise
// returns false at once: the check path never waits for the rate limiter.
func (s *keySet) refreshUnknownKID(ctx context.Context) bool {
	return s.fetch(ctx, true) == nil
}

// fetch joins the fetch in flight or starts one (when limited, only if the
// limiter allows; a fetch joined is never limited). The fetch is shared, so
// it runs detached from ctx: a caller that gives up (a cancelled webhook
// request) must not abort it for the others (the periodic refresh, checks
// waiting on a new kid). ctx bounds only this caller's wait.
func (s *keySet) fetch(ctx context.Context, limited bool) error {
	detached := context.WithoutCancel(ctx)
	done := s.flight.DoChan("jwks", func() (any, error) {
		if limited && !s.limiter.Allow() {
			return nil, errRateLimited
		}
		ctx, cancel := context.WithTimeout(detached, 10*time.Second)
		defer cancel()
		return nil, s.fetchAndSwap(ctx)
	})
	select {
	case r := <-done:
		if err := ctx.Err(); err != nil {
			return err // gave up first, even if the fetch ended meanwhile
		}
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *keySet) fetchAndSwap(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.observe("error")
		}
	}()
	uri, err := s.resolve(ctx)
	if err != nil {
		return err
	}
	body, err := s.get(ctx, uri)
	if err != nil {
		return fmt.Errorf("fetch jwks %s: %w", uri, err)
	}
	fp := sha256.Sum256(body)
	if old := s.load(); old != nil && old.fingerprint == fp {
		s.observe("unchanged")
		return nil
	}
	k, err := parseJWKS(body)
	if err != nil {
		return fmt.Errorf("parse jwks %s: %w", uri, err)
	}
	k.fingerprint = fp
	old := s.current.Swap(k)
	s.observe("changed")
	if old != nil {
		s.log.Info("issuer key set changed", "issuer", s.issuer, "keys", k.count)
		s.onChange()
	} else {
		s.log.Info("issuer keys loaded", "issuer", s.issuer, "keys", k.count)
	}
	return nil
}

// resolve returns the jwks_uri, reading it from OIDC discovery the first time
// when it was not configured.
func (s *keySet) resolve(ctx context.Context) (string, error) {
	s.mu.Lock()
	uri := s.uri
	s.mu.Unlock()
	if uri != "" {
		return uri, nil
	}
	if s.jwksURI != "" {
		uri = s.jwksURI
	} else {
		wellKnown := strings.TrimSuffix(s.issuer, "/") + "/.well-known/openid-configuration"
		body, err := s.get(ctx, wellKnown)
		if err != nil {
			return "", fmt.Errorf("oidc discovery %s: %w", wellKnown, err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			return "", fmt.Errorf("oidc discovery %s: %w", wellKnown, err)
		}
		// OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for.
		if doc.Issuer != s.issuer {
			return "", fmt.Errorf("oidc discovery %s: document issuer %q does not match", wellKnown, doc.Issuer)
		}
		if doc.JWKSURI == "" {
			return "", fmt.Errorf("oidc discovery %s: no jwks_uri", wellKnown)
		}
		uri = doc.JWKSURI
		if err := s.secure(uri); err != nil {
			return "", fmt.Errorf("oidc discovery %s: jwks_uri: %w", wellKnown, err)
		}
	}
	s.mu.Lock()
	s.uri = uri
	s.mu.Unlock()
	return uri, nil
}

func (s *keySet) get(ctx context.Context, uri string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// Redirects are followed, but never down to plain http.
	if err := s.secure(resp.Request.URL.String()); err != nil {
		return nil, fmt.Errorf("redirected: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("document larger than %d bytes", maxDocumentBytes)
	}
	return body, nil
}

// parseJWKS builds the keyfunc for one JWKS document. Keys of a type the
// library does not support are skipped, as are private parts; a set that ends
// up empty is an error, so that a broken endpoint never replaces good keys.
func parseJWKS(body []byte) (*keys, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, err
	}
	store := jwkset.NewMemoryStorage()
	n := 0
	for _, m := range set.Keys {
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue
		}
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if errors.Is(err, jwkset.ErrUnsupportedKey) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", m.KID, err)
		}
		if err := store.KeyWrite(context.Background(), jwk); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("no usable signing keys")
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: store})
	if err != nil {
		return nil, err
	}
	return &keys{kf: kf, count: n}, nil
}

// secure refuses a URL that would carry keys in cleartext (CheckURL).
func (s *keySet) secure(raw string) error {
	return CheckURL(raw, s.allowInsecure)
}
