package token

import (
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// base64url marks the bytes of the base64url alphabet.
var base64url = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// wellFormed is the cheap gate before any decoding: a compact JWS of bounded
// length, three base64url segments (header and payload not empty), nothing
// else. A 100 KB blob or a header full of control characters costs one pass
// over its bytes at most.
func wellFormed(raw string, maxBytes int) bool {
	if len(raw) == 0 || len(raw) > maxBytes {
		return false
	}
	dots, last := 0, -1
	for i := 0; i < len(raw); i++ {
		if base64url[raw[i]] {
			continue
		}
		if raw[i] != '.' || dots == 2 || i == last+1 {
			return false // another byte, a third dot, or an empty header or payload
		}
		dots++
		last = i
	}
	// An empty signature is left to the parser, so that alg "none" is
	// reported as the algorithm problem it is.
	return dots == 2
}

// identity reads the verified claims into id. exp and iat are required,
// exp − iat is bounded by the issuer's maximum lifetime, and the string
// claims we forward must be strings.
func identity(id *Identity, iss *issuer, claims jwt.MapClaims) error {
	if _, ok := claims["events"]; ok {
		// A security event token (such as an untyped back-channel logout
		// token) is never an access token.
		return fmt.Errorf("%w: has an events claim", ErrType)
	}
	if !iss.cfg.AcceptIDTokens {
		// Only OIDC ID tokens carry these (OIDC Core §3.1.3.6, §3.3.2.11);
		// nonce is no signal: some IdPs put it in access tokens too.
		for _, c := range [...]string{"at_hash", "c_hash"} {
			if _, ok := claims[c]; ok {
				return fmt.Errorf("%w: has %s: an ID token", ErrType, c)
			}
		}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return fmt.Errorf("%w: exp", ErrClaims)
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil {
		return fmt.Errorf("%w: iat", ErrClaims)
	}
	if exp.Sub(iat.Time) > iss.cfg.MaxTokenLifetime {
		return ErrLifetimeTooLong
	}
	aud, err := claims.GetAudience()
	if err != nil {
		return fmt.Errorf("%w: aud", ErrClaims)
	}
	*id = Identity{
		Issuer:     iss.cfg.Issuer,
		IssuerName: iss.cfg.Name,
		Audience:   iss.audience(aud),
		IssuedAt:   iat.Time,
		ExpiresAt:  exp.Time,
	}
	for _, c := range [...]struct {
		name string
		dst  *string
	}{{"sub", &id.Subject}, {"jti", &id.TokenID}, {"sid", &id.SessionID}} {
		v, ok := claims[c.name]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%w: %s", ErrClaims, c.name)
		}
		*c.dst = s
	}
	return nil
}
