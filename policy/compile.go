package policy

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
)

// compiler gathers every problem of a policy set while compiling it, so
// that the operator sees them all at once.
type compiler struct {
	errs       []error
	issuers    map[string]bool
	reserved   map[string]string // header → why a rule may not set it
	cel        *celEnv           // built on the first When
	celErr     error
	headerSeen map[string]bool
}

func (c *compiler) fail(path string, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// Compile validates and compiles a policy set, reporting every problem at
// once, each a *FieldError (joined with errors.Join).
//
// Policies are compiled in name order, so that the problems come in a
// stable order.
func Compile(opts Options) (*Set, error) {
	c := &compiler{
		issuers:    map[string]bool{},
		reserved:   map[string]string{},
		headerSeen: map[string]bool{},
	}
	for _, is := range opts.Issuers {
		c.issuers[is.Name] = true
	}
	for _, h := range []string{HeaderSubject, HeaderIssuer, HeaderTokenID} {
		c.reserved[h] = "an identity header"
	}
	for h := range opts.ClaimHeaders {
		c.reserved[strings.ToLower(h)] = "a global claim header (claim_headers)"
	}
	s := &Set{unmatched: opts.Unmatched, policies: map[string]*compiledPolicy{}}
	if opts.Unmatched > UnmatchedAuthenticated {
		c.fail("unmatched", "unknown value %d", opts.Unmatched)
	}
	for name := range opts.Policies {
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	for _, name := range s.names {
		p := c.policy(name, opts.Policies[name])
		s.policies[name] = p
		for _, r := range p.rules {
			r.id = int32(s.rules)
			s.rules++
			s.needsHeaders = s.needsHeaders || r.require.when != nil && r.require.when.headers
			s.needsClaims = s.needsClaims || r.require.when != nil || len(r.headers) > 0
		}
	}
	s.def = s.policies["default"]
	for h := range c.headerSeen {
		s.headerNames = append(s.headerNames, h)
	}
	sort.Strings(s.headerNames)
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// validPolicyName: policy names are metric label values and
// context_extensions values; keep them plain.
func validPolicyName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func (c *compiler) policy(name string, specs []RuleSpec) *compiledPolicy {
	base := "policies." + name
	if name == "" {
		base = `policies.""`
	}
	if !validPolicyName(name) {
		c.fail(base, "policy name %q: use lower-case letters, digits, '_', '.' and '-'", name)
	}
	p := &compiledPolicy{name: name}
	names := map[string]int{}
	for i, spec := range specs {
		at := fmt.Sprintf("%s[%d]", base, i)
		switch j, dup := names[spec.Name]; {
		case spec.Name == "":
			c.fail(at+".name", "required: every rule is named (the name appears in logs and metrics)")
		case dup:
			c.fail(at+".name", "%q is already the name of rule %d", spec.Name, j)
		default:
			names[spec.Name] = i
		}
		p.rules = append(p.rules, c.rule(at, name, int32(i), spec))
	}
	p.index()
	return p
}

func (c *compiler) rule(at, policy string, index int32, spec RuleSpec) *Rule {
	r := &Rule{name: spec.Name, policy: policy, index: index, shadow: spec.Shadow,
		rejectInvalid: spec.RejectInvalid, forwardToken: spec.ForwardToken == nil || *spec.ForwardToken}
	m := spec.Match
	switch spec.Access {
	case "", "authenticated":
		r.access = AccessAuthenticated
	case "public":
		r.access = AccessPublic
	case "deny":
		r.access = AccessDeny
	default:
		c.fail(at+".access", "%q is not public, authenticated or deny", spec.Access)
	}
	emptyMatch := m.Host == "" && m.Path == "" && m.PathPrefix == "" && m.PathRegex == "" && len(m.Methods) == 0
	if emptyMatch && spec.Access == "" && requireEmpty(spec.Require) {
		c.fail(at+".match", "empty rule: set match (or, for a rule matching every request, access)")
	}
	c.host(at+".match.host", m.Host, r)
	c.path(at+".match", m, r)
	for j, meth := range m.Methods {
		if !validToken(meth) {
			c.fail(fmt.Sprintf("%s.match.methods[%d]", at, j), "%q is not a method name (RFC 9110 token)", meth)
			continue
		}
		r.methods = append(r.methods, strings.ToUpper(meth))
	}
	if spec.RejectInvalid && r.access != AccessPublic {
		c.fail(at+".reject_invalid", "only a public rule may set it (a token is always required on %s rules)", r.access)
	}
	if !requireEmpty(spec.Require) && r.access != AccessAuthenticated {
		c.fail(at+".require", "only an authenticated rule has requirements, not a %s one", r.access)
	}
	c.require(at+".require", spec, r)
	c.headers(at+".headers", spec.Headers, r)
	return r
}

func requireEmpty(q Require) bool {
	return len(q.Issuers) == 0 && len(q.Audiences) == 0 && len(q.Scopes.AllOf) == 0 &&
		len(q.Scopes.AnyOf) == 0 && len(q.Roles.AllOf) == 0 && len(q.Roles.AnyOf) == 0 && q.When == ""
}

// host validates a rule's host: an exact name or "*." and a name of at
// least two labels, without a port; it is kept lower case.
func (c *compiler) host(at, host string, r *Rule) {
	if host == "" {
		return
	}
	h := strings.ToLower(host)
	if strings.Contains(h, ":") {
		c.fail(at, "%q: a host takes no port (the request's port is ignored)", host)
		return
	}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		if !validHostName(rest) || !strings.Contains(rest, ".") {
			c.fail(at, "%q: a wildcard is \"*.\" and a domain of at least two labels, such as *.example.com", host)
			return
		}
		r.host, r.wildcard = "."+rest, true
		return
	}
	if !validHostName(h) {
		c.fail(at, "%q is not a host name", host)
		return
	}
	r.host = h
}

// validHostName: dot-separated labels of letters, digits, '-' and '_' (a
// lower-case name, as the host is lowered first).
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (c *compiler) path(at string, m MatchSpec, r *Rule) {
	n := 0
	for _, s := range []string{m.Path, m.PathPrefix, m.PathRegex} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		c.fail(at, "set one of path, path_prefix and path_regex, not %d", n)
		return
	}
	checkPath := func(field, p string) bool {
		switch norm, err := NormalizePath(p); {
		case !strings.HasPrefix(p, "/"):
			c.fail(at+"."+field, "%q: must start with /", p)
		case strings.ContainsAny(p, "?#"):
			c.fail(at+"."+field, "%q: a path has no query or fragment", p)
		case err != nil:
			c.fail(at+"."+field, "%q: %v (an encoded /, \\ or NUL, a \\, a malformed escape, or a climb above /)", p, err)
		case norm != p:
			c.fail(at+"."+field, "%q is not normalised: write %q (requests are matched after normalisation, so it would never match as written)", p, norm)
		default:
			return true
		}
		return false
	}
	switch {
	case m.Path != "":
		if checkPath("path", m.Path) {
			r.kind, r.path = pathExact, strings.TrimSuffix(m.Path, "/")
		}
	case m.PathPrefix != "":
		if checkPath("path_prefix", m.PathPrefix) {
			r.kind, r.path = pathPrefix, strings.TrimSuffix(m.PathPrefix, "/")
		}
	case m.PathRegex != "":
		// A leading ^ is the anchor added anyway; dropping it keeps the
		// regexp's literal prefix for the index.
		expr := strings.TrimPrefix(m.PathRegex, "^")
		re, err := regexp.Compile(`^(?:` + expr + `)$`)
		if err != nil {
			c.fail(at+".path_regex", "%q: %v", m.PathRegex, err)
			return
		}
		r.kind, r.re = pathRegex, re
		r.reLit, r.reFold = requiredLiteral(re.String())
		// Every match of re starts with the literal prefix of the
		// expression unanchored. The anchored regexp reports one only when
		// it runs one-pass: /a/.*z has none, /a/[0-9]+ has "/a/".
		if u, err := regexp.Compile(expr); err == nil {
			r.rePrefix, _ = u.LiteralPrefix()
		}
	}
}

// requiredLiteral returns the longest literal every match of the regexp
// contains (a literal of its top-level concatenation), and whether it is
// case-insensitive; "" when there is none or it is not ASCII. Looking for
// it first spares a regexp without a literal prefix, which the index
// cannot place, most of its runs: Go's regexps cost hundreds of
// nanoseconds, a substring search tens.
func requiredLiteral(expr string) (lit string, fold bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return "", false
	}
	var walk func(re *syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		switch re.Op {
		case syntax.OpConcat:
			for _, sub := range re.Sub {
				walk(sub)
			}
		case syntax.OpCapture:
			walk(re.Sub[0])
		case syntax.OpLiteral:
			s := string(re.Rune)
			f := re.Flags&syntax.FoldCase != 0
			// Under (?i), k and s also match the Kelvin sign and the
			// long s, which an ASCII search would miss.
			if len(s) > len(lit) && isASCII(s) && !(f && strings.ContainsAny(s, "kKsS")) {
				lit, fold = s, f
			}
		}
	}
	walk(re)
	return lit, fold
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validToken: an RFC 9110 token (a method name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validScope: an RFC 6749 3.3 scope token (no space, '"' or '\'), as it is
// sent back space-separated in a WWW-Authenticate challenge.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == '"' || c == '\\' || c > 0x7e {
			return false
		}
	}
	return true
}

