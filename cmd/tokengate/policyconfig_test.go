package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/policy"
)

// policyIssuers are the issuers the policy fixtures name: FusionAuth's roles
// claim (the default) and Keycloak's realm roles.
const policyIssuers = `
issuers:
  - {name: fusionauth, issuer: https://auth.example.com, audiences: [3c219e58-ed0e-4b18-ad48-f4f92793ae32, partner-portal],
     hmac_secret: 0123456789abcdef0123456789abcdef}
  - {name: keycloak, issuer: https://kc.example.com/realms/acme, audiences: [api], roles_claim: realm_access.roles,
     hmac_secret: 0123456789abcdef0123456789abcdef}
claim_headers: {x-auth-tenant: tid}
`

// loadPolicyConfig loads a configuration file (written to a temp dir) with
// the fixtures' issuers and body.
func loadPolicyConfig(t *testing.T, body string) (settings, string, error) {
	t.Helper()
	p := writeConfig(t, policyIssuers+body)
	s, err := loadConfigFile(p, noEnv)
	return s, p, err
}

// TestPolicyFixturesValid: every valid fixture, one per feature, loads as a
// policy file.
func TestPolicyFixturesValid(t *testing.T) {
	files, err := filepath.Glob("testdata/policy/valid/*.yaml")
	if err != nil || len(files) < 13 {
		t.Fatalf("valid fixtures: %v, %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			s, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", abs))
			if err != nil {
				t.Fatalf("does not load: %v", err)
			}
			if s.policy == nil || s.policy.set == nil || s.policy.file != abs || s.policy.rules == 0 {
				t.Fatalf("policy settings: got %+v", s.policy)
			}
		})
	}
}

var wantComment = regexp.MustCompile(`^# want: (.+)\n`)

// TestPolicyFixturesInvalid: each invalid fixture is one problem. Its error
// names the file and the line (the one marked "# <- error") and says what
// the first line's "# want:" says.
func TestPolicyFixturesInvalid(t *testing.T) {
	files, err := filepath.Glob("testdata/policy/invalid/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("invalid fixtures: %v, %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(abs)
			if err != nil {
				t.Fatal(err)
			}
			m := wantComment.FindSubmatch(data)
			if m == nil {
				t.Fatal(`the first line must be "# want: <substring>"`)
			}
			want := string(m[1])
			wantLine := 0
			for i, l := range strings.Split(string(data), "\n") {
				if strings.Contains(l, "# <- error") {
					wantLine = i + 1
				}
			}
			if wantLine == 0 {
				t.Fatal(`no line is marked "# <- error"`)
			}
			_, _, err = loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", abs))
			if err == nil {
				t.Fatal("loads; want an error")
			}
			prefix := fmt.Sprintf("%s:%d: policies.", abs, wantLine)
			found := false
			for l := range strings.SplitSeq(err.Error(), "\n") {
				if strings.HasPrefix(l, prefix) && strings.Contains(l, want) {
					found = true
				}
			}
			if !found {
				t.Errorf("got\n%v\nwant a line starting %q with %q", err, prefix, want)
			}
		})
	}
}

// TestPolicyInlineErrorsNameFileLineAndRule: problems of inline policies name
// the configuration file, the line, the path under policy. and the rule;
// all of them at once.
func TestPolicyInlineErrorsNameFileLineAndRule(t *testing.T) {
	body := `
policy:
  policies:
    default:
      - name: health
        match: {path: /healthz}
        access: public
      - name: orders-write
        match: {path_prefix: /orders}
        require:
          roles: {any_of: [admin]}
          when: 'claims.tid + 1'
      - name: internal
        match:
          path_regex: '(['
        access: deny
`
	_, p, err := loadPolicyConfig(t, body)
	if err == nil {
		t.Fatal("loads; want errors")
	}
	text := string(must(os.ReadFile(p)))
	lineOfText := func(s string) int {
		for i, l := range strings.Split(text, "\n") {
			if strings.Contains(l, s) {
				return i + 1
			}
		}
		t.Fatalf("%q not in the config", s)
		return 0
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: policy.policies.default[1].require.when: ", p, lineOfText("when:")),
		`rule "orders-write"`,
		fmt.Sprintf("%s:%d: policy.policies.default[2].match.path_regex: ", p, lineOfText("path_regex:")),
		`(rule "internal")`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got\n%v\nwant %q", err, want)
		}
	}
}

