package policy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
)

// LogoutRoute is a route whose requests log the caller out: the presented
// token is revoked before the request goes on (for example to the IdP's
// /oauth2/logout, which by itself revokes nothing).
type LogoutRoute struct {
	// Host matches the request's host exactly (case-insensitive, port
	// ignored); empty matches any host.
	Host string
	// PathPrefix matches whole path segments: /logout matches /logout,
	// /logout/ and /logout?x=1, not /logouts. The request path must match
	// both as written and normalised (see Match); the prefix is matched as
	// written. A prefix matching every path ("/") is refused.
	PathPrefix string
	// Methods; empty means any.
	Methods []string
	// RevokeSession and RevokeSubject widen the logout from the token to
	// its session (sid) or to every token of its subject.
	RevokeSession, RevokeSubject bool
}

// LogoutRoutes matches requests against the configured logout routes.
type LogoutRoutes struct{ routes []LogoutRoute }

// NewLogoutRoutes validates the routes (Validate).
func NewLogoutRoutes(routes []LogoutRoute) (*LogoutRoutes, error) {
	out := make([]LogoutRoute, 0, len(routes))
	var errs []error
	for i, r := range routes {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("logout route %d: %w", i, err))
			continue
		}
		r.Methods = slices.Clone(r.Methods)
		for j, m := range r.Methods {
			r.Methods[j] = strings.ToUpper(m)
		}
		r.Host = strings.ToLower(r.Host)
		out = append(out, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &LogoutRoutes{routes: out}, nil
}

// Validate reports every problem of the route, each error naming its field
// ("path_prefix: …", "methods: …").
//
// The path prefix must name a path: "/" (or "//", or none) would match
// every path, and a revoked token goes on (without identity) on a logout
// route, so every path would let revoked tokens through to its upstream.
func (r LogoutRoute) Validate() error {
	var errs []error
	switch {
	case r.PathPrefix == "":
		errs = append(errs, errors.New("path_prefix: required: the logout path, such as /oauth2/logout"))
	case !strings.HasPrefix(r.PathPrefix, "/"):
		errs = append(errs, fmt.Errorf("path_prefix: must start with /, got %q", r.PathPrefix))
	case strings.Trim(r.PathPrefix, "/") == "":
		errs = append(errs, fmt.Errorf("path_prefix: %q matches every path, which would let revoked tokens through on every path; name the logout path, such as /oauth2/logout", r.PathPrefix))
	}
	for _, m := range r.Methods {
		if !slices.Contains([]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}, strings.ToUpper(m)) {
			errs = append(errs, fmt.Errorf("methods: %q is not GET, POST, PUT, DELETE or PATCH", m))
		}
	}
	return errors.Join(errs...)
}

