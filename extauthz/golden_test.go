package extauthz_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The golden files hold real tokens, so everything that goes into a token is
// fixed: the issuer's name, its key (Ed25519, whose signatures are
// deterministic, from a seed that is test data and nothing else), every
// claim, and the clock that judges them.
const (
	goldenIssuer = "https://issuer.example"
	goldenKID    = "golden-ed25519"
	// goldenDecisionID replaces the decision id, unique per process run,
	// in the answers before they are compared or written.
	goldenDecisionID = "normalised-decision-id"
)

var (
	goldenSeed = sha256.Sum256([]byte("tokengate golden files: test key, not a secret"))
	// goldenIssuedAt is the iat of the golden tokens; the server's and the
	// verifier's clock read one minute later, whatever the calendar says.
	goldenIssuedAt = time.Unix(1_900_000_000, 0).UTC()
	goldenNow      = goldenIssuedAt.Add(time.Minute)
)

// goldenEnv is a Check server set up for every answer the golden files
// cover: claim headers, a revocation index holding one revoked jti, a logout
// route whose revocation fails.
type goldenEnv struct {
	iss         *tokentest.Issuer
	verifier    *token.Verifier
	headers     *policy.HeaderMap
	revocations *storage.Index
	routes      *policy.LogoutRoutes
	introspect  *policy.IntrospectionRoutes
	policy      *policy.Set
}

