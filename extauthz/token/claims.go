package token

import (
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// wellFormed is the cheap gate before any decoding: a compact JWS of bounded
// length, three base64url segments, nothing else. A 100 KB blob or a header
// full of control characters costs one pass over its bytes.
func wellFormed(raw string, maxBytes int) bool {
	if len(raw) == 0 || len(raw) > maxBytes {
		return false
	}
	dots := 0
	last := -1
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if i == last+1 && dots < 2 {
				return false // empty header or payload
			}
			dots++
			last = i
		default:
			return false
		}
	}
	// An empty signature is left to the parser, so that alg "none" is
	// reported as the algorithm problem it is.
	return dots == 2
}

// identity reads the verified claims. exp and iat are required, exp − iat is
// bounded by the issuer's maximum lifetime, and the string claims we forward
// must be strings.
func identity(iss *issuer, claims jwt.MapClaims) (*Identity, error) {
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, fmt.Errorf("%w: exp", ErrClaims)
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil {
		return nil, fmt.Errorf("%w: iat", ErrClaims)
	}
	if exp.Sub(iat.Time) > iss.cfg.MaxTokenLifetime {
		return nil, ErrLifetimeTooLong
	}
	aud, err := claims.GetAudience()
	if err != nil {
		return nil, fmt.Errorf("%w: aud", ErrClaims)
	}
	id := &Identity{
		Issuer:     iss.cfg.Issuer,
		IssuerName: iss.cfg.Name,
		Audience:   aud,
		IssuedAt:   iat.Time,
		ExpiresAt:  exp.Time,
		Claims:     claims,
	}
	for name, dst := range map[string]*string{"sub": &id.Subject, "jti": &id.TokenID, "sid": &id.SessionID} {
		v, ok := claims[name]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrClaims, name)
		}
		*dst = s
	}
	return id, nil
}
