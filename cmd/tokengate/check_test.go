package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// checkRig is an issuer serving its JWKS over HTTP, a configuration naming
// it with a route policy, and a token it signed.
type checkRig struct {
	iss    *tokentest.Issuer
	config string
	store  string // the embedded store's path (absent until made)
	token  string
	jti    string
}

const checkPolicyYAML = `
policy:
  policies:
    default:
      - name: health
        match: {path: /healthz}
        access: public
      - name: orders-admin-shadow
        match: {path_prefix: /orders}
        shadow: true
        require: {roles: {any_of: [superuser]}}
      - name: orders-read
        match: {path_prefix: /orders, methods: [GET]}
        require:
          issuers: [idp]
          scopes: {all_of: ["orders:read"]}
      - name: admin
        match: {path_prefix: /admin}
        require: {roles: {any_of: [superuser]}}
      - name: tenant
        match: {path_prefix: /tenants}
        require: {when: 'claims.tid == "acme"'}
      - name: internal
        match: {path_prefix: /internal}
        access: deny
`

func newCheckRig(t *testing.T, withPolicy bool) *checkRig {
	t.Helper()
	r := &checkRig{iss: tokentest.NewServer(t, "api")}
	r.store = filepath.Join(t.TempDir(), "tokengate.db")
	body := fmt.Sprintf(`
issuers: [{name: idp, issuer: %q, audiences: [api]}]
storage: {path: %q}
`, r.iss.URL, r.store)
	if withPolicy {
		body += checkPolicyYAML
	}
	r.config = writeConfig(t, body)
	c := r.iss.Claims("alice", time.Hour)
	c["scope"] = "orders:read profile"
	c["roles"] = []any{"clerk"}
	c["tid"] = "globex"
	r.jti = c["jti"].(string)
	var err error
	if r.token, err = r.iss.Sign(c, nil); err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs tokengate check with args (after --config) and the token on
// stdin; it returns stdout, stderr and the exit status.
func (r *checkRig) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := check(t.Context(), append([]string{"--config", r.config}, args...), cliIO{
		getenv: noEnv, stdin: strings.NewReader(r.token + "\n"), stdout: &stdout, stderr: &stderr})
	code := 0
	if err != nil {
		code = 1
		var ec *exitCode
		if errors.As(err, &ec) {
			code = ec.code
		}
		if ec == nil || ec.err != nil {
			stderr.WriteString(err.Error())
		}
	}
	for _, out := range []string{stdout.String(), stderr.String()} {
		if strings.Contains(out, r.token) || strings.Contains(out, strings.Split(r.token, ".")[2]) {
			t.Fatalf("the token appears in the output:\n%s", out)
		}
	}
	return stdout.String(), stderr.String(), code
}

func (r *checkRig) json(t *testing.T, args ...string) (checkResult, int) {
	t.Helper()
	out, errOut, code := r.run(t, append(args, "--json")...)
	var res checkResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s\nstderr: %s", err, out, errOut)
	}
	return res, code
}