func (c *compiler) list(at string, items []string, valid func(string) bool, what string) []string {
	for j, s := range items {
		switch {
		case s == "":
			c.fail(fmt.Sprintf("%s[%d]", at, j), "empty")
		case valid != nil && !valid(s):
			c.fail(fmt.Sprintf("%s[%d]", at, j), "%q is not %s", s, what)
		}
	}
	return slices.Clone(items)
}

func (c *compiler) require(at string, spec RuleSpec, r *Rule) {
	q := spec.Require
	req := &r.require
	req.issuers = c.list(at+".issuers", q.Issuers, nil, "")
	for j, name := range q.Issuers {
		if name != "" && !c.issuers[name] {
			c.fail(fmt.Sprintf("%s.issuers[%d]", at, j), "%q is no configured issuer's name (issuers[].name)", name)
		}
	}
	req.audiences = c.list(at+".audiences", q.Audiences, nil, "")
	scopeToken := "a scope token (no space, '\"' or '\\')"
	req.scopes.AllOf = c.list(at+".scopes.all_of", q.Scopes.AllOf, validScope, scopeToken)
	req.scopes.AnyOf = c.list(at+".scopes.any_of", q.Scopes.AnyOf, validScope, scopeToken)
	req.scope = strings.Join(append(slices.Clone(q.Scopes.AllOf), q.Scopes.AnyOf...), " ")
	req.roles.AllOf = c.list(at+".roles.all_of", q.Roles.AllOf, nil, "")
	req.roles.AnyOf = c.list(at+".roles.any_of", q.Roles.AnyOf, nil, "")
	if q.When == "" {
		return
	}
	if c.cel == nil && c.celErr == nil {
		c.cel, c.celErr = newCELEnv()
	}
	if c.celErr != nil {
		c.fail(at+".when", "%v", c.celErr)
		return
	}
	w, err := c.cel.compile(q.When)
	if err != nil {
		c.fail(at+".when", "rule %q: %v", spec.Name, err)
		return
	}
	req.when = w
}

