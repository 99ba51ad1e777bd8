// Package policy holds the rules applied to a verified identity: the route
// policy, which says what each route demands and whether an identity meets
// it (Compile, Set.Route, Route.Decide), the upstream headers that carry it
// on an allowed request (HeaderMap: subject, issuer and token id, plus
// configured claims), and the logout routes whose requests revoke the token
// they present (LogoutRoutes). It is pure: no I/O, no Envoy types, no token
// parsing.
package policy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Identity headers every allowed request carries (when the claim exists).
const (
	HeaderSubject = "x-auth-subject"
	HeaderIssuer  = "x-auth-issuer"
	HeaderTokenID = "x-auth-token-id"
)

// Header is one upstream header and its value.
type Header struct {
	Name, Value string
}

// HeaderMap turns claims into upstream headers: the three identity headers
// plus any configured claim headers. Names are lower case, as Envoy uses them.
type HeaderMap struct {
	claims []claimHeader // sorted by header name
	names  []string      // every identity header name, sorted
}

type claimHeader struct {
	header, claim string
}

// NewHeaderMap validates the configured claim headers (header name → claim).
func NewHeaderMap(claimHeaders map[string]string) (*HeaderMap, error) {
	m := &HeaderMap{}
	seen := map[string]bool{HeaderSubject: true, HeaderIssuer: true, HeaderTokenID: true}
	for name, claim := range claimHeaders {
		h := strings.ToLower(name)
		if !validHeaderName(h) {
			return nil, fmt.Errorf("claim header %q: not a valid header name", name)
		}
		if seen[h] {
			return nil, fmt.Errorf("claim header %q: set twice or reserved", name)
		}
		if reserved(h) {
			return nil, fmt.Errorf("claim header %q: reserved header", name)
		}
		if claim == "" {
			return nil, fmt.Errorf("claim header %q: empty claim name", name)
		}
		seen[h] = true
		m.claims = append(m.claims, claimHeader{header: h, claim: claim})
	}
	sort.Slice(m.claims, func(i, j int) bool { return m.claims[i].header < m.claims[j].header })
	for h := range seen {
		m.names = append(m.names, h)
	}
	sort.Strings(m.names)
	return m, nil
}

// Names returns every header name the map may set, sorted. A name that an
// answer does not set must be removed from the request, so that a client
// cannot supply it.
func (m *HeaderMap) Names() []string { return m.names }

// Headers returns the headers for one identity, sorted by name. Claims that
// are absent, null or empty produce no header.
func (m *HeaderMap) Headers(iss, sub, jti string, claims map[string]any) []Header {
	out := make([]Header, 0, 3+len(m.claims))
	add := func(name, value string) {
		if value != "" && safeValue(value) {
			out = append(out, Header{Name: name, Value: value})
		}
	}
	for _, c := range m.claims {
		add(c.header, claimValue(claims[c.claim]))
	}
	add(HeaderIssuer, iss)
	add(HeaderSubject, sub)
	add(HeaderTokenID, jti)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// claimValue renders a claim as a header value: strings as they are, arrays
// joined with commas, numbers and booleans in JSON form, objects as JSON.
func claimValue(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			if s := claimValue(e); s != "" {
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, ",")
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
}

// safeValue refuses values Envoy would reject or that could split a header:
// control characters other than tab. Such a claim is dropped, not mangled.
func safeValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func validHeaderName(h string) bool {
	if h == "" || strings.HasPrefix(h, ":") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// reserved headers are never set from claims.
func reserved(h string) bool {
	switch http.CanonicalHeaderKey(h) {
	case "Authorization", "Host", "Cookie", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Upgrade":
		return true
	}
	return false
}
