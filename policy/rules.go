package policy

// Route policy: which rule decides a request, and whether a verified
// identity meets it. See Compile.

import (
	"errors"
	"regexp"
	"slices"
	"strings"
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
	unmatched    Unmatched
	policies     map[string]*compiledPolicy
	def          *compiledPolicy // policies["default"], without hashing
	names        []string        // sorted
	headerNames  []string        // sorted
	needsHeaders bool
	needsClaims  bool
	rules        int // the rules of every policy (Rule.ID is below it)
}

// Rules is the number of rules of every policy: each Rule's ID is below
// it, so that a caller can keep what it has per rule in a slice.
func (s *Set) Rules() int {
	if s == nil {
		return 0
	}
	return s.rules
}

// NeedsHeaders reports whether some rule's When reads request.headers, so
// that a caller builds Request.Headers only then.
func (s *Set) NeedsHeaders() bool { return s != nil && s.needsHeaders }

// NeedsClaims reports whether some rule reads claims at request time (a
// When, or Headers), so that a Subject must keep them.
func (s *Set) NeedsClaims() bool { return s != nil && s.needsClaims }

// HeaderNames are the names of every rule's Headers, sorted: managed
// headers, removed from every request they are not set on.
func (s *Set) HeaderNames() []string {
	if s == nil {
		return nil
	}
	return s.headerNames
}

// Names are the policy names, sorted.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	return s.names
}

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

	set    *Set
	policy string          // the policy's name
	pol    *compiledPolicy // nil: no such policy (or no default)
	rule   *Rule           // the deciding rule; nil: unmatched
	path   string          // normalised
	// alt is the path's other reading (';' parameters dropped) when it
	// differs: a condition must hold under both.
	alt    string
	host   string // without its port, as sent
	method string
	// shadows: some shadow rule matched before the deciding rule.
	shadows bool
}

// Route chooses the rule deciding req under the named policy ("" names
// "default"): the first non-shadow rule that matches, in order.
//
// A set without a "default" policy leaves a request naming none (or naming
// "default") unmatched, judged by Options.Unmatched; a request naming
// another policy the set lacks is RoutePolicyUnknown, never the default.
// A nil Set has no policy: every request is unmatched and needs a valid
// token, as without a policy, and no path is refused (Path is empty for
// one NormalizePath refuses).
//
// A path with ";" is read twice: as written, and with each segment's ";"
// parameters dropped before resolving, as Java servers read it (Tomcat
// reads "/public/..;/admin" as "/admin"). When the readings choose
// different rules, or one is invalid, the path is RoutePathInvalid: the
// upstream may read it either way. So /orders;jsessionid=x is invalid
// where a rule matches /orders exactly and none matches the written form.
func (s *Set) Route(policy string, req *Request) (rt Route) {
	s.RouteTo(&rt, policy, req)
	return rt
}

// RouteTo is Route writing into *rt, which must be the zero Route: a
// caller keeping the Route in a larger structure saves copying it.
func (s *Set) RouteTo(rt *Route, policy string, req *Request) {
	if policy == "" {
		policy = "default"
	}
	rt.set, rt.policy, rt.host, rt.method = s, policy, hostOnly(req.Host), req.Method
	if s != nil {
		if rt.pol = s.def; policy != "default" {
			rt.pol = s.policies[policy]
		}
		if rt.pol == nil && policy != "default" {
			rt.Status = RoutePolicyUnknown
			return
		}
	}
	path, semicolon, err := normalizePath(req.Path)
	if err != nil {
		if s != nil {
			rt.Status = RoutePathInvalid
		}
		return
	}
	rt.path = path
	if rt.pol == nil {
		return
	}
	rt.rule = rt.pol.route(rt.host, rt.method, path)
	if semicolon {
		alt, err := NormalizePath(dropParams(req.Path))
		if err != nil || rt.pol.route(rt.host, rt.method, alt) != rt.rule {
			rt.Status, rt.rule = RoutePathInvalid, nil
			return
		}
		if alt != path {
			rt.alt = alt
		}
	}
	for _, r := range rt.pol.shadows {
		if rt.rule != nil && r.index > rt.rule.index {
			break
		}
		if r.mismatch(rt.host, rt.method, path) == "" {
			rt.shadows = true
			break
		}
	}
	return
}