// goldenPolicy is the route policy of the golden cases that have one.
func goldenPolicy(t *testing.T) *policy.Set {
	t.Helper()
	no := false
	set, err := policy.Compile(policy.Options{
		Unmatched: policy.UnmatchedDeny,
		Issuers:   []policy.IssuerInfo{{Name: "a", Iss: goldenIssuer}},
		Policies: map[string][]policy.RuleSpec{
			"default": {
				{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
				{Name: "admin", Match: policy.MatchSpec{PathPrefix: "/admin"}, Access: "deny"},
				{Name: "orders-write", Match: policy.MatchSpec{PathPrefix: "/orders", Methods: []string{"POST"}},
					Require: policy.Require{Scopes: policy.AnyAll{AllOf: []string{"orders:write"}}}},
				{Name: "orders", Match: policy.MatchSpec{PathPrefix: "/orders"},
					Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin", "clerk"}}},
					Headers: map[string]string{"x-auth-email": "email"}, ForwardToken: &no},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func newGoldenEnv(t *testing.T) *goldenEnv {
	t.Helper()
	e := &goldenEnv{iss: tokentest.NewServer(t, audience)}
	jwksURI := e.iss.URL + "/jwks.json"
	e.iss.URL = goldenIssuer // the iss claim; the keys stay on loopback
	if err := e.iss.UseKey(goldenKID, ed25519.NewKeyFromSeed(goldenSeed[:])); err != nil {
		t.Fatal(err)
	}
	var err error
	e.headers, err = policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles", "x-auth-tenant": "tid"})
	if err != nil {
		t.Fatal(err)
	}
	e.policy = goldenPolicy(t)
	e.revocations = storage.NewIndex()
	if _, err := e.revocations.Apply([]storage.Change{{Seq: 1, Op: storage.OpPut, Revocation: storage.Revocation{
		Kind: storage.KindToken, Issuer: goldenIssuer, Key: "jti-revoked", ExpiresAt: goldenNow.Add(2 * time.Hour),
	}}}); err != nil {
		t.Fatal(err)
	}
	e.verifier, err = token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: goldenIssuer, JWKSURI: jwksURI, Audiences: []string{audience},
			Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries: 100,
		Now:             func() time.Time { return goldenNow },
		Derive: extauthz.Derive(e.headers, e.revocations,
			policy.NewSubjects([]policy.IssuerInfo{{Name: "a", Iss: goldenIssuer}}, e.policy.NeedsClaims())),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.verifier.Refresh(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	e.routes, err = policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	e.introspect, err = policy.NewIntrospectionRoutes([]policy.IntrospectionRoute{{PathPrefix: "/oauth2/introspect"}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// server answers with revocations that are stale (beyond MaxStaleness) or
// fresh.
func (e *goldenEnv) server(t *testing.T, stale, logoutOK, withPolicy bool) *extauthz.Server {
	t.Helper()
	staleness := time.Duration(0)
	if stale {
		staleness = time.Hour
	}
	var logout extauthz.LogoutRevoker = failingLogout{}
	if logoutOK {
		logout = storedLogout{}
	}
	opts := extauthz.Options{
		Verifier: e.verifier, Headers: e.headers, Revocations: e.revocations,
		Staleness: func() time.Duration { return staleness }, MaxStaleness: time.Minute,
		LogoutRoutes: e.routes, Logout: logout, IntrospectionRoutes: e.introspect,
		Now: func() time.Time { return goldenNow },
	}
	if withPolicy {
		opts.Policy = func() *policy.Set { return e.policy }
	}
	return newServer(t, opts)
}

// claims are those of a valid golden token for user-1; change lets a case
// alter them (a nil value deletes the claim).
func goldenClaims(change map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": goldenIssuer, "aud": audience, "sub": "user-1", "jti": "jti-1",
		"iat": goldenIssuedAt.Unix(), "exp": goldenIssuedAt.Add(10 * time.Minute).Unix(),
	}
	for k, v := range change {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// goldenCase is one request and the reason its answer must carry, so that
// -update cannot bless a wrong answer.
type goldenCase struct {
	reason string
	stale  bool
	// logoutOK: the logout route's revocation succeeds (by default it fails).
	logoutOK bool
	path     string            // default /orders?id=1
	headers  map[string]string // besides x-request-id; authorization built from token
	token    func(t *testing.T, e *goldenEnv) string
	// introspect: a POST to /oauth2/introspect with the token in its form
	// body and the caller's client authentication in authorization, marked
	// by Envoy's introspection route (context_extensions).
	introspect bool
	// policy: the server has the golden route policy (goldenPolicy), and
	// names, when not empty, the policy in context_extensions.
	policy       bool
	policyName   string
	method, host string
}

func goldenCases() map[string]goldenCase {
	signed := func(change map[string]any, header map[string]any) func(*testing.T, *goldenEnv) string {
		return func(t *testing.T, e *goldenEnv) string { return mint(t, e.iss, goldenClaims(change), header) }
	}
	return map[string]goldenCase{
		"allowed": {
			reason: "allowed",
			token:  signed(map[string]any{"roles": []any{"admin", "billing"}, "tid": "tenant-1"}, nil),
		},
		// A client's own identity headers never reach the upstream: those the
		// token backs are overwritten, the others are removed.
		"allowed_spoofed_identity_headers": {
			reason: "allowed",
			headers: map[string]string{
				"x-auth-subject": "admin", "x-auth-token-id": "forged", "x-auth-issuer": "https://evil.example",
				"x-auth-roles": "superuser", "x-auth-tenant": "tenant-0",
			},
			token: signed(map[string]any{"jti": nil}, nil),
		},
		"token_missing":   {reason: "token_missing"},
		"token_malformed": {reason: "token_malformed", token: func(*testing.T, *goldenEnv) string { return "not-a-jwt" }},
		"token_invalid_signature": {
			reason: "token_invalid_signature",
			token: func(t *testing.T, e *goldenEnv) string {
				return swapSignature(mint(t, e.iss, goldenClaims(nil), nil),
					mint(t, e.iss, goldenClaims(map[string]any{"sub": "admin"}), nil))
			},
		},
		"token_expired": {
			reason: "token_expired",
			token: signed(map[string]any{
				"iat": goldenNow.Add(-20 * time.Minute).Unix(), "exp": goldenNow.Add(-time.Minute).Unix(),
			}, nil),
		},
		"token_not_yet_valid": {
			reason: "token_not_yet_valid",
			token:  signed(map[string]any{"nbf": goldenNow.Add(5 * time.Minute).Unix()}, nil),
		},
		"issuer_unknown": {
			reason: "issuer_unknown",
			token:  signed(map[string]any{"iss": "https://unknown.example"}, nil),
		},
		"audience_mismatch": {
			reason: "audience_mismatch",
			token:  signed(map[string]any{"aud": "someone-else"}, nil),
		},
		"algorithm_not_allowed": {
			reason: "algorithm_not_allowed",
			token: func(t *testing.T, _ *goldenEnv) string {
				return unsigned(t, map[string]any{"alg": "none", "typ": "JWT"}, goldenClaims(nil))
			},
		},
		"key_unknown": {
			reason: "key_unknown",
			token:  signed(nil, map[string]any{"kid": "no-such-key"}),
		},
		"token_lifetime_too_long": {
			reason: "token_lifetime_too_long",
			token:  signed(map[string]any{"exp": goldenIssuedAt.Add(2 * time.Hour).Unix()}, nil),
		},
		"token_type_invalid": {
			reason: "token_type_invalid",
			token:  signed(nil, map[string]any{"typ": "logout+jwt"}),
		},
		"claims_invalid": {
			reason: "claims_invalid",
			token:  signed(map[string]any{"exp": nil}, nil),
		},
		"token_revoked": {
			reason: "token_revoked",
			token:  signed(map[string]any{"jti": "jti-revoked"}, nil),
		},
		"revocations_stale": {
			reason: "revocations_stale",
			stale:  true,
			token:  signed(nil, nil),
		},
		// An identity header spelled with '_' reaches CGI-style upstreams as
		// the header itself: refused, whatever the token.
		"header_invalid": {
			reason:  "header_invalid",
			headers: map[string]string{"x_auth_subject": "admin"},
			token:   signed(nil, nil),
		},
		"logout_failed": {
			reason: "logout_failed",
			path:   "/logout",
			token:  signed(nil, nil),
		},
		// A revoked token still reaches the IdP on a logout route, with no
		// identity: every identity header and its authorization removed, and
		// no sub, jti or iss in the metadata.
		"logout_revoked": {
			reason:   "logout_revoked",
			path:     "/logout",
			logoutOK: true,
			headers:  map[string]string{"x-auth-subject": "admin", "cookie": "session=idp-session"},
			token:    signed(map[string]any{"jti": "jti-revoked", "roles": []any{"admin"}, "tid": "tenant-1"}, nil),
		},
		// RFC 7662: a revoked token in an introspection request's form body
		// is answered for the IdP, 200 {"active":false}.
		"introspection_inactive": {
			reason:     "introspection_inactive",
			introspect: true,
			token:      signed(map[string]any{"jti": "jti-revoked"}, nil),
		},
		// Route policy. A public route without a token: on, without
		// identity, spoofed identity headers removed.
		"anonymous": {
			reason: "anonymous", policy: true, path: "/public/docs",
			headers: map[string]string{"x-auth-subject": "admin"},
		},
		"forbidden": {reason: "forbidden", policy: true, path: "/admin/users", token: signed(nil, nil)},
		// A missing role is forbidden; the rule's own headers are not set.
		"forbidden_role": {
			reason: "forbidden", policy: true, path: "/orders/1",
			token: signed(map[string]any{"roles": []any{"viewer"}}, nil),
		},
		"insufficient_scope": {
			reason: "insufficient_scope", policy: true, method: "POST", path: "/orders",
			token: signed(map[string]any{"scope": "orders:read"}, nil),
		},
		// The rule sets its own header, and keeps the token from the
		// upstream (forward_token: false).
		"allowed_by_rule": {
			reason: "allowed", policy: true, path: "/orders/1",
			token: signed(map[string]any{"roles": []any{"clerk"}, "email": "a@example.com"}, nil),
		},
		"route_unmatched": {reason: "route_unmatched", policy: true, path: "/elsewhere", token: signed(nil, nil)},
		"policy_unknown": {
			reason: "policy_unknown", policy: true, policyName: "no-such-policy", path: "/public/docs",
		},
		"path_invalid": {reason: "path_invalid", policy: true, path: "/public/..%2Fadmin", token: signed(nil, nil)},
		// A valid one goes on to the IdP, without identity, its client
		// authentication untouched.
		"introspection_passed": {
			reason:     "introspection_passed",
			introspect: true,
			headers:    map[string]string{"x-auth-subject": "admin"},
			token:      signed(nil, nil),
		},
	}
}

func (c goldenCase) request(t *testing.T, e *goldenEnv) *authv3.CheckRequest {
	t.Helper()
	headers := map[string]string{"x-request-id": "req-1"}
	for k, v := range c.headers {
		headers[k] = v
	}
	body := ""
	switch {
	case c.introspect:
		headers["authorization"] = "Basic cmVzb3VyY2Utc2VydmVyOnNlY3JldA==" // resource-server:secret
		headers["content-type"] = "application/x-www-form-urlencoded"
		body = "token=" + c.token(t, e) + "&token_type_hint=access_token"
	case c.token != nil:
		headers["authorization"] = "Bearer " + c.token(t, e)
	}
	req := checkRequest(headers)
	if c.path != "" {
		req.Attributes.Request.Http.Path = c.path
	}
	if c.method != "" {
		req.Attributes.Request.Http.Method = c.method
	}
	if c.policyName != "" {
		req.Attributes.ContextExtensions = map[string]string{extauthz.PolicyKey: c.policyName}
	}
	if c.introspect {
		h := req.Attributes.Request.Http
		h.Method, h.Host, h.Path, h.Body = "POST", "auth.example.com", "/oauth2/introspect", body
		// Envoy's introspection route marks the request (envoy/envoy.yaml).
		req.Attributes.ContextExtensions = map[string]string{extauthz.RouteMarkerKey: extauthz.RouteMarkerIntrospection}
	}
	return req
}

// TestGolden runs each CheckRequest in testdata/ and compares the answer with
// its CheckResponse there. The requests are also rebuilt from goldenCases and
// must equal the files, so the files stay what this test describes.
// go test ./extauthz -update rewrites both.
func TestGolden(t *testing.T) {
	e := newGoldenEnv(t)
	cases := goldenCases()
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			reqFile := filepath.Join("testdata", name+".request.json")
			respFile := filepath.Join("testdata", name+".response.json")
			built := c.request(t, e)
			if *update {
				writeGolden(t, reqFile, built)
			}
			req := &authv3.CheckRequest{}
			readGolden(t, reqFile, req)
			if diff := cmp.Diff(built, req, protocmp.Transform()); diff != "" {
				t.Fatalf("%s is not the request this case builds (run go test ./extauthz -update) (-built +file):\n%s", reqFile, diff)
			}

			got, err := e.server(t, c.stale, c.logoutOK, c.policy).Check(t.Context(), req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			md := got.GetDynamicMetadata().GetFields()
			if id := md["decision_id"].GetStringValue(); id == "" {
				t.Errorf("no decision_id in the dynamic metadata")
			}
			md["decision_id"] = structpb.NewStringValue(goldenDecisionID)
			if r := md["reason"].GetStringValue(); r != c.reason {
				t.Errorf("reason = %q, want %q", r, c.reason)
			}
			if *update {
				writeGolden(t, respFile, got)
			}
			want := &authv3.CheckResponse{}
			readGolden(t, respFile, want)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("CheckResponse differs from %s (-want +got):\n%s", respFile, diff)
			}
		})
	}

	// Every reason a CheckRequest can produce has its golden pair. The
	// answers that are no CheckResponse (gRPC UNAVAILABLE: the issuer's keys
	// or the revocations never loaded) have none.
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.reason] = true
	}
	for _, r := range extauthz.Reasons() {
		if r == extauthz.ReasonRequestInvalid {
			// The HTTP endpoint's own: its golden file is TestGoldenHTTP's.
			if _, err := os.Stat(filepath.Join("testdata", "http", r.String()+".http")); err != nil {
				t.Errorf("reason %s has no HTTP golden file: %v", r, err)
			}
			continue
		}
		if !covered[r.String()] {
			t.Errorf("reason %s has no golden case", r)
		}
	}
}

// storedLogout stands in for a store that takes the logout's write.
type storedLogout struct{}

func (storedLogout) RevokeLogout(context.Context, *token.Identity, bool, bool, bool) error {
	return nil
}

func readGolden(t *testing.T, path string, m proto.Message) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./extauthz -update to create it)", err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// writeGolden writes m as indented protojson. protojson varies its
// whitespace on purpose; compacting and indenting again makes the file the
// same on every run.
func writeGolden(t *testing.T, path string, m proto.Message) {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
