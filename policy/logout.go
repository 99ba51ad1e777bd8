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
	// /logout/ and /logout?x=1, not /logouts. It is matched literally, as
	// Envoy sends the path: Envoy must normalise it first (normalize_path,
	// merge_slashes). A prefix matching every path ("/") is refused.
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
func (l *LogoutRoutes) Match(host, path, method string) (LogoutRoute, bool) {
	if l == nil || len(l.routes) == 0 {
		return LogoutRoute{}, false
	}
	path, _, _ = strings.Cut(path, "?")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, r := range l.routes {
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, strings.ToUpper(method)) {
			continue
		}
		prefix := strings.TrimSuffix(r.PathPrefix, "/")
		if path == prefix || strings.HasPrefix(path, prefix+"/") {
			return r, true
		}
	}
	return LogoutRoute{}, false
}