// TestPolicyInlineDecodeProblems: an unknown key in an inline rule is
// reported with its path and line, as every other key of the file is.
func TestPolicyInlineDecodeProblems(t *testing.T) {
	_, err := loadConfig(strings.NewReader(policyIssuers+`
policy:
  policies:
    default:
      - name: health
        match: {path: /healthz, verb: GET}
        access: public
`), noEnv)
	if err == nil || !strings.Contains(err.Error(), "policy.policies.default[0].match.verb: unknown key (line 13)") {
		t.Errorf("got %v, want the unknown key with its path and line", err)
	}
}

// TestPolicyNotConfigured: without policies or a file there is no policy,
// whatever unmatched says.
func TestPolicyNotConfigured(t *testing.T) {
	s, err := loadConfig(strings.NewReader(policyIssuers+"policy: {unmatched: authenticated}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if s.policy != nil {
		t.Errorf("got a policy %+v, want none", s.policy)
	}
}

// TestPolicyOptions: unmatched, the issuers (roles_claim defaults to roles)
// and the claim headers reach the policy options.
func TestPolicyOptions(t *testing.T) {
	s, err := loadConfig(strings.NewReader(policyIssuers+`
policy:
  unmatched: authenticated
  policies:
    default: [{name: health, match: {path: /healthz}, access: public}]
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	o := s.policy.base
	if o.Unmatched != policy.UnmatchedAuthenticated || o.ClaimHeaders["x-auth-tenant"] != "tid" || len(o.Issuers) != 2 {
		t.Fatalf("options: got %+v", o)
	}
	if got := o.Issuers[0]; got != (policy.IssuerInfo{Name: "fusionauth", Iss: "https://auth.example.com", RolesClaim: "roles"}) {
		t.Errorf("issuer 0: got %+v", got)
	}
	if got := o.Issuers[1].RolesClaim; got != "realm_access.roles" {
		t.Errorf("issuer 1's roles claim: got %q", got)
	}
	if s.policy.file != "" || s.policy.rules != 1 || len(s.policy.names) != 1 {
		t.Errorf("settings: got %+v", s.policy)
	}
}

// TestPolicyKeyProblems: the policy keys' own problems, every one at once.
func TestPolicyKeyProblems(t *testing.T) {
	_, err := loadConfig(strings.NewReader(policyIssuers+`
policy:
  file: policy.yaml
  unmatched: allow
  poll_interval: 1ms
  policies:
    default: [{name: health, match: {path: /healthz}, access: public}]
`), noEnv)
	for _, want := range []string{
		"policy.unmatched: want deny or authenticated",
		"policy.poll_interval: must be at least 100ms",
		"policy: give file or policies, not both",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

// TestPolicyFileRelativeToConfig: a relative policy.file is next to the
// configuration file, wherever tokengate was started; a missing one is a
// startup error naming it.
func TestPolicyFileRelativeToConfig(t *testing.T) {
	p := writeConfig(t, policyIssuers+"policy: {file: policy.yaml}\n")
	dir := filepath.Dir(p)
	_, err := loadConfigFile(p, noEnv)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "policy.yaml")) {
		t.Fatalf("without the file: got %v, want an error naming it", err)
	}
	writeFile(t, filepath.Join(dir, "policy.yaml"), "policies:\n  default: [{name: health, match: {path: /healthz}, access: public}]\n")
	s, err := loadConfigFile(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if s.policy.file != filepath.Join(dir, "policy.yaml") {
		t.Errorf("file: got %q", s.policy.file)
	}
	if rt := s.policy.set.Route("", &policy.Request{Path: "/healthz", Method: "GET"}); rt.Rule() == nil || rt.Rule().Name() != "health" {
		t.Errorf("the file's rules are not in force")
	}
}

// TestPolicyFileEveryProblemAtStart: a policy file with several problems
// stops the start and lists each, by file and line.
func TestPolicyFileEveryProblemAtStart(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "policy.yaml")
	writeFile(t, f, `policies:
  default:
    - name: a
      match: {path: /a}
      access: open
    - name: b
      match: {path_regex: '(['}
    - name: c
      match: {path: /c}
      bogus: 1
`)
	_, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", f))
	if err == nil {
		t.Fatal("loads; want errors")
	}
	for _, want := range []string{f + ":10: policies.default[2].bogus: unknown key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got\n%v\nwant %q", err, want)
		}
	}
	// Decoding problems come first; once the file reads, every compile
	// problem is listed.
	writeFile(t, f, `policies:
  default:
    - name: a
      match: {path: /a}
      access: open
    - name: b
      match: {path_regex: '(['}
`)
	_, _, err = loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", f))
	for _, want := range []string{
		f + ":5: policies.default[0].access: ",
		f + ":7: policies.default[1].match.path_regex: ",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got\n%v\nwant %q", err, want)
		}
	}
}

// TestLineOf: a path not recorded is placed on its nearest recorded parent.
func TestLineOf(t *testing.T) {
	lines := map[string]int{"policies": 1, "policies.de.fault": 2, "policies.de.fault[0]": 3, "policies.de.fault[0].require.issuers": 7}
	for path, want := range map[string]int{
		"policies.de.fault[0].require.issuers[1]": 7,
		"policies.de.fault[0].match":              3,
		"policies.de.fault":                       2,
		"other":                                   0,
	} {
		if got := lineOf(lines, path); got != want {
			t.Errorf("lineOf(%q): got %d, want %d", path, got, want)
		}
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPolicyRuleFieldsReachTheEngine: every key of a rule arrives in its
// RuleSpec; forward_token absent is true, false is false.
func TestPolicyRuleFieldsReachTheEngine(t *testing.T) {
	s, err := loadConfig(strings.NewReader(policyIssuers+`
policy:
  policies:
    default:
      - name: docs
        match: {host: "*.example.com", path_prefix: /docs, methods: [get]}
        access: public
        reject_invalid: true
      - name: legacy
        match: {path_regex: '/legacy/[a-z]+'}
        forward_token: false
        headers: {x-tenant: tid}
      - name: api
        match: {path_prefix: /api}
        shadow: true
        require: {issuers: [keycloak], audiences: [api], scopes: {all_of: [a], any_of: [b, c]}, roles: {any_of: [r]}, when: 'claims.tid == "acme"'}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	set := s.policy.set
	route := func(host, path, method string) *policy.Rule {
		rt := set.Route("", &policy.Request{Host: host, Path: path, Method: method})
		return rt.Rule()
	}
	if r := route("a.example.com:443", "/docs/x", "GET"); r == nil || r.Name() != "docs" || r.Access() != policy.AccessPublic ||
		!r.RejectInvalid() || !r.ForwardToken() {
		t.Errorf("docs: got %+v", r)
	}
	if r := route("a.example.com", "/docs/x", "POST"); r != nil {
		t.Errorf("docs is GET only; POST got %v", r.Name())
	}
	if r := route("", "/legacy/abc", "GET"); r == nil || r.Name() != "legacy" || r.ForwardToken() || !r.HasHeaders() {
		t.Errorf("legacy: got %+v", r)
	}
	if got := set.HeaderNames(); len(got) != 1 || got[0] != "x-tenant" {
		t.Errorf("header names: got %v", got)
	}
	steps, _, _ := set.Trace("", &policy.Request{Path: "/api/x", Method: "GET"}, nil)
	if last := steps[len(steps)-1]; last.Rule != "api" || !last.Shadow || !last.Matched || !set.NeedsClaims() {
		t.Errorf("api: steps %+v, needs claims %v", steps, set.NeedsClaims())
	}
}

// TestPolicyFileDecoder: the policy file is read by the configuration's
// decoder: anchors, aliases and merge keys work, a key other than policies
// and a second document are problems with their lines.
func TestPolicyFileDecoder(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "policy.yaml")
	writeFile(t, f, `policies:
  default:
    - &health {name: health, match: {path: /healthz}, access: public}
    - &orders
      name: orders
      match: {path_prefix: /orders}
      require: {roles: {any_of: [clerk]}}
  partner-api:
    - *health
    - <<: *orders
      name: partner-orders
      require: {roles: {any_of: [partner]}}
`)
	s, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", f))
	if err != nil {
		t.Fatal(err)
	}
	rt := s.policy.set.Route("partner-api", &policy.Request{Path: "/orders/1", Method: "GET"})
	if r := rt.Rule(); r == nil || r.Name() != "partner-orders" {
		t.Errorf("partner-api /orders/1: got %v", r)
	}
	if s.policy.rules != 4 {
		t.Errorf("rules: got %d, want 4", s.policy.rules)
	}
	writeFile(t, f, "policies:\n  default: [{name: health, match: {path: /healthz}, access: public}]\nissuers: []\n---\npolicies: {}\n")
	_, _, err = loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", f))
	for _, want := range []string{f + ":3: issuers: unknown key", f + ":4: (the whole file): a second YAML document"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got\n%v\nwant %q", err, want)
		}
	}
}

// TestPolicyAliasBomb: a small file whose aliases expand to tens of
// thousands of rules is refused, quickly, with a reason.
func TestPolicyAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("policies:\n  p0: &rules\n")
	for i := range 200 {
		fmt.Fprintf(&b, "    - {name: r%d, match: {path_prefix: /r%d}, require: {when: 'claims.sub == \"x\"'}}\n", i, i)
	}
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&b, "  p%d: *rules\n", i)
	}
	file := filepath.Join(t.TempDir(), "bomb.yaml")
	writeFile(t, file, b.String())
	_, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", file))
	if err == nil || !strings.Contains(err.Error(), "aliases expand the file") {
		t.Errorf("got %v, want the aliases refused", err)
	}
}

