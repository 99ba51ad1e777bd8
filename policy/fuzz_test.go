package policy

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzLogoutRouteMatch: for any path, Match never panics, and a path it
// calls a logout route is one under every reading an upstream may take: the
// literal one, each of its own normalised readings, and the most aggressive
// single-pass normaliser (every escape decoded, ";" parameters dropped,
// path.Clean). Resolving a reading again changes nothing.
//
//	go test -run '^$' -fuzz FuzzLogoutRouteMatch -fuzztime 60s ./policy
func FuzzLogoutRouteMatch(f *testing.F) {
	routes, err := NewLogoutRoutes([]LogoutRoute{{PathPrefix: "/oauth2/logout"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"/oauth2/logout", "/oauth2/logout?x=1", "/oauth2/logout/", "/oauth2/logout;jsessionid=x",
		"//oauth2/logout", "/orders/../oauth2/logout", "/oauth2/logout/../orders", "/oauth2/logout/..;/orders",
		"/oauth2/logout/%2e%2e/orders", "/oauth2/logout/%252e%252e/orders", "/oauth2%2flogout", `/oauth2\logout`,
		"/oauth2/logout/%u002e", "/oauth2/./logout", "/oauth2/logouts",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		_, ok := routes.Match("", p, "GET")
		noQuery, _, _ := strings.Cut(p, "?")
		// The reading that drops parameters before resolving (as Java
		// servers do) leaves no empty, "." or ".." segment, and is stable.
		// (The reading that keeps them resolves "..;" as a name, which its
		// comparison form then prints as "..".)
		for _, decode := range []bool{true, false} {
			r := resolve(noQuery, true, decode)
			if !decode && resolve(r, true, false) != r {
				t.Fatalf("resolve(%q) = %q is not resolved", noQuery, r)
			}
			if strings.Contains(r, "//") || strings.Contains(r+"/", "/../") || strings.Contains(r+"/", "/./") {
				t.Fatalf("resolve(%q, decode %v) = %q still has an empty, . or .. segment", noQuery, decode, r)
			}
		}
		if !ok {
			return
		}
		if !literalMatch(noQuery, "/oauth2/logout") {
			t.Fatalf("%q matched, but its literal reading is not under the route", p)
		}
		decoded, err := url.PathUnescape(noQuery)
		if err != nil {
			return // an upstream cannot read it either
		}
		var segs []string
		for _, s := range strings.Split(decoded, "/") {
			s, _, _ = strings.Cut(s, ";")
			segs = append(segs, s)
		}
		if c := path.Clean("/" + strings.Join(segs, "/")); c != "/oauth2/logout" && !strings.HasPrefix(c, "/oauth2/logout/") {
			t.Fatalf("%q matched, but an upstream that decodes and cleans it reads %q", p, c)
		}
	})
}
