package policy

import (
	"slices"
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
	exactHost hostGroups
	wildHost  hostGroups
	anyHost   *group
}

// fewHosts and fewChildren: up to so many names are compared one by one,
// which is cheaper than hashing the name (and, for hosts, lower-casing
// it first); more are looked up in a map.
const (
	fewHosts    = 8
	fewChildren = 8
)

// hostGroups are the groups of the exact hosts, or of the wildcard
// suffixes: a few in names and groups, many in byName.
type hostGroups struct {
	names  []string // lower case, sorted
	groups []*group // of names
	byName map[string]*group
	// lens are the lengths of byName's names, ascending, distinct: a
	// wildcard suffix is looked up at those lengths only.
	lens []int
}

func newHostGroups(m map[string]*group) hostGroups {
	if len(m) > fewHosts {
		var hg hostGroups
		hg.byName = m
		for name := range m {
			hg.lens = append(hg.lens, len(name))
		}
		slices.Sort(hg.lens)
		hg.lens = slices.Compact(hg.lens)
		return hg
	}
	var hg hostGroups
	for name := range m {
		hg.names = append(hg.names, name)
	}
	slices.Sort(hg.names)
	for _, name := range hg.names {
		hg.groups = append(hg.groups, m[name])
	}
	return hg
}

func (hg *hostGroups) empty() bool { return len(hg.names) == 0 && hg.byName == nil }

// group indexes the rules of one host.
type group struct {
	root node
	// linear are the rules the tree cannot place (no path, or a regexp
	// without a literal prefix starting with "/"), in order.
	linear []int32
}

// node is a path segment. Each list holds rule indexes in order.
type node struct {
	// The children by segment: a few in keys and kids (sorted by key),
	// many in children.
	keys     []string
	kids     []*node
	children map[string]*node
	prefix   []int32 // path_prefix rules ending here
	exact    []int32 // path rules ending here
	// regex: path_regex rules whose literal prefix's last complete segment
	// is this node (every path they match passes here).
	regex []int32
}

// child returns the child for seg, making it; before seal only.
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

// seal moves the children of each node with few of them from the map to
// keys and kids.
func (n *node) seal() {
	for _, c := range n.children {
		c.seal()
	}
	if len(n.children) > fewChildren {
		return
	}
	for seg := range n.children {
		n.keys = append(n.keys, seg)
	}
	slices.Sort(n.keys)
	for _, seg := range n.keys {
		n.kids = append(n.kids, n.children[seg])
	}
	n.children = nil
}

