// Package token verifies bearer JWTs: signature with keys bound to the token's
// issuer (JWKS through keyfunc, or an HMAC secret), header type, algorithm
// allowlist, time claims, audience and lifetime. Verified tokens are cached by
// the SHA-256 of their bytes until they expire or their issuer's keys change.
//
// Revocation and route policy are not this package's job: they are checked by
// the caller on every request, after the cache.
package token

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// Issuer is one trusted token issuer.
type Issuer struct {
	// Name labels the issuer in metrics, logs and health components.
	Name string
	// Issuer is matched exactly against the token's iss claim.
	Issuer string
	// JWKSURI is where the keys are; empty means OIDC discovery at
	// {Issuer}/.well-known/openid-configuration, unless HMACSecret is set and
	// the issuer is HMAC only.
	JWKSURI string
	// Audiences: the token's aud must contain at least one.
	Audiences []string
	// Algorithms is the allowlist; empty means DefaultAlgorithms (plus
	// HMACAlgorithms when HMACSecret is set).
	Algorithms []string
	// HMACSecret verifies HS* tokens of this issuer, and nothing else.
	HMACSecret []byte
	// Leeway tolerates clock skew on exp, nbf and iat.
	Leeway time.Duration
	// MaxTokenLifetime bounds exp − iat: revocations are kept only that long.
	MaxTokenLifetime time.Duration
	// LogoutAudiences are the client ids accepted as the aud of this
	// issuer's OIDC back-channel logout tokens; empty: none accepted.
	LogoutAudiences []string
	// AllowInsecureHTTP allows keys fetched over plain http from a host
	// other than loopback (configured, discovered, or redirected to).
	AllowInsecureHTTP bool
	// AcceptIDTokens accepts tokens that carry at_hash or c_hash, which only
	// OIDC ID tokens do. Off, they are ErrType: an IdP that signs ID and
	// access tokens alike (typ JWT, the same aud) would otherwise let an ID
	// token, handed to the browser, pass as an access token.
	AcceptIDTokens bool
	// RequireTyp, when set (for example "at+jwt", RFC 9068), is the only
	// header typ accepted for access tokens; "application/" may prefix it
	// and case does not count. A token without typ is ErrType.
	RequireTyp string
}

// Options configure a Verifier.
type Options struct {
	Issuers []Issuer
	// CacheMaxEntries bounds the verified-token cache; 0 disables it.
	CacheMaxEntries int
	// CacheMaxBytes bounds the cache's weight, the bytes its entries hold
	// by the weigher's count (see cache.go); 0 means DefaultCacheMaxBytes.
	// Both bounds hold at once.
	CacheMaxBytes int
	// MaxTokenBytes: longer tokens are malformed without further work.
	MaxTokenBytes int
	// RefreshInterval is how often each JWKS is fetched again.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by
	// tokens with an unknown kid, per issuer.
	UnknownKIDInterval time.Duration
	// HTTPClient fetches JWKS and discovery documents.
	HTTPClient *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
	// Derive, when set, is called once per verified token with its verified
	// claims; its result is kept in Identity.Derived for as long as the
	// token stays cached (the adapter keeps its ready-made upstream headers
	// there). The claims are not kept: Derive must copy what it needs. A
	// result with a method Size() int is charged to the cache by it.
	Derive func(id *Identity, claims map[string]any) any
	// OnFetch is told of every JWKS fetch: issuer name and "changed",
	// "unchanged" or "error" (cmd marks an issuer ready with it). Fetches
	// are counted in tokengate_jwks_fetches_total whether or not it is set.
	OnFetch func(issuer, result string)
	// Registerer, when set, gets tokengate_jwks_fetches_total{issuer,result},
	// every issuer with a JWKS and every result at zero from the start.
	Registerer prometheus.Registerer
}

// fetchResults are the values of tokengate_jwks_fetches_total's result label.
var fetchResults = []string{"changed", "unchanged", "error"}

// Identity is what a verified token says, as far as decisions need it: the
// claims that revocations are keyed by, and the times. The other claims are
// not kept (a cached identity must stay small); Options.Derive sees them
// once, and Verifier.Introspect reads them again. An Identity is shared
// between requests and must not be modified.
type Identity struct {
	Issuer     string // the iss claim
	IssuerName string // the configured name
	Subject    string
	TokenID    string // jti
	SessionID  string // sid
	Audience   []string
	IssuedAt   time.Time
	ExpiresAt  time.Time
	Derived    any
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	issuers  map[string]*issuer
	ordered  []*issuer
	parser   *jwt.Parser
	cache    *otter.Cache[[sha256.Size]byte, *entry]
	maxBytes int
	now      func() time.Time
	derive   func(*Identity, map[string]any) any
}

type issuer struct {
	cfg             Issuer
	allowed         map[string]bool
	validator       *jwt.Validator
	logoutValidator *jwt.Validator // nil: back-channel logout off
	keys            *keySet        // nil for an HMAC-only issuer
}