// TestPolicyMergeKeyBomb: merge keys of merge keys are aliases too: a file
// of a few hundred bytes that would expand a billionfold is refused.
func TestPolicyMergeKeyBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x0: &m0 {a: 1}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x%d: &m%d {<<: [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*m%d", i-1)
		}
		b.WriteString("]}\n")
	}
	b.WriteString("policies:\n  default:\n    - {<<: *m9, name: r, match: {path: /r}}\n")
	file := filepath.Join(t.TempDir(), "bomb.yaml")
	writeFile(t, file, b.String())
	done := make(chan error, 1)
	go func() { _, _, err := loadPolicyConfig(t, fmt.Sprintf("policy: {file: %q}\n", file)); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "aliases expand the file") {
			t.Errorf("got %v, want the merges refused", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("still expanding after a minute")
	}
}

// TestMergeOfEmptyMappingsIsCounted: merging an empty mapping costs budget
// too; a merge list of thousands of merge lists of thousands is refused.
func TestMergeOfEmptyMappingsIsCounted(t *testing.T) {
	const k = 4000
	var b strings.Builder
	b.WriteString("x: &e {}\ny: &m\n  <<: [")
	b.WriteString(strings.TrimSuffix(strings.Repeat("*e, ", k), ", "))
	b.WriteString("]\nz:\n  <<: [")
	b.WriteString(strings.TrimSuffix(strings.Repeat("*m, ", k), ", "))
	b.WriteString("]\n")
	var dst map[string]map[string]string
	problems, err := decodeYAML([]byte(b.String()), &dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) == 0 || !strings.Contains(problems[0].Error(), "aliases expand the file") {
		t.Errorf("problems %v, want the merges refused", problems)
	}
}