// TestCheckAllow: a token meeting the route's rule is allowed (exit 0), and
// the explanation names the issuer, the key, the store, the rules tried.
func TestCheckAllow(t *testing.T) {
	r := newCheckRig(t, true)
	out, errOut, code := r.run(t, "--token", "-", "--method", "get", "--path", "/orders/7?x=1", "--host", "api.example.com")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{
		"valid: issuer idp", fmt.Sprintf("key %q (RS256)", r.iss.KID()), `subject "alice"`,
		"scopes orders:read profile; roles clerk",
		"revocation:", "no embedded store at " + r.store,
		`1. "health"`, "no match (path)",
		`2. "orders-admin-shadow"`, "shadow, matched: forbidden (roles not met) (not deciding)",
		`3. "orders-read"`, "matched: allow",
		`ALLOW (200 allowed) by rule "orders-read"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckDeny: a requirement not met is a deny (exit 1), and --json says
// which rule and which requirement.
func TestCheckDeny(t *testing.T) {
	r := newCheckRig(t, true)
	res, code := r.json(t, "--token", "-", "--path", "/admin/users")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if res.Decision != "deny" || res.Status != 403 || res.Reason != "forbidden" {
		t.Errorf("decision: got %s %d %s, want deny 403 forbidden", res.Decision, res.Status, res.Reason)
	}
	if res.Policy == nil || res.Policy.Rule != "admin" || res.Policy.Failed != "roles" || res.Policy.Access != "authenticated" {
		t.Fatalf("policy: got %+v", res.Policy)
	}
	if n := len(res.Policy.Steps); n != 4 || res.Policy.Steps[3].Outcome != "forbidden" || res.Policy.Steps[0].Mismatch != "path" {
		t.Errorf("steps: got %+v", res.Policy.Steps)
	}
	if tok := res.Token; tok == nil || !tok.Valid || tok.Issuer != "idp" || tok.Iss != r.iss.URL || tok.KID != r.iss.KID() ||
		tok.Alg != "RS256" || tok.Subject != "alice" || tok.ExpiresAt == nil {
		t.Errorf("token: got %+v", res.Token)
	}
	if res.Revocation == nil || res.Revocation.Checked || res.Revocation.Store != "embedded" || res.Revocation.Error == "" {
		t.Errorf("revocation: got %+v, want not checked (no store yet), with the reason", res.Revocation)
	}

	// A when that does not hold, and a route no rule matches.
	res, code = r.json(t, "--token", "-", "--path", "/tenants/acme")
	if code != 1 || res.Reason != "forbidden" || res.Policy.Failed != "when" {
		t.Errorf("when: exit %d, got %+v %+v", code, res, res.Policy)
	}
	res, code = r.json(t, "--token", "-", "--path", "/elsewhere")
	if code != 1 || res.Reason != "route_unmatched" || res.Policy.Rule != "" {
		t.Errorf("unmatched: exit %d, got %+v %+v", code, res, res.Policy)
	}
	res, code = r.json(t, "--token", "-", "--path", "/orders", "--policy", "partner-api")
	if code != 1 || res.Reason != "policy_unknown" {
		t.Errorf("unknown policy: exit %d, got %+v", code, res)
	}
	res, code = r.json(t, "--token", "-", "--path", "/orders/%2e%2e/admin%2Fx")
	if code != 1 || res.Reason != "path_invalid" || res.Status != 400 {
		t.Errorf("encoded slash: exit %d, got %+v", code, res)
	}
}

// TestCheckWithoutToken: a public route needs none; an authenticated one is
// token_missing.
func TestCheckWithoutToken(t *testing.T) {
	r := newCheckRig(t, true)
	res, code := r.json(t, "--path", "/healthz")
	if code != 0 || res.Decision != "allow" || res.Reason != "anonymous" || res.Token != nil || res.Policy.Rule != "health" {
		t.Errorf("public: exit %d, got %+v, want allow anonymous (no identity), as the server answers", code, res)
	}
	res, code = r.json(t, "--path", "/orders")
	if code != 1 || res.Status != 401 || res.Reason != "token_missing" {
		t.Errorf("authenticated: exit %d, got %+v", code, res)
	}
}

// TestCheckRevoked: with the store readable, a revoked token is said to be
// revoked, a 401 on an authenticated route, and ignored on a public one.
func TestCheckRevoked(t *testing.T) {
	r := newCheckRig(t, true)
	if err := os.MkdirAll(filepath.Dir(r.store), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(r.store, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := st.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: r.iss.URL, Key: r.jti, ExpiresAt: now.Add(2 * time.Hour), Source: "admin", CreatedAt: now,
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	res, code := r.json(t, "--token", "-", "--path", "/orders/1")
	if code != 1 || res.Status != 401 || res.Reason != "token_revoked" {
		t.Errorf("exit %d, got %s %d %s; want 401 token_revoked", code, res.Decision, res.Status, res.Reason)
	}
	if rv := res.Revocation; rv == nil || !rv.Checked || !rv.Revoked {
		t.Errorf("revocation: got %+v", res.Revocation)
	}
	res, code = r.json(t, "--token", "-", "--path", "/healthz")
	if code != 0 || res.Decision != "allow" {
		t.Errorf("public route: exit %d, got %+v", code, res)
	}
	out, _, _ := r.run(t, "--token", "-", "--path", "/orders/1")
	if !strings.Contains(out, "REVOKED (embedded store)") {
		t.Errorf("stdout does not say revoked:\n%s", out)
	}
}

// TestCheckInvalidToken: a token that does not verify is a 401 with its
// reason; the token is never printed, not even in the error.
func TestCheckInvalidToken(t *testing.T) {
	r := newCheckRig(t, true)
	other, err := tokentest.New(r.iss.URL, "api") // same iss, keys never published
	if err != nil {
		t.Fatal(err)
	}
	if r.token, err = other.Mint("mallory", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	res, code := r.json(t, "--token", "-", "--path", "/orders/1")
	if code != 1 || res.Status != 401 || res.Token == nil || res.Token.Valid || res.Reason != res.Token.Reason || res.Token.Reason == "" {
		t.Errorf("exit %d, got %+v, token %+v", code, res, res.Token)
	}
	// A deny rule is 403 whatever the token, as the server answers.
	if res, code := r.json(t, "--token", "-", "--path", "/internal/x"); code != 1 || res.Status != 403 || res.Reason != "forbidden" {
		t.Errorf("deny rule: exit %d, got %+v", code, res)
	}
}

// TestCheckWithoutPolicy: without a route policy, a valid token is all it
// takes.
func TestCheckWithoutPolicy(t *testing.T) {
	r := newCheckRig(t, false)
	out, _, code := r.run(t, "--token", "-", "--path", "/anything")
	if code != 0 || !strings.Contains(out, "none configured") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	res, _ := r.json(t, "--token", "-", "--path", "/anything")
	if res.Policy != nil || res.Decision != "allow" {
		t.Errorf("got %+v", res)
	}
}

// TestCheckUsage: a usage or configuration problem exits 2.
func TestCheckUsage(t *testing.T) {
	r := newCheckRig(t, true)
	for _, args := range [][]string{
		{"--token", "-"},                  // no --path
		{"--path", "/x", "extra"},         // an argument
		{"--path", "/x", "--bogus"},       // a flag
		{"--path", "/x", "--token", "  "}, // an empty token
	} {
		if _, _, code := r.run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	bad := writeConfig(t, "issuers: []\n")
	err := check(t.Context(), []string{"--config", bad, "--path", "/x"}, cliIO{getenv: noEnv, stdin: strings.NewReader(""),
		stdout: &strings.Builder{}, stderr: &strings.Builder{}})
	var ec *exitCode
	if !errors.As(err, &ec) || ec.code != 2 || !strings.Contains(err.Error(), "at least one issuer") {
		t.Errorf("bad config: got %v, want exit 2 with the problem", err)
	}
}

// TestCheckKeysUnavailable: when the issuer's JWKS cannot be fetched, check
// cannot decide, says why, and does not allow.
func TestCheckKeysUnavailable(t *testing.T) {
	r := newCheckRig(t, true)
	r.iss.FailJWKS(true)
	res, code := r.json(t, "--token", "-", "--path", "/orders/1")
	if code != 1 || res.Status != 503 || res.Reason != "keys_unavailable" || res.Token == nil || res.Token.Error == "" {
		t.Errorf("exit %d, got %+v, token %+v", code, res, res.Token)
	}
	// As the server answers: a public route needs no keys, a deny rule
	// refuses without them.
	if res, code := r.json(t, "--token", "-", "--path", "/healthz"); code != 0 || res.Reason != "anonymous" {
		t.Errorf("public: exit %d, got %+v", code, res)
	}
	if res, code := r.json(t, "--token", "-", "--path", "/internal/x"); code != 1 || res.Status != 403 || res.Reason != "forbidden" {
		t.Errorf("deny: exit %d, got %+v", code, res)
	}
}

// TestCheckStoreUnreadable: a store that exists but cannot be read (a
// running tokengate holds the embedded store) leaves the token's revocation
// unknown: no allow, as a replica with stale revocations would not; a
// public route still lets the request on without identity.
func TestCheckStoreUnreadable(t *testing.T) {
	r := newCheckRig(t, true)
	if err := os.MkdirAll(filepath.Dir(r.store), 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := bolt.Open(r.store, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	res, code := r.json(t, "--token", "-", "--path", "/orders/7")
	if code != 1 || res.Status != 503 || res.Reason != "revocations_stale" || res.Revocation == nil || res.Revocation.Checked {
		t.Errorf("exit %d, got %+v, revocation %+v; want 503 revocations_stale", code, res, res.Revocation)
	}
	if res, code := r.json(t, "--token", "-", "--path", "/healthz"); code != 0 || res.Reason != "anonymous" {
		t.Errorf("public: exit %d, got %+v", code, res)
	}
}

// TestCheckLogoutRoute: on a logout route a valid token is allowed (the
// server revokes it and lets the request on), whatever the rule requires;
// a deny rule still refuses.
func TestCheckLogoutRoute(t *testing.T) {
	r := newCheckRig(t, true)
	r.config = writeConfig(t, strings.Replace(readFileString(t, r.config), "issuers:", "logout_routes: [{path_prefix: /admin/logout}, {path_prefix: /internal/logout}]\nissuers:", 1))
	res, code := r.json(t, "--token", "-", "--path", "/admin/logout")
	if code != 0 || res.Reason != "allowed" || !res.LogoutRoute {
		t.Errorf("logout route: exit %d, got %+v; want allowed on the logout route (the admin rule's roles do not apply)", code, res)
	}
	if res, code := r.json(t, "--token", "-", "--path", "/internal/logout"); code != 1 || res.Reason != "forbidden" {
		t.Errorf("logout route under a deny rule: exit %d, got %+v", code, res)
	}
}

func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCheckPublicLogoutRouteWithoutKeys: on a logout route under a public
// rule, a token that cannot be judged (its issuer's keys cannot be
// fetched) is 503, as the server answers: a logout is never let on unheld.
func TestCheckPublicLogoutRouteWithoutKeys(t *testing.T) {
	r := newCheckRig(t, true)
	r.config = writeConfig(t, strings.Replace(readFileString(t, r.config), "issuers:", "logout_routes: [{path_prefix: /healthz}]\nissuers:", 1))
	r.iss.FailJWKS(true)
	if res, code := r.json(t, "--token", "-", "--path", "/healthz"); code != 1 || res.Status != 503 || res.Reason != "keys_unavailable" {
		t.Errorf("exit %d, got %+v; want 503 keys_unavailable", code, res)
	}
}