// next is the child for seg, or nil.
func (n *node) next(seg string) *node {
	if n.children != nil {
		return n.children[seg]
	}
	for i, k := range n.keys {
		if k == seg {
			return n.kids[i]
		}
	}
	return nil
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
	exactHost := map[string]*group{}
	wildHost := map[string]*group{}
	for _, r := range p.rules {
		if r.shadow {
			p.shadows = append(p.shadows, r)
			continue
		}
		var g *group
		switch {
		case r.host == "":
			if p.anyHost == nil {
				p.anyHost = &group{}
			}
			g = p.anyHost
		case r.wildcard:
			if g = wildHost[r.host]; g == nil {
				g = &group{}
				wildHost[r.host] = g
			}
		default:
			if g = exactHost[r.host]; g == nil {
				g = &group{}
				exactHost[r.host] = g
			}
		}
		switch r.kind {
		case pathExact:
			n := g.at(r.path)
			n.exact = append(n.exact, r.index)
		case pathPrefix:
			n := g.at(r.path)
			n.prefix = append(n.prefix, r.index)
		case pathRegex:
			lit := r.rePrefix
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
	for _, g := range exactHost {
		g.root.seal()
	}
	for _, g := range wildHost {
		g.root.seal()
	}
	if p.anyHost != nil {
		p.anyHost.root.seal()
	}
	p.exactHost = newHostGroups(exactHost)
	p.wildHost = newHostGroups(wildHost)
}

// route returns the first non-shadow rule matching the request; host
// without its port, path normalised.
//
// It walks the tree of each group of the host once, choosing among the
// prefix and exact rules met on the way, and putting aside the costly
// ones (regexps, linear rules); then it tries those of them that come
// before the best rule found: most requests run no regexp at all.
func (p *compiledPolicy) route(host, method, path string) *Rule {
	w := walker{rules: p.rules, method: method, path: path, best: int32(len(p.rules))}
	if host != "" && (!p.exactHost.empty() || !p.wildHost.empty()) {
		var lower []byte // host in lower case, for the maps
		if p.exactHost.byName != nil || p.wildHost.byName != nil {
			var buf [256]byte
			lower = lowerHost(&buf, host)
		}
		p.exactHost.exact(&w, host, lower)
		p.wildHost.wild(&w, host, lower)
	}
	if p.anyHost != nil {
		w.walk(p.anyHost)
	}
	best := w.costly()
	if int(best) == len(p.rules) {
		return nil
	}
	return p.rules[best]
}

// lowerHost is host in ASCII lower case (as asciiEqualFold reads it), in
// buf when it fits: a map lookup keyed by string(bytes) does not allocate.
func lowerHost(buf *[256]byte, host string) []byte {
	var h []byte
	if len(host) <= len(buf) {
		h = buf[:len(host)]
	} else {
		h = make([]byte, len(host))
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h[i] = c
	}
	return h
}

// exact walks the group of the host, if any.
func (hg *hostGroups) exact(w *walker, host string, lower []byte) {
	if hg.byName != nil {
		if g := hg.byName[string(lower)]; g != nil {
			w.walk(g)
		}
		return
	}
	for i, name := range hg.names {
		if len(host) == len(name) && hasLowerSuffix(host, name) {
			w.walk(hg.groups[i])
			return
		}
	}
}

// wild walks the group of each wildcard suffix of the host: from a dot
// on, with at least one character before it.
func (hg *hostGroups) wild(w *walker, host string, lower []byte) {
	if hg.byName != nil {
		for _, n := range hg.lens {
			if n >= len(lower) {
				return
			}
			if s := lower[len(lower)-n:]; s[0] == '.' {
				if g := hg.byName[string(s)]; g != nil {
					w.walk(g)
				}
			}
		}
		return
	}
	for i, suffix := range hg.names {
		if len(host) > len(suffix) && hasLowerSuffix(host, suffix) {
			w.walk(hg.groups[i])
		}
	}
}

// hasLowerSuffix reports whether s ends with suffix (in lower case),
// ASCII case-insensitive, as asciiEqualFold compares. It compares from
// the end: host names differ there most.
func hasLowerSuffix(s, suffix string) bool {
	if len(s) < len(suffix) {
		return false
	}
	s = s[len(s)-len(suffix):]
	for i := len(suffix) - 1; i >= 0; i-- {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != suffix[i] {
			return false
		}
	}
	return true
}

// walker is one request's way through the groups of its host: the best
// (lowest) rule index so far, and the lists of costly rules put aside.
type walker struct {
	rules        []*Rule
	method, path string
	best         int32
	// pending are lists of regexp or linear rules met on the way, tried
	// once every group is walked (a list met when pending is full is tried
	// at once).
	pending  [8]*[]int32
	npending int
}

// walk goes down g's tree along the path, keeping the lowest index below
// best of a prefix or exact rule matching, and putting aside the regexps
// met on the way and g's linear rules.
func (w *walker) walk(g *group) {
	w.putAside(&g.linear)
	n := &g.root
	rest := w.path[1:]
	for {
		w.best = firstByMethod(n.prefix, w.rules, w.method, w.best)
		w.putAside(&n.regex)
		if rest == "" {
			w.best = firstByMethod(n.exact, w.rules, w.method, w.best)
			return
		}
		// Segments are short: a loop beats IndexByte's call.
		i := 0
		for i < len(rest) && rest[i] != '/' {
			i++
		}
		seg := rest[:i]
		if i < len(rest) {
			rest = rest[i+1:]
		} else {
			rest = ""
		}
		if n = n.next(seg); n == nil {
			return
		}
	}
}

// putAside keeps a list of costly rules for later, unless none of them
// can come before the best rule so far.
func (w *walker) putAside(list *[]int32) {
	switch {
	case len(*list) == 0 || (*list)[0] >= w.best:
	case w.npending < len(w.pending):
		w.pending[w.npending] = list
		w.npending++
	default:
		w.best = w.try(*list)
	}
}

// costly tries the rules put aside, and returns the best index.
func (w *walker) costly() int32 {
	for _, list := range w.pending[:w.npending] {
		w.best = w.try(*list)
	}
	return w.best
}

// try returns the lowest index below best of a rule of list matching,
// or best.
func (w *walker) try(list []int32) int32 {
	for _, i := range list {
		if i >= w.best {
			break
		}
		if r := w.rules[i]; r.methodMatches(w.method) && r.pathMatches(w.path) {
			return i
		}
	}
	return w.best
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

// containsFold is strings.Contains, ASCII case-insensitive. A byte of sub
// without case (".", "/", a digit) is looked for with IndexByte, and sub
// compared around each one found: an unanchored (?i) regexp's literal is
// looked for in every request's path.
func containsFold(s, sub string) bool {
	j := 0 // sub[j] has no case
	for j < len(sub) && ('a' <= sub[j]|0x20 && sub[j]|0x20 <= 'z') {
		j++
	}
	last := len(s) - len(sub) // the last place sub may start
	if j == len(sub) {
		for i := 0; i <= last; i++ {
			if asciiEqualFold(s[i:i+len(sub)], sub) {
				return true
			}
		}
		return false
	}
	for i := 0; i <= last; i++ {
		k := strings.IndexByte(s[i+j:last+j+1], sub[j])
		if k < 0 {
			return false
		}
		i += k
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
