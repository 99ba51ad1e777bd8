package policy

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzLogoutRouteMatch: for any path, Match never panics, and a path it
// calls a logout route is one under every reading an upstream may take: the
// literal one, the route policy's normalised ones, and the most aggressive
// single-pass normaliser (every escape decoded, ";" parameters dropped,
// path.Clean).
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

// FuzzNormalizePath: for any path, NormalizePath never panics, and a path
// it accepts comes out normalised: starting with "/", without a query or
// fragment, an empty, "." or ".." segment, a backslash, a control
// character, or an encoded slash, backslash or NUL; normalising it again
// changes nothing; and it resolves to where a normaliser decoding every
// escape (path.Clean after url.PathUnescape) puts the input.
//
//	go test -run '^$' -fuzz FuzzNormalizePath -fuzztime 30s ./policy
func FuzzNormalizePath(f *testing.F) {
	for _, seed := range []string{
		"/", "/a/b", "/a/b/", "/a/b?x=1", "/a#f", "//a//b", "/a/./b/../c", "/..", "/a/../..",
		"/public/%2e%2e/admin", "/public/%2E%2e/admin", "/public/..;/admin", "/a%2Fb", "/a%2fb", "/a%5Cb",
		"/a%00", `/a\b`, "/a%", "/a%4", "/a%zz", "a/b", "", "/%7Euser", "/a%20b%3f", "/a%252e%252e",
		"/caf\xc3\xa9", "/.hidden", "/a/..%2f", "/%2e", "/a\x00", "/a\x7f",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := NormalizePath(in)
		if err != nil {
			if !errors.Is(err, ErrPathInvalid) {
				t.Fatalf("NormalizePath(%q): %v, not ErrPathInvalid", in, err)
			}
			return
		}
		again, err := NormalizePath(got)
		if err != nil || again != got {
			t.Fatalf("NormalizePath(%q) = %q, but NormalizePath(%q) = %q, %v", in, got, got, again, err)
		}
		lower := strings.ToLower(got)
		switch {
		case !strings.HasPrefix(got, "/"):
			t.Fatalf("NormalizePath(%q) = %q does not start with /", in, got)
		case strings.ContainsAny(got, "?#\\"):
			t.Fatalf("NormalizePath(%q) = %q has a ?, # or \\", in, got)
		case strings.Contains(got, "//"):
			t.Fatalf("NormalizePath(%q) = %q has //", in, got)
		case strings.Contains(got+"/", "/./") || strings.Contains(got+"/", "/../"):
			t.Fatalf("NormalizePath(%q) = %q has a . or .. segment", in, got)
		case strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%00"):
			t.Fatalf("NormalizePath(%q) = %q has an encoded /, \\ or NUL", in, got)
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("NormalizePath(%q) = %q has a control character", in, got)
			}
		}
		noQuery := in
		if i := strings.IndexAny(in, "?#"); i >= 0 {
			noQuery = in[:i]
		}
		want, err1 := url.PathUnescape(noQuery)
		have, err2 := url.PathUnescape(got)
		if err1 != nil || err2 != nil {
			t.Fatalf("NormalizePath(%q) = %q, but it does not unescape: %v, %v", in, got, err1, err2)
		}
		if path.Clean(want) != path.Clean(have) {
			t.Fatalf("NormalizePath(%q) = %q, which decodes and cleans to %q, not %q", in, got, path.Clean(have), path.Clean(want))
		}
	})
}

// FuzzContainsFold: containsFold is strings.Contains of the ASCII
// lower-cased strings.
func FuzzContainsFold(f *testing.F) {
	for _, seed := range [][2]string{
		{"/a/B.Debug1", ".debug1"}, {"/x.debug", ".DEBUG"}, {"/abc", "ABC"}, {"", ""}, {"/a", ""},
		{"..x", ".x"}, {"/Kelvin", "kelvin"}, {"a.b", "a.b.c"},
	} {
		f.Add(seed[0], seed[1])
	}
	lower := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		return string(b)
	}
	f.Fuzz(func(t *testing.T, s, sub string) {
		if got, want := containsFold(s, sub), strings.Contains(lower(s), lower(sub)); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	})
}
