package policy_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/policy"
)

// The index (host groups, segment tree) must choose the rule a linear scan
// in order chooses. Trace is that scan, written without the index; these
// tests hold one to the other over generated rules and requests, drawn
// from small alphabets so that rules overlap and shadow each other. The
// many alphabet has more hosts, wildcard suffixes and segments than the
// index compares one by one (it hashes them).

// alphabet is what rules and requests are drawn from.
type alphabet struct {
	segments, hosts, reqHosts []string
	maxRules                  int
}

var (
	few = &alphabet{
		segments: []string{"a", "b", "c", "ab", "1", "22", "b2", "c1"},
		hosts:    []string{"", "", "", "x.example.com", "y.example.com", "*.example.com", "*.b.example.com", "example.com"},
		reqHosts: []string{"", "x.example.com", "X.Example.COM:8080", "y.example.com", "a.b.example.com", "example.com",
			"b.example.com", "z.x.example.com.", "other.org", "[::1]:80", "badexample.com", ".example.com"},
		maxRules: 40,
	}
	many = manyAlphabet()

	genMethods = [][]string{nil, nil, {"GET"}, {"post", "PUT"}}
	genRegexes = []string{
		`/a/[0-9]+`, `^/a/b.*`, `.*/c`, `/(a|b)/c`, `(?i)/A/b`, `/a/b/?`, `/ab/[a-c]+/.*`,
		`/[ab]`, `/1/22/`, `/c(/.*)?`, `.*`, `/a/b/c|/b`, `/22/.*/1`, `/a/b[0-9c]*`, `/c[0-9]*/.*`, `/a/b2?/c1?`,
	}
	genReqMethods = []string{"GET", "get", "POST", "Put", "DELETE"}
)

func manyAlphabet() *alphabet {
	a := &alphabet{
		segments: []string{"a", "b", "c", "ab", "1", "22", "b2", "c1"},
		hosts:    []string{"", "", "", "", "", "", "*.example.com", "*.b.example.com"},
		reqHosts: []string{"", "other.org", "example.com", "x.example.com", "[::1]:80"},
		maxRules: 160,
	}
	for i := range 14 {
		a.segments = append(a.segments, fmt.Sprintf("s%d", i))
		a.hosts = append(a.hosts, fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("*.w%d.example.com", i))
		a.reqHosts = append(a.reqHosts, fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("H%d.Example.COM:8080", i),
			fmt.Sprintf("x.w%d.example.com", i), fmt.Sprintf("A.B.W%d.example.com.", i), fmt.Sprintf("w%d.example.com", i))
	}
	return a
}

func genPath(r *rand.Rand, a *alphabet, n int) string {
	var b strings.Builder
	for range n {
		b.WriteByte('/')
		b.WriteString(a.segments[r.IntN(len(a.segments))])
	}
	if b.Len() == 0 || r.IntN(4) == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

func genRules(r *rand.Rand, a *alphabet, n int) []policy.RuleSpec {
	rules := make([]policy.RuleSpec, n)
	accesses := []string{"", "public", "deny", "authenticated"}
	for i := range rules {
		m := policy.MatchSpec{Host: a.hosts[r.IntN(len(a.hosts))], Methods: genMethods[r.IntN(len(genMethods))]}
		switch r.IntN(5) {
		case 0:
			m.Path = genPath(r, a, r.IntN(3))
		case 1, 2:
			m.PathPrefix = genPath(r, a, r.IntN(3))
		case 3:
			m.PathRegex = genRegexes[r.IntN(len(genRegexes))]
		}
		rules[i] = policy.RuleSpec{
			Name:   fmt.Sprintf("r%d", i),
			Match:  m,
			Access: accesses[r.IntN(len(accesses))],
			Shadow: r.IntN(6) == 0,
		}
		if rules[i].Access == "" && m.Host == "" && m.Path == "" && m.PathPrefix == "" && m.PathRegex == "" && len(m.Methods) == 0 {
			rules[i].Access = "deny" // not an empty rule
		}
	}
	return rules
}

func genRequestPath(r *rand.Rand, a *alphabet) string {
	p := genPath(r, a, r.IntN(5))
	switch r.IntN(8) {
	case 0:
		p = "/" + p // a double slash
	case 1:
		p += "?q=/a"
	case 2:
		p += "/../" + a.segments[r.IntN(len(a.segments))]
	case 3:
		p = strings.Replace(p, "a", "%61", 1)
	case 4:
		p = strings.Replace(p, "/", "/./", 1)
	}
	return p
}

// checkAgainstTrace fails t when Route and Trace disagree on req.
func checkAgainstTrace(t *testing.T, s *policy.Set, req *policy.Request) {
	t.Helper()
	steps, rt, _ := s.Trace("", req, nil)
	if rt.Status != policy.RouteOK {
		return
	}
	got := ""
	if rt.Rule() != nil {
		got = rt.Rule().Name()
	}
	if want := decidingStep(steps); got != want {
		t.Fatalf("%q %q %q (normalised %q): Route chose %q, the linear scan %q", req.Host, req.Method, req.Path, rt.Path(), got, want)
	}
	shadows := false
	for _, st := range steps {
		shadows = shadows || st.Shadow && st.Matched
	}
	if rt.HasShadows() != shadows {
		t.Fatalf("%q %q %q: HasShadows %v, the linear scan %v", req.Host, req.Method, req.Path, rt.HasShadows(), shadows)
	}
}

func TestRouteAgreesWithTrace(t *testing.T) {
	for name, a := range map[string]*alphabet{"few": few, "many": many} {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			for set := range 200 {
				rules := genRules(r, a, 1+r.IntN(a.maxRules))
				s, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": rules}})
				if err != nil {
					t.Fatalf("set %d: %v", set, err)
				}
				for range 200 {
					checkAgainstTrace(t, s, &policy.Request{
						Host:   a.reqHosts[r.IntN(len(a.reqHosts))],
						Method: genReqMethods[r.IntN(len(genReqMethods))],
						Path:   genRequestPath(r, a),
					})
				}
			}
		})
	}
}

