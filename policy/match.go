package policy

import (
	"strings"
)

// The index. A policy of a thousand rules is matched without trying a
// thousand rules: the rules are grouped by host (exact names, wildcard
// suffixes, any host), and within a group the path rules hang in a tree of
// path segments. A request walks the tree along its path and tries only
// the rules met on the way, keeping the lowest-numbered one that matches:
// the first match in order, as a linear scan (Trace) would find it.

type pathKind uint8

const (
	pathAny pathKind = iota
	pathExact
	pathPrefix
	pathRegex
)

// compiledPolicy is one named policy's rules and their index.
type compiledPolicy struct {
	name    string
	rules   []*Rule
	shadows []*Rule // the shadow rules, in order: never in the index
	// Groups by host: exact (lower case), wildcard by suffix
	// (".example.com"), and rules naming no host.
	exactHost map[string]*group
	wildHost  map[string]*group
	anyHost   *group
}

// group indexes the rules of one host.
type group struct {
	root node
	// linear are the rules the tree cannot place (no path, or a regexp
	// without a literal prefix starting with "/"), in order.
	linear []int32
	// costly is the lowest index of a regexp or linear rule: a request
	// whose best rule so far comes before it runs none of them.
	costly int32
}

// node is a path segment. Each list holds rule indexes in order.
type node struct {
	children map[string]*node
	prefix   []int32 // path_prefix rules ending here
	exact    []int32 // path rules ending here
	// regex: path_regex rules whose literal prefix's last complete segment
	// is this node (every path they match passes here).
	regex []int32
}

func (n *node) child(seg string) *node {
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c := n.children[seg]
	if c == nil {
		c = &node{}
		n.children[seg] = c
	}
	return c
}

// at returns the node of a path written without its trailing slash ("" is
// the root).
func (g *group) at(path string) *node {
	n := &g.root
	if path == "" {
		return n
	}
	for _, seg := range strings.Split(path[1:], "/") {
		n = n.child(seg)
	}
	return n
}

// index builds the host groups and path trees of every non-shadow rule.
func (p *compiledPolicy) index() {
	p.exactHost = map[string]*group{}
	p.wildHost = map[string]*group{}
	newGroup := func() *group { return &group{costly: int32(len(p.rules))} }
	for _, r := range p.rules {
		if r.shadow {
			p.shadows = append(p.shadows, r)
			continue
		}
		var g *group
		switch {
		case r.host == "":
			if p.anyHost == nil {
				p.anyHost = newGroup()
			}
			g = p.anyHost
		case r.wildcard:
			if g = p.wildHost[r.host]; g == nil {
				g = newGroup()
				p.wildHost[r.host] = g
			}
		default:
			if g = p.exactHost[r.host]; g == nil {
				g = newGroup()
				p.exactHost[r.host] = g
			}
		}
		if r.kind == pathRegex || r.kind == pathAny {
			g.costly = min(g.costly, r.index)
		}
		switch r.kind {
		case pathExact:
			n := g.at(r.path)
			n.exact = append(n.exact, r.index)
		case pathPrefix:
			n := g.at(r.path)
			n.prefix = append(n.prefix, r.index)
		case pathRegex:
			lit, _ := r.re.LiteralPrefix()
			if !strings.HasPrefix(lit, "/") {
				g.linear = append(g.linear, r.index)
				break
			}
			// Only the complete segments: "/a/b" may be "/a/bc".
			n := g.at(lit[:strings.LastIndexByte(lit, '/')])
			n.regex = append(n.regex, r.index)
		default:
			g.linear = append(g.linear, r.index)
		}
	}
}

