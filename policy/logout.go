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
// The path must match as written (the literal reading: the query dropped,
// nothing else changed, a ";" parameter of the prefix's last segment
// ignored), as Envoy's route table without normalize_path reads it: a path
// normalising to the route but written otherwise (//oauth2/logout,
// /orders/../oauth2/logout) may be routed elsewhere, with the revoked
// token in a cookie.
//
// It must also match as the upstream resolves it: the query dropped,
// repeated slashes merged, "." and ".." segments resolved (never above
// the root), a trailing slash ignored. Upstreams differ in reading it, and
// a request on a logout route lets a revoked token through, so it matches
// only when every reading agrees: with ";" path parameters dropped from
// each segment before resolving, as Java servers do (Tomcat reads "..;" as
// ".."), and kept; with percent-encoded unreserved characters ("%2e")
// decoded, and not. Parameters are ignored when comparing segments, so
// /oauth2/logout;jsessionid=x matches /oauth2/logout, while
// /oauth2/logout/..;/orders does not. A path with an encoded slash or
// backslash, or a backslash, which some upstreams read as a slash, is no
// logout route; nor is a path not starting with "/".
func (l *LogoutRoutes) Match(host, path, method string) (LogoutRoute, bool) {
	if l == nil || len(l.routes) == 0 {
		return LogoutRoute{}, false
	}
	path, _, _ = strings.Cut(path, "?")
	// Only a host with a colon can carry a port: SplitHostPort's error for
	// one without is an allocation on every request.
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	readings, n, ok := readPath(path)
	if !ok {
		return LogoutRoute{}, false
	}
	for _, r := range l.routes {
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, strings.ToUpper(method)) {
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

// readPath returns the n readings of path an upstream may take (see
// Match), each resolved, without a trailing slash, its segments without
// parameters; false when path is no logout route under any reading. A path
// needing no normalisation (the usual one) is its only reading, with no
// allocation.
func readPath(path string) (readings [4]string, n int, ok bool) {
	if !strings.HasPrefix(path, "/") || strings.Contains(path, `\`) {
		return readings, 0, false
	}
	if !strings.Contains(path, "//") && !strings.Contains(path, "/.") && !strings.ContainsAny(path, ";%") {
		// Nothing to resolve, no parameter, nothing encoded.
		readings[0] = strings.TrimSuffix(path, "/")
		return readings, 1, true
	}
	lower := strings.ToLower(path)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return readings, 0, false
	}
	for _, params := range [2]bool{true, false} {
		for _, decode := range [2]bool{true, false} {
			readings[n] = resolve(path, params, decode)
			n++
		}
	}
	return readings, n, true
}

// resolve is path as one upstream reads it: with ;parameters dropped from
// each segment before resolving (params), with unreserved characters
// percent-decoded (decode); then "", "." and ".." segments resolved, and
// parameters dropped for comparing.
func resolve(path string, params, decode bool) string {
	segs := strings.Split(path, "/")
	out := segs[:0]
	for _, seg := range segs {
		if decode {
			seg = decodeUnreserved(seg)
		}
		if params {
			seg, _, _ = strings.Cut(seg, ";")
		}
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	for i, seg := range out {
		out[i], _, _ = strings.Cut(seg, ";")
	}
	return "/" + strings.Join(out, "/")
}

// decodeUnreserved decodes the percent-encoded unreserved characters of s
// (RFC 3986 2.3: ALPHA, DIGIT, "-", ".", "_", "~"), as RFC 3986
// normalisation does; every other escape is kept.
func decodeUnreserved(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if c, ok := unhex(s[i+1], s[i+2]); ok && unreserved(c) {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
