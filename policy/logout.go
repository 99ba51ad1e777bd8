package policy

import (
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
	// /logout/ and /logout?x=1, not /logouts.
	PathPrefix string
	// Methods; empty means any.
	Methods []string
	// RevokeSession and RevokeSubject widen the logout from the token to
	// its session (sid) or to every token of its subject.
	RevokeSession, RevokeSubject bool
}

// LogoutRoutes matches requests against the configured logout routes.
type LogoutRoutes struct{ routes []LogoutRoute }

// NewLogoutRoutes validates the routes.
func NewLogoutRoutes(routes []LogoutRoute) (*LogoutRoutes, error) {
	out := make([]LogoutRoute, 0, len(routes))
	for i, r := range routes {
		if !strings.HasPrefix(r.PathPrefix, "/") {
			return nil, fmt.Errorf("logout route %d: path_prefix must start with /", i)
		}
		for j, m := range r.Methods {
			m = strings.ToUpper(m)
			if !slices.Contains([]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}, m) {
				return nil, fmt.Errorf("logout route %d: method %q", i, r.Methods[j])
			}
			r.Methods[j] = m
		}
		r.Host = strings.ToLower(r.Host)
		out = append(out, r)
	}
	return &LogoutRoutes{routes: out}, nil
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
		if path == prefix || strings.HasPrefix(path, prefix+"/") || (prefix == "" && strings.HasPrefix(path, "/")) {
			return r, true
		}
	}
	return LogoutRoute{}, false
}
