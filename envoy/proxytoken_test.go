package envoy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The token's way upstream, checked statically in the shipped nginx and
// Caddy files: where tokengate's allow lists authorization or cookie in
// x-envoy-auth-headers-to-remove, or answers a cookie header, the proxy acts
// on it. TestNginx and TestCaddy prove the behaviour; these checks say
// which line is missing when a file drifts.

// removeLists are values of x-envoy-auth-headers-to-remove, each with
// whether it names authorization and cookie: a pattern reading them must
// tell the names from their look-alikes.
var removeLists = []struct {
	list                  string
	authorization, cookie bool
}{
	{"authorization", true, false},
	{"x-auth-subject, x-auth-issuer, authorization", true, false},
	{"authorization, x-access-token, cookie", true, true},
	{"x-auth-roles, cookie", false, true},
	{"x-auth-subject, x-auth-roles", false, false},
	{"proxy-authorization, x-cookie, cookie-jar", false, false},
	{"", false, false},
}

// namesHeader reports a problem unless re matches exactly the removal
// lists that name the header (authorization or cookie).
func namesHeader(file, what, re, header string) []string {
	r, err := regexp.Compile(re)
	if err != nil {
		return []string{fmt.Sprintf("%s: %s: %q is no regular expression: %v", file, what, re, err)}
	}
	var problems []string
	for _, l := range removeLists {
		want := l.authorization
		if header == "cookie" {
			want = l.cookie
		}
		if r.MatchString(l.list) != want {
			problems = append(problems, fmt.Sprintf("%s: %s: %q matches %q: %v, want %v", file, what, re, l.list, !want, want))
		}
	}
	return problems
}

// nginxMap is one map block: its source variable and entries (key → value).
type nginxMap struct {
	source  string
	entries map[string]string
}

var (
	nginxMapStart = regexp.MustCompile(`^map (\$\w+) (\$\w+) \{$`)
	nginxMapEntry = regexp.MustCompile(`^("([^"]*)"|(\S+)) ("([^"]*)"|(\S+));$`)
)

// nginxMaps are the file's map blocks, by the variable each defines.
func nginxMaps(lines []string) map[string]nginxMap {
	maps := map[string]nginxMap{}
	for i := 0; i < len(lines); i++ {
		m := nginxMapStart.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		nm := nginxMap{source: m[1], entries: map[string]string{}}
		for i++; i < len(lines) && lines[i] != "}"; i++ {
			if e := nginxMapEntry.FindStringSubmatch(lines[i]); e != nil {
				nm.entries[e[2]+e[3]] = e[5] + e[6]
			}
		}
		maps[m[2]] = nm
	}
	return maps
}

// checkNginxToken: the removal list and the rewritten cookie are read from
// the auth answer; a map turns the list into an empty Authorization (else
// the client's), two more into the Cookie header (tokengate's, none, or the
// client's); proxy_set_header sends them; and nothing else reads the maps,
// since nginx keeps a map's first value for the request: read before the
// auth subrequest, it would be the client's header.
func checkNginxToken(data []byte) []string {
	lines := configLines(data)
	readVar := func(upstreamVar string) string {
		for _, l := range lines {
			if f := strings.Fields(strings.TrimSuffix(l, ";")); len(f) == 3 && f[0] == "auth_request_set" && f[2] == upstreamVar {
				return f[1]
			}
		}
		return ""
	}
	remove, cookie := readVar("$upstream_http_x_envoy_auth_headers_to_remove"), readVar("$upstream_http_cookie")
	if remove == "" || cookie == "" {
		return []string{fmt.Sprintf("%s: no auth_request_set reads $upstream_http_x_envoy_auth_headers_to_remove and $upstream_http_cookie (the token would reach the upstream where tokengate removes it)", nginxFile)}
	}
	maps := nginxMaps(lines)
	sentBy := func(header string) string {
		for _, l := range lines {
			if f := strings.Fields(strings.TrimSuffix(l, ";")); len(f) == 3 && f[0] == "proxy_set_header" && strings.EqualFold(f[1], header) {
				return f[2]
			}
		}
		return ""
	}
	var problems []string
	// stripping is a map of the removal list: "" where it names header, the
	// client's header otherwise.
	stripping := func(v, header string) {
		m, ok := maps[v]
		if !ok || m.source != remove || m.entries["default"] != "$http_"+header || len(m.entries) != 2 {
			problems = append(problems, fmt.Sprintf("%s: %s is not a map of %s to \"\" or $http_%s", nginxFile, v, remove, header))
			return
		}
		for key, val := range m.entries {
			if key == "default" {
				continue
			}
			re, ok := strings.CutPrefix(key, "~*")
			if !ok || val != "" {
				problems = append(problems, fmt.Sprintf("%s: map %s: want one case-insensitive pattern (~*) giving \"\"", nginxFile, v))
				continue
			}
			problems = append(problems, namesHeader(nginxFile, "map "+v, "(?i)"+re, header)...)
		}
	}
	auth := sentBy("Authorization")
	if auth == "" {
		problems = append(problems, fmt.Sprintf("%s: no proxy_set_header Authorization (the token would reach the upstream where tokengate removes it)", nginxFile))
	} else {
		stripping(auth, "authorization")
	}
	upstreamCookie := sentBy("Cookie")
	kept := ""
	if m, ok := maps[upstreamCookie]; !ok || m.source != cookie || m.entries["default"] != cookie || len(m.entries) != 2 || m.entries[""] == "" {
		problems = append(problems, fmt.Sprintf("%s: no proxy_set_header Cookie from a map of %s (tokengate's cookie header when it answers one)", nginxFile, cookie))
	} else {
		kept = m.entries[""]
		stripping(kept, "cookie")
	}
	// The maps' variables are read by proxy_set_header and the map blocks
	// only.
	for _, v := range []string{auth, upstreamCookie, kept} {
		if v == "" {
			continue
		}
		word := regexp.MustCompile(regexp.QuoteMeta(v) + `\b`)
		for _, l := range lines {
			if word.MatchString(l) && !strings.HasPrefix(l, "proxy_set_header ") && !strings.HasPrefix(l, "map ") && !nginxMapEntry.MatchString(l) {
				problems = append(problems, fmt.Sprintf("%s: %q reads %s elsewhere than proxy_set_header: nginx keeps a map's first value, and before the auth subrequest it is the client's header", nginxFile, l, v))
			}
		}
	}
	return problems
}