// route returns the first non-shadow rule matching the request; host
// without its port, path normalised.
//
// It looks twice through the groups of the host: first for the prefix and
// exact rules (a walk down the tree), then for the regexps and the linear
// rules, each tried only when it comes before the best rule found so far.
func (p *compiledPolicy) route(host, method, path string) *Rule {
	best := int32(len(p.rules))
	var h []byte
	if host != "" && (len(p.exactHost) > 0 || len(p.wildHost) > 0) {
		// Lower-case the host on the stack: a map lookup keyed by
		// string(bytes) does not allocate.
		var buf [256]byte
		if len(host) <= len(buf) {
			h = buf[:len(host)]
			for i := 0; i < len(host); i++ {
				c := host[i]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				h[i] = c
			}
		} else {
			h = []byte(strings.ToLower(host))
		}
	}
	for _, costly := range [2]bool{false, true} {
		if len(h) > 0 {
			if g := p.exactHost[string(h)]; g != nil {
				best = g.find(costly, p.rules, method, path, best)
			}
			if len(p.wildHost) > 0 {
				// Each suffix from a dot on, with at least one character
				// before it.
				for i := 1; i < len(h); i++ {
					if h[i] == '.' {
						if g := p.wildHost[string(h[i:])]; g != nil {
							best = g.find(costly, p.rules, method, path, best)
						}
					}
				}
			}
		}
		if p.anyHost != nil {
			best = p.anyHost.find(costly, p.rules, method, path, best)
		}
	}
	if int(best) == len(p.rules) {
		return nil
	}
	return p.rules[best]
}

// find returns the lowest index below best of a rule of g matching method
// and path, or best: among the prefix and exact rules, or among the
// costly ones (regexps and linear rules).
func (g *group) find(costly bool, rules []*Rule, method, path string, best int32) int32 {
	if costly && g.costly >= best {
		return best
	}
	n := &g.root
	rest := path[1:]
	for n != nil {
		if !costly {
			best = firstByMethod(n.prefix, rules, method, best)
		} else {
			for _, i := range n.regex {
				if i >= best {
					break
				}
				if r := rules[i]; r.methodMatches(method) && r.regexMatches(path) {
					best = i
					break
				}
			}
		}
		if rest == "" {
			if !costly {
				best = firstByMethod(n.exact, rules, method, best)
			}
			break
		}
		seg := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		n = n.children[seg]
	}
	if costly {
		for _, i := range g.linear {
			if i >= best {
				break
			}
			if r := rules[i]; r.methodMatches(method) && r.pathMatches(path) {
				return i
			}
		}
	}
	return best
}

func firstByMethod(list []int32, rules []*Rule, method string, best int32) int32 {
	for _, i := range list {
		if i >= best {
			break
		}
		if rules[i].methodMatches(method) {
			return i
		}
	}
	return best
}

// mismatch says what of the request the rule does not match ("host",
// "method" or "path"); empty when it matches. The linear reading of the
// index (Trace, shadow rules).
func (r *Rule) mismatch(host, method, path string) string {
	switch {
	case !r.hostMatches(host):
		return "host"
	case !r.methodMatches(method):
		return "method"
	case !r.pathMatches(path):
		return "path"
	}
	return ""
}

func (r *Rule) hostMatches(host string) bool {
	switch {
	case r.host == "":
		return true
	case r.wildcard:
		return len(host) > len(r.host) && asciiEqualFold(host[len(host)-len(r.host):], r.host)
	}
	return asciiEqualFold(host, r.host)
}

func (r *Rule) methodMatches(method string) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if asciiEqualFold(m, method) {
			return true
		}
	}
	return false
}

// pathMatches matches a normalised path.
func (r *Rule) pathMatches(path string) bool {
	switch r.kind {
	case pathExact:
		return strings.TrimSuffix(path, "/") == r.path
	case pathPrefix:
		rest, ok := strings.CutPrefix(path, r.path)
		return ok && (rest == "" || rest[0] == '/')
	case pathRegex:
		return r.regexMatches(path)
	}
	return true
}

// regexMatches runs the rule's regexp on path, unless path lacks the
// literal every match contains.
func (r *Rule) regexMatches(path string) bool {
	if r.reLit != "" {
		if r.reFold && !containsFold(path, r.reLit) || !r.reFold && !strings.Contains(path, r.reLit) {
			return false
		}
	}
	return r.re.MatchString(path)
}

// containsFold is strings.Contains, ASCII case-insensitive.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if asciiEqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// asciiEqualFold is strings.EqualFold for ASCII only: a host or method
// matching a rule by Unicode folding (the Kelvin sign K for k) would
// match it in Trace and not in the index, and in no upstream.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hostOnly is the request's host without its port and a trailing dot
// ("API.example.com.:443" is "API.example.com"); an IPv6 literal loses its
// brackets.
func hostOnly(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.IndexByte(host[i+1:], ':') < 0 {
		host = host[:i]
	}
	return strings.TrimSuffix(host, ".")
}
