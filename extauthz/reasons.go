package extauthz

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tokengate/tokengate/extauthz/token"
)

// Reason is why a request was answered the way it was. The set is closed: the
// same names are metric labels, log fields, response bodies and test
// expectations, and never raw error text.
type Reason uint8

const (
	ReasonAllowed Reason = iota
	ReasonTokenMissing
	ReasonTokenMalformed
	ReasonTokenInvalidSignature
	ReasonTokenExpired
	ReasonTokenNotYetValid
	ReasonIssuerUnknown
	ReasonAudienceMismatch
	ReasonAlgorithmNotAllowed
	ReasonKeyUnknown
	ReasonTokenLifetimeTooLong
	ReasonTokenTypeInvalid
	ReasonClaimsInvalid
	ReasonTokenRevoked
	ReasonRevocationsStale
	ReasonLogoutFailed
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonAllowed:               "allowed",
	ReasonTokenMissing:          "token_missing",
	ReasonTokenMalformed:        "token_malformed",
	ReasonTokenInvalidSignature: "token_invalid_signature",
	ReasonTokenExpired:          "token_expired",
	ReasonTokenNotYetValid:      "token_not_yet_valid",
	ReasonIssuerUnknown:         "issuer_unknown",
	ReasonAudienceMismatch:      "audience_mismatch",
	ReasonAlgorithmNotAllowed:   "algorithm_not_allowed",
	ReasonKeyUnknown:            "key_unknown",
	ReasonTokenLifetimeTooLong:  "token_lifetime_too_long",
	ReasonTokenTypeInvalid:      "token_type_invalid",
	ReasonClaimsInvalid:         "claims_invalid",
	ReasonTokenRevoked:          "token_revoked",
	ReasonRevocationsStale:      "revocations_stale",
	ReasonLogoutFailed:          "logout_failed",
}

// String is the reason's stable name, for example "token_expired".
func (r Reason) String() string {
	if r >= numReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Reasons lists every reason, for metric initialisation and documentation.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// HTTPStatus is the status a denial with this reason carries.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonAllowed:
		return http.StatusOK
	case ReasonRevocationsStale, ReasonLogoutFailed:
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}

// description is the RFC 6750 error_description: the reason in words.
func (r Reason) description() string {
	return strings.ReplaceAll(r.String(), "_", " ")
}

// reasonFor maps a verification error to its reason. ok is false when the
// error means no decision can be made (the issuer's keys never loaded).
func reasonFor(err error) (r Reason, ok bool) {
	switch {
	case errors.Is(err, token.ErrKeysUnavailable):
		return 0, false
	case errors.Is(err, token.ErrMalformed):
		return ReasonTokenMalformed, true
	case errors.Is(err, token.ErrSignature):
		return ReasonTokenInvalidSignature, true
	case errors.Is(err, token.ErrExpired):
		return ReasonTokenExpired, true
	case errors.Is(err, token.ErrNotYetValid):
		return ReasonTokenNotYetValid, true
	case errors.Is(err, token.ErrIssuerUnknown):
		return ReasonIssuerUnknown, true
	case errors.Is(err, token.ErrAudience):
		return ReasonAudienceMismatch, true
	case errors.Is(err, token.ErrAlgorithm):
		return ReasonAlgorithmNotAllowed, true
	case errors.Is(err, token.ErrKeyUnknown):
		return ReasonKeyUnknown, true
	case errors.Is(err, token.ErrLifetimeTooLong):
		return ReasonTokenLifetimeTooLong, true
	case errors.Is(err, token.ErrType):
		return ReasonTokenTypeInvalid, true
	case errors.Is(err, token.ErrClaims):
		return ReasonClaimsInvalid, true
	}
	// An error we do not know is a token we cannot trust: fail closed.
	return ReasonTokenInvalidSignature, true
}