// caddyRegexpMatcher is a named header_regexp matcher on one line: its
// name, header and pattern (which may hold spaces).
var caddyRegexpMatcher = regexp.MustCompile("^(@\\w+) header_regexp (\\S+) `([^`]*)`$")

// checkCaddyToken: forward_auth copies the removal list, the cookie header
// and the cookie-rewritten flag into helper headers, which the client's
// copies cannot be (deleted before); after it, a matcher of the list
// removes Authorization and Cookie, another sets Cookie from tokengate's on
// the flag alone (the cookie's text is the client's other cookies, which
// can be Caddy 2.6's literal placeholder for an answer without Cookie);
// and the helpers go before the upstream.
func checkCaddyToken(data []byte) []string {
	lines := configLines(data)
	fa := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "forward_auth ") })
	rp := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "reverse_proxy ") })
	if fa < 0 || rp < fa {
		return nil // checkCaddy says so
	}
	copied := map[string]string{}
	for _, l := range lines[fa:rp] {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "copy_headers" {
			for _, h := range f[1:] {
				if from, to, ok := strings.Cut(h, ">"); ok {
					copied[strings.ToLower(from)] = to
				}
			}
		}
	}
	remove, cookie, rewritten := copied["x-envoy-auth-headers-to-remove"], copied["cookie"], copied["x-tokengate-cookie-rewritten"]
	if remove == "" || cookie == "" || rewritten == "" {
		return []string{fmt.Sprintf("%s: copy_headers lacks X-Envoy-Auth-Headers-To-Remove>…, Cookie>… or X-Tokengate-Cookie-Rewritten>… (the token would reach the upstream where tokengate removes it)", caddyFile)}
	}
	var problems []string
	for _, h := range []string{remove, cookie, rewritten} {
		if i := slices.Index(lines, "request_header -"+h); i < 0 || i > fa {
			problems = append(problems, fmt.Sprintf("%s: no request_header -%s before forward_auth (a client's would be read as tokengate's)", caddyFile, h))
		}
		if !slices.Contains(lines[fa:rp], "request_header -"+h) {
			problems = append(problems, fmt.Sprintf("%s: no request_header -%s before reverse_proxy (the helper would reach the upstream)", caddyFile, h))
		}
	}
	// A matcher of the removal list deletes each header it names.
	for _, header := range []string{"Authorization", "Cookie"} {
		found := false
		for _, l := range lines[fa:rp] {
			m := caddyRegexpMatcher.FindStringSubmatch(l)
			if m == nil || m[2] != remove || !slices.Contains(lines[fa:rp], "request_header "+m[1]+" -"+header) {
				continue
			}
			found = true
			problems = append(problems, namesHeader(caddyFile, m[1], m[3], strings.ToLower(header))...)
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s: no matcher of %s removes %s after forward_auth (the token would reach the upstream where tokengate removes it)", caddyFile, remove, header))
		}
	}
	// Cookie is set from the helper on the flag alone: a matcher whose one
	// condition is the flag's value.
	set := slices.IndexFunc(lines[fa:rp], func(l string) bool {
		f := strings.Fields(l)
		return len(f) == 4 && f[0] == "request_header" && f[2] == "Cookie" && f[3] == "{http.request.header."+cookie+"}"
	})
	if set < 0 {
		return append(problems, fmt.Sprintf("%s: no request_header … Cookie {http.request.header.%s} (tokengate's cookie header without the token's cookie)", caddyFile, cookie))
	}
	matcher := strings.Fields(lines[fa+set])[1]
	if !slices.Contains(lines[fa:fa+set], matcher+" header "+rewritten+" 1") {
		problems = append(problems, fmt.Sprintf("%s: Cookie is set from %s on other than %q: a client's cookies can make that text Caddy 2.6's literal placeholder, and its own Cookie, token included, would go on", caddyFile, cookie, matcher+" header "+rewritten+" 1"))
	}
	return problems
}
