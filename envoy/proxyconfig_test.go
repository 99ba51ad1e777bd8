package envoy_test

import (
	"bytes"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The shipped configurations of the proxies that speak tokengate's HTTP
// authorization endpoint, checked statically: nginx and Caddy also run in
// TestNginx and TestCaddy; Traefik, with no binary here, only here.
const (
	nginxFile         = "nginx/tokengate.conf"
	caddyFile         = "caddy/Caddyfile"
	traefikFile       = "traefik/tokengate.yaml"
	exampleConfigFile = "../tokengate.example.yaml"
	proxiesSection    = "## Behind nginx, Caddy and Traefik"
)

func readProxyFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{nginxFile, caddyFile, traefikFile, exampleConfigFile, readmeFile} {
		files[name] = readFile(t, name)
	}
	return files
}

// exampleManagedHeaders are the identity headers tokengate manages with the
// example configuration: its own three and the example's claim_headers.
// Every proxy configuration must overwrite or remove each of them.
func exampleManagedHeaders(example []byte) ([]string, error) {
	var cfg struct {
		ClaimHeaders map[string]string `yaml:"claim_headers"`
	}
	if err := yaml.Unmarshal(example, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %v", exampleConfigFile, err)
	}
	headers := []string{"X-Auth-Subject", "X-Auth-Issuer", "X-Auth-Token-Id"}
	for _, h := range slices.Sorted(maps.Keys(cfg.ClaimHeaders)) {
		headers = append(headers, canonical(h))
	}
	return headers, nil
}

// canonical spells a header name as Caddy and Traefik configurations do.
func canonical(h string) string {
	parts := strings.Split(strings.ToLower(h), "-")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}

