package policy

// Route policy: which rule decides a request, and whether a verified
// identity meets it. See Compile.

import (
	"errors"
)

// Access is what a rule asks of a request.
type Access uint8

const (
	// AccessAuthenticated: a valid, unrevoked token meeting the rule's
	// requirements.
	AccessAuthenticated Access = iota
	// AccessPublic: no token needed; a present token is still verified.
	AccessPublic
	// AccessDeny: refused (403 forbidden), whatever the token.
	AccessDeny
)

func (a Access) String() string {
	switch a {
	case AccessPublic:
		return "public"
	case AccessDeny:
		return "deny"
	}
	return "authenticated"
}

// Unmatched is what a request no rule matches gets.
type Unmatched uint8

const (
	// UnmatchedDeny: 403 route_unmatched.
	UnmatchedDeny Unmatched = iota
	// UnmatchedAuthenticated: a valid, unrevoked token, nothing more (the
	// behaviour without a policy).
	UnmatchedAuthenticated
)

// AnyAll is a set requirement: every one of AllOf, and at least one of
// AnyOf when it is not empty.
type AnyAll struct {
	AllOf []string
	AnyOf []string
}

// Require lists what an authenticated rule demands; every one that is set
// must hold.
type Require struct {
	// Issuers are configured issuer names (IssuerInfo.Name): the token's
	// issuer must be one of them.
	Issuers []string
	// Audiences: the token's aud must name at least one.
	Audiences []string
	// Scopes: from the scope claim (space-separated) or scp (an array, or a
	// space-separated string).
	Scopes AnyAll
	// Roles: from the issuer's RolesClaim.
	Roles AnyAll
	// When is a CEL expression over claims, request.method, request.host,
	// request.path and request.headers that must evaluate to true.
	When string
}

// MatchSpec says which requests a rule applies to; every field that is
// set must match. At most one of Path, PathPrefix and PathRegex.
type MatchSpec struct {
	// Host: exact, or "*.example.com" (any host ending in ".example.com");
	// case-insensitive, the request's port ignored. Empty: any host.
	Host string
	// Path: exact, after normalisation (NormalizePath); a trailing slash is
	// ignored.
	Path string
	// PathPrefix: whole segments, after normalisation: /orders matches
	// /orders, /orders/ and /orders/1, not /ordersx.
	PathPrefix string
	// PathRegex: Go RE2, anchored at both ends, matched against the
	// normalised path.
	PathRegex string
	// Methods: case-insensitive; empty means any.
	Methods []string
}

// RuleSpec is one configured rule.
type RuleSpec struct {
	Name   string
	Match  MatchSpec
	Access string // "public", "authenticated" (the default when empty) or "deny"
	// RejectInvalid, on a public rule: a present but invalid token is 401,
	// not ignored.
	RejectInvalid bool
	Require       Require
	// Shadow: evaluated, its would-be decision logged and counted, and the
	// request judged by the next matching rule.
	Shadow bool
	// Headers maps upstream header names to claims, added to the global
	// claim headers on an allow by this rule.
	Headers map[string]string
	// ForwardToken false removes the token from every source it came from
	// before the request reaches the upstream; nil means true.
	ForwardToken *bool
}

// IssuerInfo is what the policy knows of a configured issuer.
type IssuerInfo struct {
	Name string // issuers[].name, as Require.Issuers names it
	Iss  string // the iss claim
	// RolesClaim is a dotted path to the roles ("roles", FusionAuth's
	// default; "realm_access.roles" for Keycloak).
	RolesClaim string
}

// Options are a policy set's configuration.
type Options struct {
	Unmatched Unmatched
	// Policies by name; "default" is used when Envoy names none.
	Policies map[string][]RuleSpec
	Issuers  []IssuerInfo
	// ClaimHeaders are the global claim headers (header → claim), which
	// rules' Headers may not redefine.
	ClaimHeaders map[string]string
}

// ErrPathInvalid is returned for a path that cannot be read safely: an
// encoded slash, backslash or NUL, a backslash, a malformed escape, a path
// not starting with "/", or one climbing above "/".
var ErrPathInvalid = errors.New("path invalid")

// FieldError is a problem of one configured field: Path is its YAML path
// under the policy (policies.default[1].require.when), so that the loader
// can name the file and the line.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Set is a compiled policy set: immutable, safe for concurrent use.
type Set struct {
	// implementation: the engine's helper fills this in
}

// Compile validates and compiles a policy set, reporting every problem at
// once, each a *FieldError (joined with errors.Join).
func Compile(opts Options) (*Set, error) {
	panic("unimplemented")
}

// NeedsHeaders reports whether some rule's When reads request.headers, so
// that a caller builds Request.Headers only then.
func (s *Set) NeedsHeaders() bool { panic("unimplemented") }

// NeedsClaims reports whether some rule reads claims at request time (a
// When, or Headers), so that a Subject must keep them.
func (s *Set) NeedsClaims() bool { panic("unimplemented") }

// HeaderNames are the names of every rule's Headers, sorted: managed
// headers, removed from every request they are not set on.
func (s *Set) HeaderNames() []string { panic("unimplemented") }

// Names are the policy names, sorted.
func (s *Set) Names() []string { panic("unimplemented") }

// Request is what a route is chosen by.
type Request struct {
	Host   string // with or without a port
	Path   string // as sent: with its query, not normalised
	Method string
	// Headers, lower-case names, for CEL's request.headers; read only when
	// NeedsHeaders.
	Headers map[string]string
}