func (c *compiler) headers(at string, headers map[string]string, r *Rule) {
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for _, name := range names {
		claim := headers[name]
		h := strings.ToLower(name)
		where := at + "." + name
		switch {
		case !validHeaderName(h):
			c.fail(where, "%q is not a valid header name", name)
		case reserved(h) || ruleReserved(h):
			c.fail(where, "%q is reserved: the proxy or the upstream reads it as something else", name)
		case strings.IndexByte(h, '_') >= 0:
			c.fail(where, "%q has '_': CGI-style upstreams read it as the name with '-', a header a client could then send under the other spelling; use '-'", name)
		case c.reserved[h] != "":
			c.fail(where, "%q is %s; a rule may not redefine it", name, c.reserved[h])
		case seen[h]:
			c.fail(where, "%q is set twice (header names are case-insensitive)", name)
		case claim == "":
			c.fail(where, "empty claim name")
		default:
			seen[h] = true
			c.headerSeen[h] = true
			r.headers = append(r.headers, claimHeader{header: h, claim: claim})
		}
	}
	sort.Slice(r.headers, func(i, j int) bool { return r.headers[i].header < r.headers[j].header })
}

// ruleReserved: headers a rule may not manage (set on its allows, remove
// from every request), besides reserved's: the proxy and upstreams give
// them meanings of their own.
func ruleReserved(h string) bool {
	switch h {
	case "content-type", "keep-alive", "trailer", "proxy-authorization", "forwarded", "x-request-id",
		"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "x-b3-traceid", "traceparent", "tracestate":
		return true
	}
	return strings.HasPrefix(h, "x-envoy-") || strings.HasPrefix(h, ":")
}