// configLines are a file's lines without comments and surrounding blanks.
func configLines(data []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if i := strings.Index(l, "#"); i >= 0 && !strings.Contains(l[:i], "'") && !strings.Contains(l[:i], "`") {
			l = l[:i]
		}
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func checkProxyConfigs(files map[string][]byte) []string {
	managed, err := exampleManagedHeaders(files[exampleConfigFile])
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	problems = append(problems, checkNginx(files[nginxFile], managed)...)
	problems = append(problems, checkNginxToken(files[nginxFile])...)
	problems = append(problems, checkCaddy(files[caddyFile], managed)...)
	problems = append(problems, checkCaddyToken(files[caddyFile])...)
	problems = append(problems, checkTraefik(files[traefikFile], managed)...)
	problems = append(problems, checkProxiesReadme(files)...)
	return problems
}

// checkNginx: each managed header is read from the auth answer
// (auth_request_set) and set on the upstream request from it
// (proxy_set_header, which replaces the client's and sends none when
// empty); the auth location is internal and sends nginx mode's headers;
// the denials and errors have their pages; underscored headers stay off.
func checkNginx(data []byte, managed []string) []string {
	var problems []string
	lines := configLines(data)
	has := func(re string) bool {
		r := regexp.MustCompile("^" + re + "$")
		return slices.ContainsFunc(lines, r.MatchString)
	}
	for _, h := range managed {
		upstreamVar := "$upstream_http_" + strings.ReplaceAll(strings.ToLower(h), "-", "_")
		var set string
		for _, l := range lines {
			if f := strings.Fields(strings.TrimSuffix(l, ";")); len(f) == 3 && f[0] == "auth_request_set" && f[2] == upstreamVar {
				set = f[1]
			}
		}
		if set == "" {
			problems = append(problems, fmt.Sprintf("%s: no auth_request_set reads %s", nginxFile, upstreamVar))
			continue
		}
		if !slices.Contains(lines, fmt.Sprintf("proxy_set_header %s %s;", h, set)) {
			problems = append(problems, fmt.Sprintf("%s: no proxy_set_header %s %s; (the client's %s would reach the upstream)", nginxFile, h, set, h))
		}
	}
	for re, what := range map[string]string{
		`auth_request /_tokengate;`:                                         "auth_request /_tokengate",
		`location = /_tokengate \{`:                                         "the auth location",
		`internal;`:                                                         "an internal auth location",
		`proxy_set_header X-Original-URI \$request_uri;`:                    "X-Original-URI from $request_uri",
		`proxy_set_header X-Original-Method \$request_method;`:              "X-Original-Method from $request_method",
		`proxy_set_header Host \$host;`:                                     "Host for the auth request",
		`proxy_pass_request_body off;`:                                      "no body to the auth request",
		`auth_request_set \$tg_status \$upstream_http_x_tokengate_status;`:  "x-tokengate-status read",
		`error_page 401 = @tokengate_401;`:                                  "the 401 page",
		`error_page 403 = @tokengate_403;`:                                  "the 403 page",
		`error_page 500 = @tokengate_error;`:                                "the error page",
		`add_header Retry-After \$tg_retry always;`:                         "Retry-After on 503",
		`auth_request_set \$tg_challenge \$upstream_http_www_authenticate;`: "the challenge read",
		`add_header WWW-Authenticate \$tg_challenge always;`:                "the 403's challenge (auth_request copies only a 401's)",
		`underscores_in_headers off;`:                                       "underscores_in_headers off",
	} {
		if !has(re) {
			problems = append(problems, fmt.Sprintf("%s: lacks %s", nginxFile, what))
		}
	}
	return problems
}

// checkCaddy: inside one route block (written order), each managed header
// is deleted before forward_auth, copied from its answer, and the literal
// placeholder Caddy 2.6 leaves for a missing one removed after it.
func checkCaddy(data []byte, managed []string) []string {
	var problems []string
	lines := configLines(data)
	index := func(prefix string) int {
		return slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
	}
	route, fa, rp := index("route {"), index("forward_auth "), index("reverse_proxy ")
	if route < 0 || fa < route || rp < fa {
		return []string{fmt.Sprintf("%s: want route { … forward_auth … reverse_proxy … }: Caddy sorts request_header after forward_auth outside a route", caddyFile)}
	}
	var copied []string
	if i := index("copy_headers "); i > fa {
		copied = strings.Fields(lines[i])[1:]
	}
	for _, h := range managed {
		if i := slices.Index(lines, "request_header -"+h); i < route || i > fa {
			problems = append(problems, fmt.Sprintf("%s: no request_header -%s before forward_auth (a client's %s would stay when tokengate does not fill it)", caddyFile, h, h))
		}
		if !slices.Contains(copied, h) {
			problems = append(problems, fmt.Sprintf("%s: copy_headers lacks %s", caddyFile, h))
		}
		matcher := ""
		placeholder := regexp.QuoteMeta("{http.reverse_proxy.header." + h + "}")
		for i, l := range lines {
			f := strings.Fields(l)
			if i > fa && i < rp && len(f) == 4 && f[1] == "header_regexp" && f[2] == h && f[3] == "`^"+placeholder+"$`" {
				matcher = f[0]
			}
		}
		if matcher == "" || !slices.Contains(lines[fa:rp], "request_header "+matcher+" -"+h) {
			problems = append(problems, fmt.Sprintf("%s: no removal of %s left as Caddy's literal placeholder after forward_auth", caddyFile, h))
		}
	}
	return problems
}

// traefikDynamic is the part of Traefik's dynamic configuration tokengate
// relies on; unknown keys are errors, so a misspelt option is caught.
type traefikDynamic struct {
	HTTP struct {
		Middlewares map[string]struct {
			ForwardAuth *struct {
				Address             string   `yaml:"address"`
				TrustForwardHeader  *bool    `yaml:"trustForwardHeader"`
				AuthResponseHeaders []string `yaml:"authResponseHeaders"`
				AuthRequestHeaders  []string `yaml:"authRequestHeaders"`
				TLS                 *struct {
					CA                 string `yaml:"ca"`
					Cert               string `yaml:"cert"`
					Key                string `yaml:"key"`
					InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
				} `yaml:"tls"`
			} `yaml:"forwardAuth"`
		} `yaml:"middlewares"`
		Routers map[string]struct {
			Rule        string   `yaml:"rule"`
			EntryPoints []string `yaml:"entryPoints"`
			Middlewares []string `yaml:"middlewares"`
			Service     string   `yaml:"service"`
		} `yaml:"routers"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `yaml:"url"`
				} `yaml:"servers"`
			} `yaml:"loadBalancer"`
		} `yaml:"services"`
	} `yaml:"http"`
}

// checkTraefik: a forwardAuth middleware to tokengate with every managed
// header in authResponseHeaders (Traefik deletes each, then copies it from
// the answer), trustForwardHeader false, no authRequestHeaders filter; every
// router goes through it to a defined service.
func checkTraefik(data []byte, managed []string) []string {
	var cfg traefikDynamic
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return []string{fmt.Sprintf("%s: %v", traefikFile, err)}
	}
	var problems []string
	auth := map[string]bool{}
	for name, m := range cfg.HTTP.Middlewares {
		fa := m.ForwardAuth
		if fa == nil {
			continue
		}
		auth[name] = true
		if u, err := url.Parse(fa.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s: middleware %s: address %q is not an http(s) URL", traefikFile, name, fa.Address))
		}
		if fa.TrustForwardHeader == nil || *fa.TrustForwardHeader {
			problems = append(problems, fmt.Sprintf("%s: middleware %s: want trustForwardHeader: false, stated (a client's X-Forwarded-Uri would be trusted)", traefikFile, name))
		}
		for _, h := range managed {
			if !slices.ContainsFunc(fa.AuthResponseHeaders, func(s string) bool { return strings.EqualFold(s, h) }) {
				problems = append(problems, fmt.Sprintf("%s: middleware %s: authResponseHeaders lacks %s (a client's %s would reach the upstream)", traefikFile, name, h, h))
			}
		}
		if fa.AuthRequestHeaders != nil {
			problems = append(problems, fmt.Sprintf("%s: middleware %s: authRequestHeaders filters what tokengate sees (token sources, underscored headers)", traefikFile, name))
		}
	}
	if len(auth) == 0 {
		problems = append(problems, fmt.Sprintf("%s: no forwardAuth middleware", traefikFile))
	}
	if len(cfg.HTTP.Routers) == 0 {
		problems = append(problems, fmt.Sprintf("%s: no router", traefikFile))
	}
	for name, r := range cfg.HTTP.Routers {
		if !slices.ContainsFunc(r.Middlewares, func(m string) bool { return auth[m] }) {
			problems = append(problems, fmt.Sprintf("%s: router %s does not go through tokengate's forwardAuth", traefikFile, name))
		}
		if s, ok := cfg.HTTP.Services[r.Service]; !ok || len(s.LoadBalancer.Servers) == 0 {
			problems = append(problems, fmt.Sprintf("%s: router %s: service %q undefined or without servers", traefikFile, name, r.Service))
		}
	}
	return problems
}

// checkProxiesReadme: the README's section shows the exact configuration:
// every line of its nginx, Caddyfile and Traefik blocks is in the shipped
// file.
func checkProxiesReadme(files map[string][]byte) []string {
	readme := string(files[readmeFile])
	start := strings.Index(readme, "\n"+proxiesSection+"\n")
	if start < 0 {
		return []string{fmt.Sprintf("%s: no section %q", readmeFile, proxiesSection)}
	}
	section := readme[start+1:]
	if end := strings.Index(section[len(proxiesSection):], "\n## "); end >= 0 {
		section = section[:len(proxiesSection)+end]
	}
	var problems []string
	blocks := map[string]string{"```nginx\n": nginxFile, "```caddyfile\n": caddyFile, "```yaml\n": traefikFile}
	found := map[string]bool{}
	for rest := section; ; {
		i := strings.Index(rest, "```")
		if i < 0 {
			break
		}
		rest = rest[i:]
		end := strings.Index(rest[3:], "```")
		if end < 0 {
			break
		}
		block := rest[:end+3]
		rest = rest[end+6:]
		for fence, file := range blocks {
			if !strings.HasPrefix(block, fence) {
				continue
			}
			found[file] = true
			shipped := configLines(files[file])
			for _, l := range configLines([]byte(block[len(fence):])) {
				if l == "…" || l == "..." {
					continue
				}
				if !slices.Contains(shipped, l) {
					problems = append(problems, fmt.Sprintf("%s: %q in the %s block is not in %s", readmeFile, l, strings.Trim(fence, "`\n"), file))
				}
			}
		}
	}
	for _, file := range blocks {
		if !found[file] {
			problems = append(problems, fmt.Sprintf("%s: %s shows no block of %s", readmeFile, proxiesSection, file))
		}
	}
	return problems
}

func TestProxyConfigs(t *testing.T) {
	for _, p := range checkProxyConfigs(readProxyFiles(t)) {
		t.Errorf("proxy configuration: %s", p)
	}
}

// TestProxyConfigChecksCatchMistakes proves the checks above can fail.
func TestProxyConfigChecksCatchMistakes(t *testing.T) {
	catchMistakes(t, readProxyFiles(t), map[string]mutation{
		"nginx: a header not overwritten":  {nginxFile, "proxy_set_header X-Auth-Tenant   $tg_tenant;", "", "no proxy_set_header X-Auth-Tenant"},
		"nginx: a header not read":         {nginxFile, "auth_request_set $tg_roles     $upstream_http_x_auth_roles;", "", "$upstream_http_x_auth_roles"},
		"nginx: auth location public":      {nginxFile, "internal;", "", "internal"},
		"nginx: client's URI header":       {nginxFile, "X-Original-URI    $request_uri", "X-Original-URI $http_x_original_uri", "X-Original-URI"},
		"nginx: no 503 page":               {nginxFile, "error_page 500 = @tokengate_error;", "", "the error page"},
		"nginx: 403 without its challenge": {nginxFile, "add_header WWW-Authenticate $tg_challenge always;", "", "the 403's challenge"},
		"nginx: underscores on":            {nginxFile, "underscores_in_headers off;", "underscores_in_headers on;", "underscores_in_headers"},
		"example: a new claim header":      {exampleConfigFile, "  x-auth-tenant: tid", "  x-auth-tenant: tid\n  x-auth-plan: plan", "X-Auth-Plan"},
		"caddy: no strip":                  {caddyFile, "request_header -X-Auth-Roles\n", "", "no request_header -X-Auth-Roles"},
		"caddy: no route block":            {caddyFile, "route {", "handle {", "route {"},
		"caddy: header not copied":         {caddyFile, "X-Auth-Roles X-Auth-Tenant\n", "X-Auth-Roles\n", "copy_headers lacks X-Auth-Tenant"},
		"caddy: placeholder kept":          {caddyFile, "request_header @tg_no_issuer -X-Auth-Issuer", "", "X-Auth-Issuer left as Caddy's literal placeholder"},
		"traefik: header not copied":       {traefikFile, "          - X-Auth-Token-Id\n", "", "lacks X-Auth-Token-Id"},
		"traefik: trusts the client":       {traefikFile, "trustForwardHeader: false", "trustForwardHeader: true", "trustForwardHeader"},
		"traefik: misspelt key":            {traefikFile, "trustForwardHeader: false", "trustForwardHeaders: false", "trustForwardHeaders"},
		"traefik: router bypasses":         {traefikFile, "middlewares: [tokengate]", "middlewares: []", "does not go through"},
		"traefik: request headers limited": {traefikFile, "        # No authRequestHeaders", "        authRequestHeaders: [Authorization]\n        #", "authRequestHeaders"},
		"nginx: token always forwarded":    {nginxFile, "proxy_set_header Authorization   $tg_authorization;", "", "no proxy_set_header Authorization"},
		"nginx: removal list not read":     {nginxFile, "auth_request_set $tg_remove    $upstream_http_x_envoy_auth_headers_to_remove;", "", "$upstream_http_x_envoy_auth_headers_to_remove"},
		"nginx: only a lone authorization": {nginxFile, `"~*(^|[ ,])authorization($|[ ,])"`, `"~*^authorization$"`, `matches "x-auth-subject, x-auth-issuer, authorization": false`},
		"nginx: a look-alike removed":      {nginxFile, `"~*(^|[ ,])cookie($|[ ,])"`, `"~*cookie"`, `matches "proxy-authorization, x-cookie, cookie-jar": true`},
		"nginx: cookie never rewritten":    {nginxFile, "proxy_set_header Cookie          $tg_cookie_upstream;", "", "no proxy_set_header Cookie"},
		"nginx: map read before the auth":  {nginxFile, "    auth_request /_tokengate;", "    set $tg_seen $tg_authorization;\n    auth_request /_tokengate;", "reads $tg_authorization elsewhere"},
		"caddy: removal list not copied":   {caddyFile, "X-Envoy-Auth-Headers-To-Remove>X-Tokengate-Remove ", "", "copy_headers lacks X-Envoy-Auth-Headers-To-Remove"},
		"caddy: token always forwarded":    {caddyFile, "request_header @tg_remove_authorization -Authorization", "", "removes Authorization"},
		"caddy: helper reaches upstream":   {caddyFile, "request_header -X-Tokengate-Cookie\n\t\trequest_header -X-Tokengate-Cookie-Rewritten\n\n\t\t# 5.", "request_header -X-Tokengate-Cookie-Rewritten\n\n\t\t# 5.", "no request_header -X-Tokengate-Cookie before reverse_proxy"},
		"caddy: flag reaches upstream":     {caddyFile, "request_header -X-Tokengate-Cookie-Rewritten\n\n\t\t# 5.", "\n\t\t# 5.", "no request_header -X-Tokengate-Cookie-Rewritten before reverse_proxy"},
		"caddy: client's helper trusted":   {caddyFile, "request_header -X-Tokengate-Remove\n\t\trequest_header -X-Tokengate-Cookie\n", "", "no request_header -X-Tokengate-Remove before forward_auth"},
		"caddy: client's flag trusted":     {caddyFile, "\t\trequest_header -X-Tokengate-Cookie-Rewritten\n\n\t\t# 2.", "\n\t\t# 2.", "no request_header -X-Tokengate-Cookie-Rewritten before forward_auth"},
		"caddy: flag not copied":           {caddyFile, " X-Tokengate-Cookie-Rewritten>X-Tokengate-Cookie-Rewritten", "", "copy_headers lacks"},
		// The design before the flag: Cookie set from the helper unless its
		// text is the placeholder, which a client's cookies can make it.
		"caddy: cookie set on its text": {caddyFile, "@tg_set_cookie header X-Tokengate-Cookie-Rewritten 1",
			"@tg_set_cookie {\n\t\t\theader X-Tokengate-Cookie *\n\t\t\tnot header_regexp X-Tokengate-Cookie `^\\{http\\.reverse_proxy\\.header\\.Cookie\\}$`\n\t\t}",
			"Cookie is set from X-Tokengate-Cookie on other than"},
		"readme: not the shipped line": {readmeFile, "proxy_set_header X-Auth-Subject  $tg_subject;", "proxy_set_header X-Auth-Subject $http_x_auth_subject;", "is not in " + nginxFile},
	}, checkProxyConfigs)
}
