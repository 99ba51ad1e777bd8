package token

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors returned by Verify. Each names one way a token fails; the
// Envoy adapter maps them to its closed set of denial reasons. Errors that do
// not wrap one of these (in practice only ErrKeysUnavailable) mean that no
// decision could be made.
var (
	ErrMalformed         = errors.New("token malformed")
	ErrSignature         = errors.New("token signature invalid")
	ErrExpired           = errors.New("token expired")
	ErrNotYetValid       = errors.New("token not yet valid")
	ErrIssuerUnknown     = errors.New("token issuer unknown")
	ErrAudience          = errors.New("token audience mismatch")
	ErrAlgorithm         = errors.New("token algorithm not allowed")
	ErrKeyUnknown        = errors.New("token key unknown")
	ErrLifetimeTooLong   = errors.New("token lifetime too long")
	ErrType              = errors.New("token type not accepted")
	ErrClaims            = errors.New("token claims invalid")
	ErrKeysUnavailable   = errors.New("issuer keys not loaded")
	errNoVerificationKey = errors.New("no verification key")
)

// classify turns an error from jwt.Parser into one of the sentinels above. The
// keyfunc returns our own sentinels, which take precedence; then the most
// specific jwt error wins, checked in a fixed order so that a token that is
// both expired and of the wrong audience always gets the same answer.
func classify(err error) error {
	for _, own := range []error{
		ErrKeysUnavailable, ErrIssuerUnknown, ErrAlgorithm, ErrType, ErrKeyUnknown, ErrMalformed, ErrClaims,
	} {
		if errors.Is(err, own) {
			return own
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ErrMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// The alg header names no method the library knows.
		return ErrAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrInvalidType):
		return ErrClaims
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrAudience
	}
	return ErrClaims
}