// ID numbers the rule in its set, from 0 to Set.Rules()-1.
func (r *Rule) ID() int { return int(r.id) }

// Policy is the name of the rule's policy.
func (r *Rule) Policy() string { return r.policy }

// Rule is the deciding rule; nil when no rule matched (see Unmatched).
func (rt *Route) Rule() *Rule { return rt.rule }

// Access is what the route asks: the rule's access, or for an unmatched
// request AccessDeny (UnmatchedDeny) or AccessAuthenticated. A route whose
// Status is not RouteOK is AccessDeny.
func (rt *Route) Access() Access {
	switch {
	case rt.Status != RouteOK:
		return AccessDeny
	case rt.rule != nil:
		return rt.rule.access
	case rt.unmatched() == UnmatchedDeny:
		return AccessDeny
	}
	return AccessAuthenticated
}

func (rt *Route) unmatched() Unmatched {
	if rt.set == nil {
		return UnmatchedAuthenticated
	}
	return rt.set.unmatched
}

// Policy is the policy's name ("default" when the request names none).
// For RoutePolicyUnknown it is the name the request gave: not a label
// value to count by.
func (rt *Route) Policy() string { return rt.policy }

// Path is the normalised path.
// Empty when the Status is not RouteOK.
func (rt *Route) Path() string { return rt.path }

// Rule is a compiled rule.
type Rule struct {
	name   string
	policy string
	index  int32 // in its policy
	id     int32 // in its set: see Set.Rules
	access Access

	rejectInvalid, forwardToken, shadow bool

	// host: lower case; for a wildcard, its suffix (".example.com").
	host     string
	wildcard bool
	methods  []string // upper case
	kind     pathKind
	// path: exact or prefix, without a trailing slash ("" is "/").
	path string
	re   *regexp.Regexp // anchored
	// reLit is a literal every match of re contains (case-insensitive when
	// reFold): a path without it needs no run of re.
	reLit  string
	reFold bool
	// rePrefix: every path re matches starts with it (the index places
	// the rule by it).
	rePrefix string

	require compiledRequire
	headers []claimHeader // sorted by header
}

type compiledRequire struct {
	issuers, audiences []string
	scopes, roles      AnyAll
	scope              string // every scope named, for a challenge
	when               *when
}

func (r *Rule) Name() string        { return r.name }
func (r *Rule) Access() Access      { return r.access }
func (r *Rule) RejectInvalid() bool { return r.rejectInvalid }
func (r *Rule) ForwardToken() bool  { return r.forwardToken }
func (r *Rule) Shadow() bool        { return r.shadow }
func (r *Rule) HasHeaders() bool    { return len(r.headers) > 0 }