// Match returns the first route matching the request. path may carry a
// query string, as Envoy sends it.
//
// The host is read as the route policy reads it (hostOnly: without its
// port or a trailing dot; ASCII case ignored).
//
// The path must match as written (the literal reading: the query dropped,
// nothing else changed, a ";" parameter of the prefix's last segment
// ignored), as Envoy's route table without normalize_path reads it: a path
// normalising to the route but written otherwise (//oauth2/logout,
// /orders/../oauth2/logout) may be routed elsewhere, with the revoked
// token in a cookie.
//
// It must also match as the route policy reads it (NormalizePath: escapes
// of unreserved characters decoded, repeated slashes merged, "." and ".."
// resolved, never above the root; an encoded or doubly encoded slash,
// backslash or dot, a backslash or a control character is no logout
// route), with ";" parameters ignored when comparing segments, so that
// /oauth2/logout;jsessionid=x matches /oauth2/logout; and, for a path with
// ";", as Java servers read it too, parameters dropped before resolving
// (Tomcat reads "..;" as ".."): /oauth2/logout/..;/orders does not match.
// A request on a logout route lets a revoked token through, so it matches
// only when every reading agrees.
func (l *LogoutRoutes) Match(host, path, method string) (LogoutRoute, bool) {
	if l == nil || len(l.routes) == 0 {
		return LogoutRoute{}, false
	}
	path, _, _ = strings.Cut(path, "?")
	// The host as Envoy's virtual hosts read it by default: a port may be
	// dropped, a trailing dot or brackets may not (a route's host is a name).
	// Only a host with a colon can carry a port: SplitHostPort's error for
	// one without is an allocation on every request.
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil && !strings.ContainsAny(h, ":") {
			host = h
		}
	}
	readings, n, ok := readPath(path)
	if !ok {
		return LogoutRoute{}, false
	}
	for _, r := range l.routes {
		if r.Host != "" && !asciiEqualFold(r.Host, host) {
			continue
		}
		if len(r.Methods) > 0 && !slices.ContainsFunc(r.Methods, func(m string) bool { return asciiEqualFold(m, method) }) {
			continue
		}
		prefix := strings.TrimSuffix(r.PathPrefix, "/")
		if !literalMatch(path, prefix) {
			continue
		}
		all := true
		for _, p := range readings[:n] {
			all = all && (p == prefix || strings.HasPrefix(p, prefix+"/"))
		}
		if all {
			return r, true
		}
	}
	return LogoutRoute{}, false
}

// literalMatch reports whether path, read as written (no slash merging, no
// dot resolution, no decoding), starts with prefix segment by segment: the
// prefix is followed by the end of the path, a "/", or a ";" parameter of
// its last segment. Envoy's route table without normalize_path, and an
// upstream that does not normalise, read the path this way.
func literalMatch(path, prefix string) bool {
	rest, ok := strings.CutPrefix(path, prefix)
	return ok && (rest == "" || rest[0] == '/' || rest[0] == ';')
}

// readPath returns the n readings of path a logout route must hold under
// (see Match), each normalised as the route policy normalises paths,
// without a trailing slash, its segments without ";" parameters; false
// when the policy's normaliser refuses it. A path needing no
// normalisation (the usual one) is its only reading, with no allocation.
//
// With an escape in the path, it is also read without decoding (dots
// resolved, escapes left as names), as an upstream that does not decode
// reads it: /oauth2/logout/../%6cogout climbs out of the route, then back
// in only for upstreams that decode. A fragment ('#'), which Envoy refuses
// by default and some upstreams keep as part of the path, is no logout
// route.
func readPath(path string) (readings [4]string, n int, ok bool) {
	if strings.IndexByte(path, '#') >= 0 {
		return readings, 0, false
	}
	p, semicolon, err := normalizePath(path)
	if err != nil {
		return readings, 0, false
	}
	if !semicolon && strings.IndexByte(path, '%') < 0 {
		readings[0] = strings.TrimSuffix(p, "/")
		return readings, 1, true
	}
	// Parameters kept while resolving ("..;" is a name), ignored when
	// comparing; and dropped before resolving, as Java servers do. Each
	// decoded, and not.
	for _, params := range [2]bool{true, false} {
		raw := path
		if !params {
			raw = dropParams(path)
		}
		decoded, err := NormalizePath(raw)
		if err != nil {
			return readings, 0, false
		}
		asis, err := resolveDots(raw)
		if err != nil {
			return readings, 0, false
		}
		readings[n], readings[n+1] = trimForCompare(decoded), trimForCompare(asis)
		n += 2
	}
	return readings, n, true
}

// trimForCompare is a resolved reading as Match compares it: ";"
// parameters dropped from its segments, no trailing slash.
func trimForCompare(p string) string {
	if strings.IndexByte(p, ';') >= 0 {
		p = dropParams(p)
	}
	return strings.TrimSuffix(p, "/")
}

func unhex(hi, lo byte) (byte, bool) {
	h, ok1 := hexVal(hi)
	l, ok2 := hexVal(lo)
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