// TestRouteAgreesWithTraceEdges: more regexp lists on the way than the
// walker puts aside (the rest are tried at once), and a host longer than
// the walker's buffer, among more hosts than it compares one by one.
func TestRouteAgreesWithTraceEdges(t *testing.T) {
	var rules []policy.RuleSpec
	for d := 12; d >= 1; d-- {
		rules = append(rules, policy.RuleSpec{Name: fmt.Sprintf("re%d", d), Access: "public",
			Match: policy.MatchSpec{PathRegex: strings.Repeat("/a", d) + "/.*z"}})
	}
	long := strings.Repeat("x23456789.", 23) + "long.example.com" // 246 bytes
	longer := strings.Repeat("Y23456789.", 3) + long              // too long for the buffer
	for i := range 12 {
		rules = append(rules,
			policy.RuleSpec{Name: fmt.Sprintf("h%d", i), Match: policy.MatchSpec{Host: fmt.Sprintf("h%d.example.com", i), PathPrefix: "/b"}},
			policy.RuleSpec{Name: fmt.Sprintf("w%d", i), Match: policy.MatchSpec{Host: fmt.Sprintf("*.w%d.example.com", i), PathPrefix: "/b"}})
	}
	rules = append(rules,
		policy.RuleSpec{Name: "long", Match: policy.MatchSpec{Host: long, PathPrefix: "/b"}},
		policy.RuleSpec{Name: "long-wild", Match: policy.MatchSpec{Host: "*.long.example.com", Path: "/b/c"}})
	s := compile(t, policy.Options{Policies: map[string][]policy.RuleSpec{"default": rules}})
	for _, req := range []*policy.Request{
		{Method: "GET", Path: strings.Repeat("/a", 12) + "/z"},
		{Method: "GET", Path: strings.Repeat("/a", 10) + "/z"},
		{Method: "GET", Path: strings.Repeat("/a", 14) + "/b/z"},
		{Host: strings.ToUpper(long) + ":443", Method: "GET", Path: "/b/c"},
		{Host: longer, Method: "GET", Path: "/b/c"},
		{Host: longer + ".:80", Method: "GET", Path: "/b/c/"},
		{Host: "H7.Example.com", Method: "GET", Path: "/b"},
		{Host: "x.W7.Example.com", Method: "GET", Path: "/b/"},
	} {
		checkAgainstTrace(t, s, req)
		if rt := s.Route("", req); rt.Rule() == nil {
			t.Errorf("%q %q: no rule chosen", req.Host, req.Path)
		}
	}
}

// FuzzRouteAgreesWithTrace: for any request, the index and the linear
// scan choose the same rule (sets 0 to 7 drawn from the few alphabet, 8 to
// 11 from the many).
//
//	go test -run '^$' -fuzz FuzzRouteAgreesWithTrace -fuzztime 30s ./policy
func FuzzRouteAgreesWithTrace(f *testing.F) {
	var sets []*policy.Set
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 12 {
		a, n := few, 30
		if i >= 8 {
			a, n = many, 120
		}
		s, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": genRules(r, a, n)}})
		if err != nil {
			f.Fatal(err)
		}
		sets = append(sets, s)
	}
	f.Add(uint8(0), "x.example.com", "GET", "/a/b")
	f.Add(uint8(1), "A.B.example.com:1", "post", "/ab/../c//1?x")
	f.Add(uint8(2), "", "PUT", "/a/1/")
	f.Add(uint8(8), "H3.example.com", "GET", "/s3/a")
	f.Add(uint8(9), "a.B.w5.example.com.:8443", "get", "/s1/s2/")
	f.Fuzz(func(t *testing.T, set uint8, host, method, path string) {
		checkAgainstTrace(t, sets[int(set)%len(sets)], &policy.Request{Host: host, Method: method, Path: path})
	})
}
