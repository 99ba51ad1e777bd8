package policy

import "strings"

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
	roles      map[string][]string // issuer name → roles claim path
	keepClaims bool
}

// defaultRolesClaim is FusionAuth's: a top-level "roles" array.
var defaultRolesClaim = []string{"roles"}

// NewSubjects returns a Subjects for the issuers; keepClaims keeps every
// Subject's claims.
//
// A RolesClaim is a dotted path ("realm_access.roles",
// "resource_access.my-client.roles"): each dot descends into an object, so
// a claim whose own name has a dot cannot be named.
func NewSubjects(issuers []IssuerInfo, keepClaims bool) *Subjects {
	s := &Subjects{roles: map[string][]string{}, keepClaims: keepClaims}
	for _, is := range issuers {
		if is.RolesClaim != "" {
			s.roles[is.Name] = strings.Split(is.RolesClaim, ".")
		}
	}
	return s
}

// Make reads a verified token's subject from its claims.
//
// Scopes come from "scope" (space-separated) and "scp" (an array of
// strings, or space-separated); both are read when both are present. Roles
// come from the issuer's RolesClaim ("roles" for an issuer without one, or
// one Subjects does not know): an array of strings (other elements
// ignored) or a single string, one role.
func (s *Subjects) Make(issuerName string, audiences []string, claims map[string]any) *Subject {
	sub := &Subject{IssuerName: issuerName, Audiences: audiences}
	if v, ok := claims["scope"].(string); ok {
		sub.Scopes = strings.Fields(v)
	}
	sub.Scopes = appendStrings(sub.Scopes, claims["scp"], true)
	path := defaultRolesClaim
	if s != nil && s.roles[issuerName] != nil {
		path = s.roles[issuerName]
	}
	sub.Roles = appendStrings(nil, lookup(claims, path), false)
	if s != nil && s.keepClaims {
		sub.Claims = claims
	}
	return sub
}

// lookup follows a dotted claim path through nested objects.
func lookup(claims map[string]any, path []string) any {
	var v any = claims
	for _, key := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

// appendStrings appends the strings of v: an array's string elements, or
// a string (split on spaces when fields).
func appendStrings(out []string, v any, fields bool) []string {
	switch v := v.(type) {
	case string:
		if fields {
			return append(out, strings.Fields(v)...)
		}
		if v != "" {
			return append(out, v)
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	case []string:
		for _, s := range v {
			if s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