// entry is one cached verified token: its identity and what says whether
// it still stands, in one allocation.
type entry struct {
	id     Identity
	keys   *keys // the key set that verified it; nil for HMAC
	iss    *issuer
	weight uint32 // bytes held, as the weigher counts them
}

// New builds a Verifier. Keys are fetched by Run.
func New(opts Options) (*Verifier, error) {
	if len(opts.Issuers) == 0 {
		return nil, errors.New("no issuers")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 15 * time.Minute
	}
	if opts.UnknownKIDInterval <= 0 {
		opts.UnknownKIDInterval = 30 * time.Second
	}
	if opts.MaxTokenBytes <= 0 {
		opts.MaxTokenBytes = 16 << 10
	}
	if opts.OnFetch == nil {
		opts.OnFetch = func(string, string) {}
	}
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_jwks_fetches_total",
		Help: "JWKS fetches by issuer and result (changed, unchanged, error).",
	}, []string{"issuer", "result"})
	v := &Verifier{
		issuers:  make(map[string]*issuer, len(opts.Issuers)),
		maxBytes: opts.MaxTokenBytes,
		now:      opts.Now,
		derive:   opts.Derive,
		// Claims are validated per issuer (leeway and audiences differ), after
		// the signature; the keyfunc enforces each issuer's algorithms.
		parser: jwt.NewParser(jwt.WithoutClaimsValidation()),
	}
	if opts.CacheMaxEntries > 0 {
		c, err := newCache(opts.CacheMaxEntries, opts.CacheMaxBytes, v.now)
		if err != nil {
			return nil, fmt.Errorf("verified-token cache: %w", err)
		}
		v.cache = c
	}
	for _, cfg := range opts.Issuers {
		if _, dup := v.issuers[cfg.Issuer]; dup {
			return nil, fmt.Errorf("issuer %q configured twice", cfg.Issuer)
		}
		algs := Algorithms(cfg.Algorithms, len(cfg.HMACSecret) > 0)
		iss := &issuer{cfg: cfg, allowed: make(map[string]bool, len(algs))}
		for _, a := range algs {
			if err := CheckAlgorithm(a, len(cfg.HMACSecret) > 0); err != nil {
				return nil, fmt.Errorf("issuer %q: %w", cfg.Issuer, err)
			}
			iss.allowed[a] = true
		}
		if cfg.MaxTokenLifetime <= 0 {
			return nil, fmt.Errorf("issuer %q: max token lifetime must be positive", cfg.Issuer)
		}
		if len(cfg.Audiences) == 0 {
			return nil, fmt.Errorf("issuer %q: no audiences", cfg.Issuer)
		}
		iss.validator = jwt.NewValidator(
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithAudience(cfg.Audiences...),
			jwt.WithTimeFunc(opts.Now),
		)
		if len(cfg.LogoutAudiences) > 0 {
			iss.logoutValidator = jwt.NewValidator(
				jwt.WithLeeway(cfg.Leeway),
				jwt.WithExpirationRequired(),
				jwt.WithIssuedAt(),
				jwt.WithAudience(cfg.LogoutAudiences...),
				jwt.WithTimeFunc(opts.Now),
			)
		}
		if cfg.JWKSURI != "" || len(cfg.HMACSecret) == 0 {
			iss.keys = &keySet{
				issuer:        cfg.Issuer,
				jwksURI:       cfg.JWKSURI,
				allowInsecure: cfg.AllowInsecureHTTP,
				client:        opts.HTTPClient,
				log:           opts.Logger,
				interval:      opts.RefreshInterval,
				limiter:       rate.NewLimiter(rate.Every(opts.UnknownKIDInterval), 1),
				onChange:      v.flush,
			}
			counted := map[string]prometheus.Counter{}
			for _, r := range fetchResults {
				counted[r] = fetches.WithLabelValues(cfg.Name, r)
			}
			iss.keys.observe = func(result string) {
				counted[result].Inc()
				opts.OnFetch(cfg.Name, result)
			}
		}
		v.issuers[cfg.Issuer] = iss
		v.ordered = append(v.ordered, iss)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(fetches); err != nil {
			return nil, fmt.Errorf("register jwks metrics: %w", err)
		}
	}
	return v, nil
}

// Run keeps every issuer's keys current until ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	var g errgroup.Group
	for _, iss := range v.ordered {
		if iss.keys != nil {
			g.Go(func() error { iss.keys.run(ctx); return nil })
		}
	}
	return g.Wait()
}

// Loaded reports, per configured issuer name, whether its keys have loaded at
// least once. HMAC-only issuers are always loaded.
func (v *Verifier) Loaded() map[string]bool {
	m := make(map[string]bool, len(v.ordered))
	for _, iss := range v.ordered {
		m[iss.cfg.Name] = iss.keys == nil || iss.keys.load() != nil
	}
	return m
}

