package policy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// IntrospectionRoute is a route to an OAuth 2.0 token introspection
// endpoint (RFC 7662), such as FusionAuth's /oauth2/introspect. Its
// requests carry the token in a form body, not in a token source, and need
// none of their own: the caller's client authentication is the IdP's
// business.
type IntrospectionRoute struct {
	// Host, PathPrefix: as LogoutRoute's, matched the same way.
	Host       string
	PathPrefix string
	// Methods; empty means POST, the only method RFC 7662 §2.1 names.
	Methods []string
}

// IntrospectionRoutes matches requests against the introspection routes.
type IntrospectionRoutes struct{ m *LogoutRoutes }

// NewIntrospectionRoutes validates the routes (Validate).
func NewIntrospectionRoutes(routes []IntrospectionRoute) (*IntrospectionRoutes, error) {
	out := make([]LogoutRoute, 0, len(routes))
	var errs []error
	for i, r := range routes {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("introspection route %d: %w", i, err))
			continue
		}
		methods := []string{http.MethodPost}
		if len(r.Methods) > 0 {
			methods = make([]string, len(r.Methods))
			for j, m := range r.Methods {
				methods[j] = strings.ToUpper(m)
			}
		}
		out = append(out, LogoutRoute{Host: strings.ToLower(r.Host), PathPrefix: r.PathPrefix, Methods: methods})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &IntrospectionRoutes{m: &LogoutRoutes{routes: out}}, nil
}

// Validate reports every problem of the route, each error naming its field.
//
// A request on an introspection route needs no token, so the path prefix
// must name the endpoint: "/" would let every request through unchecked.
// Introspection is POST (RFC 7662 §2.1); no other method is accepted.
func (r IntrospectionRoute) Validate() error {
	var errs []error
	switch {
	case r.PathPrefix == "":
		errs = append(errs, errors.New("path_prefix: required: the introspection path, such as /oauth2/introspect"))
	case !strings.HasPrefix(r.PathPrefix, "/"):
		errs = append(errs, fmt.Errorf("path_prefix: must start with /, got %q", r.PathPrefix))
	case strings.Trim(r.PathPrefix, "/") == "":
		errs = append(errs, fmt.Errorf("path_prefix: %q matches every path, which would let every request through without a token; name the introspection path, such as /oauth2/introspect", r.PathPrefix))
	}
	for _, m := range r.Methods {
		if !strings.EqualFold(m, http.MethodPost) {
			errs = append(errs, fmt.Errorf("methods: %q is not POST (RFC 7662 §2.1: introspection is a POST)", m))
		}
	}
	return errors.Join(errs...)
}

// Match reports whether the request is on an introspection route, with the
// path read as LogoutRoutes.Match reads it: only when every reading an
// upstream may take agrees.
func (l *IntrospectionRoutes) Match(host, path, method string) bool {
	if l == nil {
		return false
	}
	_, ok := l.m.Match(host, path, method)
	return ok
}

// Len is the number of routes.
func (l *IntrospectionRoutes) Len() int {
	if l == nil {
		return 0
	}
	return len(l.m.routes)
}
