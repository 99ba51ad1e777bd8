package extauthz

import (
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"

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
	ReasonHeaderInvalid
	ReasonLogoutRevoked
	ReasonIntrospectionInactive
	ReasonIntrospectionPassed
	ReasonAnonymous
	ReasonForbidden
	ReasonInsufficientScope
	ReasonRouteUnmatched
	ReasonPolicyUnknown
	ReasonPathInvalid
	ReasonRequestInvalid
	numReasons
)

// reasonInfo is how one reason is answered.
type reasonInfo struct {
	name string
	// grpc is the CheckResponse's status code: OK for an allow, else the
	// code Envoy logs for the denial.
	grpc codes.Code
	// http is the status Envoy answers the client with (200: the request
	// goes on to the upstream).
	http int
	// errorCode and description are the RFC 6750 error and
	// error_description: in the WWW-Authenticate challenge of a 401 (except
	// token_missing, §3.1) and in the JSON body of every denial.
	errorCode, description string
}

// reasons is the one table of reasons: responses, metric labels and the
// README's "Answers and reasons" table follow it (reasons_test.go checks
// the README).
var reasons = [numReasons]reasonInfo{
	ReasonAllowed:               {"allowed", codes.OK, http.StatusOK, "", "allowed"},
	ReasonTokenMissing:          {"token_missing", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token missing"},
	ReasonTokenMalformed:        {"token_malformed", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token malformed"},
	ReasonTokenInvalidSignature: {"token_invalid_signature", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token invalid signature"},
	ReasonTokenExpired:          {"token_expired", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token expired"},
	ReasonTokenNotYetValid:      {"token_not_yet_valid", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token not yet valid"},
	ReasonIssuerUnknown:         {"issuer_unknown", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "issuer unknown"},
	ReasonAudienceMismatch:      {"audience_mismatch", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "audience mismatch"},
	ReasonAlgorithmNotAllowed:   {"algorithm_not_allowed", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "algorithm not allowed"},
	ReasonKeyUnknown:            {"key_unknown", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "key unknown"},
	ReasonTokenLifetimeTooLong:  {"token_lifetime_too_long", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token lifetime too long"},
	ReasonTokenTypeInvalid:      {"token_type_invalid", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token type invalid"},
	ReasonClaimsInvalid:         {"claims_invalid", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "claims invalid"},
	ReasonTokenRevoked:          {"token_revoked", codes.Unauthenticated, http.StatusUnauthorized, "invalid_token", "token revoked"},
	// tokengate cannot vouch that the token is not revoked, or could not make
	// a logout durable: not the client's fault, so no challenge; it may retry.
	ReasonRevocationsStale: {"revocations_stale", codes.Unavailable, http.StatusServiceUnavailable, "temporarily_unavailable", "revocations stale"},
	ReasonLogoutFailed:     {"logout_failed", codes.Unavailable, http.StatusServiceUnavailable, "temporarily_unavailable", "logout failed"},
	// The request carries a variant of an identity header ('_' for '-'):
	// refused whatever its token, since some upstreams would read it as the
	// identity header itself.
	ReasonHeaderInvalid: {"header_invalid", codes.InvalidArgument, http.StatusBadRequest, "invalid_request", "header invalid"},
	// A revoked token on a logout route: let on to the IdP so that its
	// session ends too, but with no identity and without its authorization
	// header. An allow that is not "allowed": no Envoy rule keyed on
	// reason == allowed takes it for an authenticated request.
	ReasonLogoutRevoked: {"logout_revoked", codes.OK, http.StatusOK, "", "logout revoked"},
	// On an introspection route, the form's token is revoked, or invalid for
	// a configured issuer: tokengate answers for the IdP, 200 with
	// {"active":false} (RFC 7662 §2.2). A denial to Envoy (a non-OK code,
	// so that it sends the denied response) but no failure to the caller.
	ReasonIntrospectionInactive: {"introspection_inactive", codes.PermissionDenied, http.StatusOK, "", "introspection inactive"},
	// On an introspection route, anything else: the request goes on to the
	// IdP, which answers. No identity: the caller is no token's holder.
	ReasonIntrospectionPassed: {"introspection_passed", codes.OK, http.StatusOK, "", "introspection passed"},
	// Route policy. A public route's request without a valid token goes on
	// with no identity: an allow that is not "allowed", so that no Envoy
	// rule keyed on reason == allowed takes it for an authenticated one.
	ReasonAnonymous: {"anonymous", codes.OK, http.StatusOK, "", "anonymous"},
	// The token is valid, but the route refuses it (a deny rule, or a
	// requirement not met), or lacks a scope it requires (RFC 6750 §3.1:
	// 403 with a challenge naming the scopes).
	ReasonForbidden:         {"forbidden", codes.PermissionDenied, http.StatusForbidden, "forbidden", "forbidden"},
	ReasonInsufficientScope: {"insufficient_scope", codes.PermissionDenied, http.StatusForbidden, "insufficient_scope", "insufficient scope"},
	// No rule matches and policy.unmatched is deny.
	ReasonRouteUnmatched: {"route_unmatched", codes.PermissionDenied, http.StatusForbidden, "forbidden", "route unmatched"},
	// Envoy's context_extensions name a policy that is not configured: a
	// configuration error, never a fallback to the default policy.
	ReasonPolicyUnknown: {"policy_unknown", codes.PermissionDenied, http.StatusForbidden, "forbidden", "policy unknown"},
	// The path cannot be read safely (an encoded slash, a path climbing
	// above /, readings that disagree): refused rather than guessed at.
	ReasonPathInvalid: {"path_invalid", codes.InvalidArgument, http.StatusBadRequest, "invalid_request", "path invalid"},
	// HTTP endpoint only: the request does not say which request to
	// authorise (in its mode, a header it needs is missing, repeated or
	// malformed): the proxy's configuration is wrong, or a client reached
	// the endpoint itself. Never an allow.
	ReasonRequestInvalid: {"request_invalid", codes.InvalidArgument, http.StatusBadRequest, "invalid_request", "request invalid"},
}

// String is the reason's stable name, for example "token_expired".
func (r Reason) String() string {
	if r >= numReasons {
		return "unknown"
	}
	return reasons[r].name
}

// Reasons lists every reason, for metric initialisation and documentation.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// HTTPStatus is the status an answer with this reason carries (200 for an
// allow: the request goes on).
func (r Reason) HTTPStatus() int { return reasons[r].http }

// GRPCCode is the CheckResponse status code of an answer with this reason.
func (r Reason) GRPCCode() codes.Code { return reasons[r].grpc }

// ReasonFor maps a verification error to its reason. ok is false when the
// error means no decision can be made (the issuer's keys never loaded).
func ReasonFor(err error) (r Reason, ok bool) {
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