// RouteStatus says whether a route could be chosen.
type RouteStatus uint8

const (
	RouteOK            RouteStatus = iota
	RoutePolicyUnknown             // no policy by that name (403 policy_unknown)
	RoutePathInvalid               // ErrPathInvalid (400 path_invalid)
)

// Route is the rule chosen for a request (none: unmatched). It is a value:
// choosing one allocates nothing for prefix and exact rules.
type Route struct {
	Status RouteStatus
	// implementation fields
}

// Route chooses the rule deciding req under the named policy ("" names
// "default"): the first non-shadow rule that matches, in order.
func (s *Set) Route(policy string, req *Request) Route { panic("unimplemented") }

// Rule is the deciding rule; nil when no rule matched (see Unmatched).
func (rt *Route) Rule() *Rule { panic("unimplemented") }

// Access is what the route asks: the rule's access, or for an unmatched
// request AccessDeny (UnmatchedDeny) or AccessAuthenticated.
func (rt *Route) Access() Access { panic("unimplemented") }

// Policy is the policy's name.
func (rt *Route) Policy() string { panic("unimplemented") }

// Path is the normalised path.
func (rt *Route) Path() string { panic("unimplemented") }

// Rule is a compiled rule.
type Rule struct {
	// implementation fields
}

func (r *Rule) Name() string        { panic("unimplemented") }
func (r *Rule) Access() Access      { panic("unimplemented") }
func (r *Rule) RejectInvalid() bool { panic("unimplemented") }
func (r *Rule) ForwardToken() bool  { panic("unimplemented") }
func (r *Rule) Shadow() bool        { panic("unimplemented") }
func (r *Rule) HasHeaders() bool    { panic("unimplemented") }

// Headers are the rule's upstream headers for these claims, formatted as
// HeaderMap formats claim headers (absent, null or empty claims give none).
func (r *Rule) Headers(claims map[string]any) []Header { panic("unimplemented") }

// Subject is what the requirements read of a verified token, made once per
// token (Subjects.Make) and kept with it.
type Subject struct {
	IssuerName string
	Audiences  []string
	Scopes     []string
	Roles      []string
	// Claims are kept only when asked (the policy reads claims at request
	// time); nil otherwise.
	Claims map[string]any
}

// Subjects makes Subjects: the roles come from each issuer's RolesClaim.
type Subjects struct {
	// implementation fields
}

// NewSubjects returns a Subjects for the issuers; keepClaims keeps every
// Subject's claims.
func NewSubjects(issuers []IssuerInfo, keepClaims bool) *Subjects { panic("unimplemented") }

// Make reads a verified token's subject from its claims.
func (s *Subjects) Make(issuerName string, audiences []string, claims map[string]any) *Subject {
	panic("unimplemented")
}

// Outcome is what the route makes of a request.
type Outcome uint8

const (
	OutcomeAllow Outcome = iota
	// OutcomeUnauthenticated: the route needs a token and there is none (the
	// caller answers 401 with its own reason).
	OutcomeUnauthenticated
	OutcomeForbidden         // a deny rule, or a requirement not met: 403 forbidden
	OutcomeInsufficientScope // the scopes requirement not met: 403 insufficient_scope
	OutcomeUnmatched         // no rule matched and Unmatched is deny: 403 route_unmatched
)

// Decision is a route's outcome for one subject.
type Decision struct {
	Outcome Outcome
	// Failed names the requirement not met: "issuers", "audiences",
	// "scopes", "roles" or "when"; empty otherwise.
	Failed string
	// Scope lists the required scopes, space-separated, for an
	// insufficient_scope challenge.
	Scope string
	// Err is a When evaluation error (a missing claim, the cost limit),
	// which fails the requirement.
	Err error
}

// Decide judges sub (nil: no valid token) by the route's rule.
func (rt *Route) Decide(sub *Subject, req *Request) Decision { panic("unimplemented") }

// HasShadows reports whether shadow rules matched before the deciding
// rule.
func (rt *Route) HasShadows() bool { panic("unimplemented") }

// Shadows calls yield with each shadow rule that matched before the
// deciding rule, in order, and its would-be decision for sub.
func (rt *Route) Shadows(sub *Subject, req *Request, yield func(*Rule, Decision)) {
	panic("unimplemented")
}

// TraceStep is one rule tried by Trace.
type TraceStep struct {
	Rule    string
	Shadow  bool
	Matched bool
	// Mismatch says what did not match: "host", "method" or "path".
	Mismatch string
	Decision Decision // set when Matched
}

// Trace is Route and Decide explained, rule by rule, for tokengate check:
// a linear scan, not for the request path. It tries every rule up to and
// including the deciding one.
func (s *Set) Trace(policy string, req *Request, sub *Subject) (steps []TraceStep, rt Route, d Decision) {
	panic("unimplemented")
}

// NormalizePath returns the path as the rules see it: the query and
// fragment dropped, percent-encoded unreserved characters decoded, "//"
// merged, "." and ".." segments resolved; a trailing slash is kept. It
// returns ErrPathInvalid for an encoded "/", "\" or NUL (%2F, %5C, %00), a
// literal "\", a malformed escape, a path not starting with "/", and a
// path climbing above "/".
func NormalizePath(path string) (string, error) { panic("unimplemented") }
