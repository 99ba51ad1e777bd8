package token

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// BodySignatureOptions configure a BodySignatureVerifier.
type BodySignatureOptions struct {
	// HMACSecret verifies HS256/384/512 signatures.
	HMACSecret []byte
	// JWKSURI is where the sender publishes its public keys.
	JWKSURI string
	// Algorithms pins the accepted asymmetric algorithms (default
	// DefaultAlgorithms). HS* is accepted only with HMACSecret.
	Algorithms []string
	// AllowInsecureHTTP allows a plain-http JWKS beyond loopback.
	AllowInsecureHTTP bool
	HTTPClient        *http.Client
	RefreshInterval   time.Duration
	Logger            *slog.Logger
	// KeyID, when set, pins the signing key: a signature whose header kid is
	// another one, or absent, is refused, even when its key is in the JWKS.
	KeyID string
	// Now is the clock an exp claim is checked against (default time.Now).
	Now func() time.Time
}

// BodySignatureVerifier checks signed request bodies as FusionAuth signs its
// webhooks: a JWS whose only claim, request_body_sha256, is the standard
// padded base64 of the SHA-256 of the raw body.
type BodySignatureVerifier struct {
	hmac    []byte
	allowed map[string]bool
	keys    *keySet
	parser  *jwt.Parser
	kid     string
	now     func() time.Time
}

// NewBodySignatureVerifier returns a verifier; with a JWKS URI, Run keeps
// its keys current.
func NewBodySignatureVerifier(opts BodySignatureOptions) (*BodySignatureVerifier, error) {
	if len(opts.HMACSecret) == 0 && opts.JWKSURI == "" {
		return nil, errors.New("body signature: an hmac secret or a jwks uri is required")
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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &BodySignatureVerifier{hmac: opts.HMACSecret, allowed: map[string]bool{},
		parser: jwt.NewParser(jwt.WithoutClaimsValidation()), kid: opts.KeyID, now: opts.Now}
	if opts.JWKSURI != "" {
		for _, a := range Algorithms(opts.Algorithms, false) {
			if err := CheckAlgorithm(a, false); err != nil {
				return nil, fmt.Errorf("body signature: with a jwks: %w", err)
			}
			b.allowed[a] = true
		}
		b.keys = &keySet{
			issuer: opts.JWKSURI, jwksURI: opts.JWKSURI, allowInsecure: opts.AllowInsecureHTTP,
			client: opts.HTTPClient, log: opts.Logger,
			interval: opts.RefreshInterval, limiter: rate.NewLimiter(rate.Every(30*time.Second), 1),
			onChange: func() {}, observe: func(string) {},
		}
	}
	if len(opts.HMACSecret) > 0 {
		for _, a := range HMACAlgorithms {
			b.allowed[a] = true
		}
	}
	return b, nil
}

// Run keeps the JWKS current until ctx ends (no-op without a JWKS).
func (b *BodySignatureVerifier) Run(ctx context.Context) {
	if b.keys != nil {
		b.keys.run(ctx)
	}
}

// Verify checks that jws signs body. It returns ErrSignature for any
// mismatch and ErrMalformed for a header that is not a JWS at all.
//
// FusionAuth's signature carries one claim and a JWT header; anything else
// is a JWT made for another purpose (an access token signed with the same
// key, say) and is refused: a typ other than JWT, a kid other than the
// pinned one (KeyID), an iss (FusionAuth sets none, so no issuer can be
// expected of it), and an exp that is not a number or is past.
func (b *BodySignatureVerifier) Verify(ctx context.Context, jws string, body []byte) error {
	if !wellFormed(jws, 16<<10) {
		return ErrMalformed
	}
	claims := jwt.MapClaims{}
	_, err := b.parser.ParseWithClaims(jws, claims, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if !b.allowed[alg] {
			return nil, ErrAlgorithm
		}
		if typ, ok := t.Header["typ"]; ok {
			if s, ok := typ.(string); !ok || !strings.EqualFold(s, "JWT") {
				return nil, fmt.Errorf("%w: typ %v", ErrType, typ)
			}
		}
		kid, hasKID := t.Header["kid"]
		if hasKID {
			if _, ok := kid.(string); !ok {
				return nil, ErrMalformed
			}
		}
		if b.kid != "" && kid != b.kid {
			return nil, fmt.Errorf("%w: not signed with the configured key", ErrSignature)
		}
		if strings.HasPrefix(alg, "HS") {
			return b.hmac, nil
		}
		key, _, err := b.keys.lookup(ctx, t)
		return key, err
	})
	if err != nil {
		if errors.Is(err, ErrType) || errors.Is(err, ErrSignature) {
			return fmt.Errorf("%w: %w", ErrSignature, err)
		}
		return classify(err)
	}
	if _, ok := claims["iss"]; ok {
		return fmt.Errorf("%w: has an iss claim", ErrSignature)
	}
	if _, ok := claims["exp"]; ok {
		exp, err := claims.GetExpirationTime()
		if err != nil || exp == nil {
			return fmt.Errorf("%w: exp is not a number", ErrSignature)
		}
		if !b.now().Before(exp.Time) {
			return fmt.Errorf("%w: expired", ErrSignature)
		}
	}
	claimed, ok := claims["request_body_sha256"].(string)
	if !ok {
		return fmt.Errorf("%w: no request_body_sha256 claim", ErrSignature)
	}
	sum := sha256.Sum256(body)
	want := base64.StdEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(claimed), []byte(want)) != 1 {
		return fmt.Errorf("%w: body does not match its signature", ErrSignature)
	}
	return nil
}