// Headers are the rule's upstream headers for these claims, formatted as
// HeaderMap formats claim headers (absent, null or empty claims give none).
func (r *Rule) Headers(claims map[string]any) []Header {
	if len(r.headers) == 0 {
		return nil
	}
	out := make([]Header, 0, len(r.headers))
	for _, h := range r.headers {
		if v := claimValue(claims[h.claim]); v != "" && safeValue(v) {
			out = append(out, Header{Name: h.header, Value: v})
		}
	}
	return out
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

// Decide judges sub (nil: no valid token) by the route's rule. req is read
// for its headers only (a When reading request.headers); the method, host
// and path are the route's. A route whose Status is not RouteOK is
// OutcomeForbidden: the caller answers it by its Status first.
func (rt *Route) Decide(sub *Subject, req *Request) (d Decision) {
	switch {
	case rt.Status != RouteOK:
		return Decision{Outcome: OutcomeForbidden}
	case rt.rule != nil:
		rt.rule.decideInto(&d, sub, rt, req)
		return d
	case rt.unmatched() == UnmatchedDeny:
		return Decision{Outcome: OutcomeUnmatched}
	case sub == nil:
		return Decision{Outcome: OutcomeUnauthenticated}
	}
	return Decision{Outcome: OutcomeAllow}
}

// decide judges sub by the rule, requirements in order: issuers,
// audiences, scopes, roles, when; the first unmet one decides.
func (r *Rule) decide(sub *Subject, rt *Route, req *Request) (d Decision) {
	r.decideInto(&d, sub, rt, req)
	return d
}

// decideInto is decide writing into d, which is zero: a Decision returned
// from a call is copied through the caller's frame in 16-byte moves that
// read back the bytes just stored one field at a time, and stall.
func (r *Rule) decideInto(d *Decision, sub *Subject, rt *Route, req *Request) {
	switch {
	case r.access == AccessDeny:
		d.Outcome = OutcomeForbidden
		return
	case r.access == AccessPublic:
		d.Outcome = OutcomeAllow
		return
	case sub == nil:
		d.Outcome = OutcomeUnauthenticated
		return
	}
	q := &r.require
	if len(q.issuers) > 0 && !slices.Contains(q.issuers, sub.IssuerName) {
		d.Outcome = OutcomeForbidden
		d.Failed = "issuers"
		return
	}
	if len(q.audiences) > 0 && !anyIn(q.audiences, sub.Audiences) {
		d.Outcome = OutcomeForbidden
		d.Failed = "audiences"
		return
	}
	if !q.scopes.holds(sub.Scopes) {
		d.Outcome = OutcomeInsufficientScope
		d.Failed = "scopes"
		d.Scope = q.scope
		return
	}
	if !q.roles.holds(sub.Roles) {
		d.Outcome = OutcomeForbidden
		d.Failed = "roles"
		return
	}
	if q.when != nil {
		var headers map[string]string
		if req != nil {
			headers = req.Headers
		}
		if headers == nil {
			headers = map[string]string{}
		}
		request := map[string]any{
			"method":  rt.method,
			"host":    strings.ToLower(rt.host),
			"path":    rt.path,
			"headers": headers,
		}
		ok, err := q.when.eval(sub.Claims, request)
		if ok && rt.alt != "" {
			// The path's other reading (Java servers drop ';' parameters
			// before resolving) must meet the condition too.
			request["path"] = rt.alt
			ok, err = q.when.eval(sub.Claims, request)
		}
		if !ok {
			d.Outcome = OutcomeForbidden
			d.Failed = "when"
			d.Err = err
			return
		}
	}
	d.Outcome = OutcomeAllow
}

// holds reports whether have meets the requirement.
func (a AnyAll) holds(have []string) bool {
	for _, s := range a.AllOf {
		if !slices.Contains(have, s) {
			return false
		}
	}
	return len(a.AnyOf) == 0 || anyIn(a.AnyOf, have)
}

func anyIn(want, have []string) bool {
	for _, s := range want {
		if slices.Contains(have, s) {
			return true
		}
	}
	return false
}

// HasShadows reports whether shadow rules matched before the deciding
// rule.
func (rt *Route) HasShadows() bool { return rt.shadows }

// Shadows calls yield with each shadow rule that matched before the
// deciding rule, in order, and its would-be decision for sub.
func (rt *Route) Shadows(sub *Subject, req *Request, yield func(*Rule, Decision)) {
	if !rt.shadows || rt.pol == nil {
		return
	}
	for _, r := range rt.pol.shadows {
		if rt.rule != nil && r.index > rt.rule.index {
			return
		}
		if r.mismatch(rt.host, rt.method, rt.path) == "" {
			yield(r, r.decide(sub, rt, req))
		}
	}
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
//
// The steps are found without the index, so that a test can hold one to
// the other. A route whose Status is not RouteOK has no steps.
func (s *Set) Trace(policy string, req *Request, sub *Subject) (steps []TraceStep, rt Route, d Decision) {
	rt = s.Route(policy, req)
	d = rt.Decide(sub, req)
	if rt.Status != RouteOK || rt.pol == nil {
		return nil, rt, d
	}
	for _, r := range rt.pol.rules {
		step := TraceStep{Rule: r.name, Shadow: r.shadow, Mismatch: r.mismatch(rt.host, rt.method, rt.path)}
		if step.Mismatch == "" {
			step.Matched = true
			step.Decision = r.decide(sub, &rt, req)
		}
		steps = append(steps, step)
		if step.Matched && !r.shadow {
			break
		}
	}
	return steps, rt, d
}