// Refresh fetches the named issuer's keys now (for example when the IdP says
// its signing keys changed) and flushes the cache if they did. An HMAC-only
// issuer has nothing to fetch.
func (v *Verifier) Refresh(ctx context.Context, issuerName string) error {
	for _, iss := range v.ordered {
		if iss.cfg.Name == issuerName {
			if iss.keys == nil {
				return nil
			}
			return iss.keys.refresh(ctx)
		}
	}
	return fmt.Errorf("no issuer named %q", issuerName)
}

// Flush empties the verified-token cache: every token is verified again on
// its next use.
func (v *Verifier) Flush() { v.flush() }

func (v *Verifier) flush() {
	if v.cache != nil {
		v.cache.InvalidateAll()
	}
}

// Verify checks a raw compact JWS. It returns the identity, or an error that
// wraps one of the package's sentinels. ErrKeysUnavailable means no decision
// can be made yet.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	if len(raw) > v.maxBytes {
		return nil, ErrMalformed
	}
	now := v.now()
	var key [sha256.Size]byte
	if v.cache != nil {
		// A hit means these exact bytes verified before: no need to look at
		// their syntax again.
		// No copy of the token: Sum256 only reads its input.
		key = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		if e, ok := v.cache.GetIfPresent(key); ok && e.current(now) {
			return &e.id, nil
		}
	}
	if !wellFormed(raw, v.maxBytes) {
		return nil, ErrMalformed
	}
	e, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.Set(key, e)
	}
	return &e.id, nil
}

// current reports whether a cached entry still stands: not expired, and
// verified by the key set its issuer publishes now.
func (e *entry) current(now time.Time) bool {
	if !now.Before(e.id.ExpiresAt) {
		return false
	}
	return e.keys == nil || e.iss.keys.load() == e.keys
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*entry, error) {
	claims, iss, used, err := v.parse(ctx, raw, accessToken)
	if err != nil {
		return nil, err
	}
	if err := iss.validator.Validate(claims); err != nil {
		return nil, classify(err)
	}
	e := &entry{iss: iss, keys: used}
	if err := identity(&e.id, iss, claims); err != nil {
		return nil, err
	}
	if v.derive != nil {
		e.id.Derived = v.derive(&e.id, claims)
	}
	e.weight = e.size()
	return e, nil
}

// use is what a token is presented as: the header types it may carry, and
// whether its issuer's require_typ applies.
type use struct {
	typeOK     func(any) bool
	requireTyp bool
}

var (
	accessToken = use{typeOK: accessTokenType, requireTyp: true}
	logoutToken = use{typeOK: logoutTokenType}
)

// parse checks the signature of raw with the keys of the issuer its iss
// names, accepting the header types u allows. It returns the claims
// unvalidated, the issuer, and the key set that verified (nil for HMAC).
func (v *Verifier) parse(ctx context.Context, raw string, u use) (jwt.MapClaims, *issuer, *keys, error) {
	claims := jwt.MapClaims{}
	var (
		iss  *issuer
		used *keys
	)
	_, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		var err error
		iss, err = v.issuerFor(t, u)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(t.Method.Alg(), "HS") {
			return iss.cfg.HMACSecret, nil
		}
		var key any
		key, used, err = iss.keys.lookup(ctx, t)
		return key, err
	})
	if err != nil {
		return nil, nil, nil, classify(err)
	}
	return claims, iss, used, nil
}

// issuerFor runs inside the parser, before any signature work: it binds the
// token to its issuer and enforces that issuer's header rules.
func (v *Verifier) issuerFor(t *jwt.Token, u use) (*issuer, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 §4.1.11: we understand no extensions, so we must reject.
		return nil, ErrMalformed
	}
	if kid, ok := t.Header["kid"]; ok {
		if _, ok := kid.(string); !ok {
			return nil, ErrMalformed
		}
	}
	typ, hasTyp := t.Header["typ"]
	if hasTyp && !u.typeOK(typ) {
		return nil, ErrType
	}
	claims := t.Claims.(jwt.MapClaims)
	name, _ := claims["iss"].(string)
	iss, ok := v.issuers[name]
	if !ok {
		return nil, ErrIssuerUnknown
	}
	if u.requireTyp && iss.cfg.RequireTyp != "" {
		s, _ := typ.(string)
		if !hasTyp || !sameType(s, iss.cfg.RequireTyp) {
			return nil, ErrType
		}
	}
	alg := t.Method.Alg()
	if !iss.allowed[alg] {
		return nil, ErrAlgorithm
	}
	if !strings.HasPrefix(alg, "HS") && iss.keys == nil {
		return nil, ErrAlgorithm
	}
	return iss, nil
}

// sameType compares two JWS typ values as RFC 7515 §4.1.9 says: media
// types, case-insensitive, "application/" optional.
func sameType(a, b string) bool {
	trim := func(s string) string {
		if len(s) > len("application/") && strings.EqualFold(s[:len("application/")], "application/") {
			return s[len("application/"):]
		}
		return s
	}
	return strings.EqualFold(trim(a), trim(b))
}

func accessTokenType(typ any) bool {
	s, ok := typ.(string)
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "jwt", "at+jwt", "application/at+jwt":
		return true
	}
	return false
}
