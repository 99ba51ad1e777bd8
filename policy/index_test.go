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
// from small alphabets so that rules overlap and shadow each other.

var (
	genSegments = []string{"a", "b", "c", "ab", "1", "22", "b2", "c1"}
	genHosts    = []string{"", "", "", "x.example.com", "y.example.com", "*.example.com", "*.b.example.com", "example.com"}
	genMethods  = [][]string{nil, nil, {"GET"}, {"post", "PUT"}}
	genRegexes  = []string{
		`/a/[0-9]+`, `^/a/b.*`, `.*/c`, `/(a|b)/c`, `(?i)/A/b`, `/a/b/?`, `/ab/[a-c]+/.*`,
		`/[ab]`, `/1/22/`, `/c(/.*)?`, `.*`, `/a/b/c|/b`, `/22/.*/1`, `/a/b[0-9c]*`, `/c[0-9]*/.*`, `/a/b2?/c1?`,
	}
	genReqHosts = []string{"", "x.example.com", "X.Example.COM:8080", "y.example.com", "a.b.example.com", "example.com",
		"b.example.com", "z.x.example.com.", "other.org", "[::1]:80", "badexample.com", ".example.com"}
	genReqMethods = []string{"GET", "get", "POST", "Put", "DELETE"}
)

func genPath(r *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteByte('/')
		b.WriteString(genSegments[r.IntN(len(genSegments))])
	}
	if b.Len() == 0 || r.IntN(4) == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

func genRules(r *rand.Rand, n int) []policy.RuleSpec {
	rules := make([]policy.RuleSpec, n)
	accesses := []string{"", "public", "deny", "authenticated"}
	for i := range rules {
		m := policy.MatchSpec{Host: genHosts[r.IntN(len(genHosts))], Methods: genMethods[r.IntN(len(genMethods))]}
		switch r.IntN(5) {
		case 0:
			m.Path = genPath(r, r.IntN(3))
		case 1, 2:
			m.PathPrefix = genPath(r, r.IntN(3))
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

func genRequestPath(r *rand.Rand) string {
	p := genPath(r, r.IntN(5))
	switch r.IntN(8) {
	case 0:
		p = "/" + p // a double slash
	case 1:
		p += "?q=/a"
	case 2:
		p += "/../" + genSegments[r.IntN(len(genSegments))]
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
	r := rand.New(rand.NewPCG(1, 2))
	for set := range 200 {
		rules := genRules(r, 1+r.IntN(40))
		s, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": rules}})
		if err != nil {
			t.Fatalf("set %d: %v", set, err)
		}
		for range 200 {
			checkAgainstTrace(t, s, &policy.Request{
				Host:   genReqHosts[r.IntN(len(genReqHosts))],
				Method: genReqMethods[r.IntN(len(genReqMethods))],
				Path:   genRequestPath(r),
			})
		}
	}
}

// FuzzRouteAgreesWithTrace: for any request, the index and the linear
// scan choose the same rule.
//
//	go test -run '^$' -fuzz FuzzRouteAgreesWithTrace -fuzztime 30s ./policy
func FuzzRouteAgreesWithTrace(f *testing.F) {
	var sets []*policy.Set
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		s, err := policy.Compile(policy.Options{Policies: map[string][]policy.RuleSpec{"default": genRules(r, 30)}})
		if err != nil {
			f.Fatal(err)
		}
		sets = append(sets, s)
	}
	f.Add(uint8(0), "x.example.com", "GET", "/a/b")
	f.Add(uint8(1), "A.B.example.com:1", "post", "/ab/../c//1?x")
	f.Add(uint8(2), "", "PUT", "/a/1/")
	f.Fuzz(func(t *testing.T, set uint8, host, method, path string) {
		checkAgainstTrace(t, sets[int(set)%len(sets)], &policy.Request{Host: host, Method: method, Path: path})
	})
}
