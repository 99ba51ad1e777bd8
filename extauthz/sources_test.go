package extauthz_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// echoVerifier accepts any token and remembers the last one it was given,
// so that a test sees which token the server took from where.
type echoVerifier struct{ got string }

func (v *echoVerifier) Verify(_ context.Context, raw string) (*token.Identity, error) {
	v.got = raw
	return &token.Identity{Issuer: "https://issuer.example", Subject: "user-1", TokenID: "jti-1"}, nil
}

// sourcesReason checks one request against a server reading sources, and
// returns its reason and the token the verifier saw ("" if none).
func sourcesReason(t *testing.T, sources []extauthz.TokenSource, req *authv3.CheckRequest) (string, string) {
	t.Helper()
	v := &echoVerifier{}
	headers, err := policy.NewHeaderMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: v, Headers: headers, TokenSources: sources, MaxTokenBytes: 64})
	resp, err := srv.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
	if (reason == "allowed") != (codes.Code(resp.GetStatus().GetCode()) == codes.OK) {
		t.Fatalf("reason %q with status %v", reason, resp.GetStatus())
	}
	return reason, v.got
}

// TestTokenSources: the token is looked for in every configured source;
// whichever holds it, it is the one checked; two sources holding different
// tokens are token_malformed (an upstream may read the other one); the same
// token twice is fine. Each case runs with both encodings Envoy uses: the
// headers map (repeated headers joined with ",") and header_map
// (encode_raw_headers, one entry per header line).
func TestTokenSources(t *testing.T) {
	auth := []extauthz.TokenSource{{Header: "authorization"}}
	cookie := []extauthz.TokenSource{{Cookie: "app.at"}}
	bare := []extauthz.TokenSource{{Header: "x-access-token"}}
	all := []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}, {Header: "x-access-token"}}
	long := strings.Repeat("a", 65)
	tests := map[string]struct {
		sources []extauthz.TokenSource
		headers [][2]string
		reason  string
		token   string
		// joined, when set, is the reason and token with the headers map,
		// where a comma is where Envoy joined two header lines.
		joined *[2]string
	}{
		"default: authorization":              {nil, [][2]string{{"authorization", "Bearer tokA"}}, "allowed", "tokA", nil},
		"default: cookie ignored":             {nil, [][2]string{{"cookie", "app.at=tokA"}}, "token_missing", "", nil},
		"authorization":                       {auth, [][2]string{{"authorization", "Bearer tokA"}}, "allowed", "tokA", nil},
		"authorization only: cookie ignored":  {auth, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app.at=tokB"}}, "allowed", "tokA", nil},
		"cookie":                              {cookie, [][2]string{{"cookie", "app.at=tokA"}}, "allowed", "tokA", nil},
		"cookie among others":                 {cookie, [][2]string{{"cookie", "a=1; app.at=tokA; b=\"2\""}}, "allowed", "tokA", nil},
		"cookie quoted":                       {cookie, [][2]string{{"cookie", "app.at=\"tokA\""}}, "allowed", "tokA", nil},
		"cookie only: authorization ignored":  {cookie, [][2]string{{"authorization", "Bearer tokB"}, {"cookie", "app.at=tokA"}}, "allowed", "tokA", nil},
		"cookie absent":                       {cookie, [][2]string{{"cookie", "a=1; b=2"}}, "token_missing", "", nil},
		"cookie empty":                        {cookie, [][2]string{{"cookie", "app.at="}}, "token_missing", "", nil},
		"cookie name is a prefix":             {cookie, [][2]string{{"cookie", "app.att=tokA; xapp.at=tokB"}}, "token_missing", "", nil},
		"no cookie header":                    {cookie, nil, "token_missing", "", nil},
		"cookie named twice, same value":      {cookie, [][2]string{{"cookie", "app.at=tokA; app.at=tokA"}}, "allowed", "tokA", nil},
		"cookie named twice, different value": {cookie, [][2]string{{"cookie", "app.at=tokA; app.at=tokB"}}, "token_malformed", "", nil},
		"two cookie headers, different value": {cookie, [][2]string{{"cookie", "app.at=tokA"}, {"cookie", "app.at=tokB"}}, "token_malformed", "", nil},
		"two cookie headers, one token":       {cookie, [][2]string{{"cookie", "a=1"}, {"cookie", "app.at=tokA"}}, "allowed", "tokA", nil},
		"cookie without space":                {cookie, [][2]string{{"cookie", "a=1;app.at=tokA"}}, "token_malformed", "", nil},
		"cookie trailing separator":           {cookie, [][2]string{{"cookie", "app.at=tokA; "}}, "token_malformed", "", nil},
		"cookie trailing semicolon":           {cookie, [][2]string{{"cookie", "app.at=tokA;"}}, "token_malformed", "", nil},
		"cookie pair without =":               {cookie, [][2]string{{"cookie", "app.at; app.at=tokA"}}, "token_malformed", "", nil},
		"cookie value with space":             {cookie, [][2]string{{"cookie", "app.at=tok A"}}, "token_malformed", "", nil},
		"cookie value with comma":             {cookie, [][2]string{{"cookie", "app.at=tokA,x=1"}}, "token_malformed", "", &[2]string{"allowed", "tokA"}},
		"cookie value with commas, differing": {cookie, [][2]string{{"cookie", "app.at=tokA,app.at=tokB"}}, "token_malformed", "", nil},
		"cookie value unbalanced quote":       {cookie, [][2]string{{"cookie", "x=\"a; app.at=tokA"}}, "token_malformed", "", nil},
		"cookie value with backslash":         {cookie, [][2]string{{"cookie", "app.at=tok\\A"}}, "token_malformed", "", nil},
		"cookie bad name":                     {cookie, [][2]string{{"cookie", "a b=1; app.at=tokA"}}, "token_malformed", "", nil},
		"cookie header not naming ours":       {cookie, [][2]string{{"cookie", "sloppy=a b;c"}}, "token_missing", "", nil},
		"cookie oversized":                    {cookie, [][2]string{{"cookie", "app.at=" + long}}, "token_malformed", "", nil},
		"bare header":                         {bare, [][2]string{{"x-access-token", "tokA"}}, "allowed", "tokA", nil},
		"bare header, not bearer":             {bare, [][2]string{{"x-access-token", "Bearer tokA"}}, "allowed", "Bearer tokA", nil},
		"bare header twice":                   {bare, [][2]string{{"x-access-token", "tokA"}, {"x-access-token", "tokA"}}, "token_malformed", "", nil},
		"bare header with comma":              {bare, [][2]string{{"x-access-token", "tokA,tokB"}}, "token_malformed", "", nil},
		"bare header oversized":               {bare, [][2]string{{"x-access-token", long}}, "token_malformed", "", nil},
		"bare header empty":                   {bare, [][2]string{{"x-access-token", ""}}, "token_missing", "", nil},
		"all: none":                           {all, [][2]string{{"cookie", "a=1"}}, "token_missing", "", nil},
		"all: header only":                    {all, [][2]string{{"authorization", "Bearer tokA"}}, "allowed", "tokA", nil},
		"all: cookie only":                    {all, [][2]string{{"cookie", "app.at=tokA"}}, "allowed", "tokA", nil},
		"all: bare only":                      {all, [][2]string{{"x-access-token", "tokA"}}, "allowed", "tokA", nil},
		"all: same everywhere":                {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app.at=tokA"}, {"x-access-token", "tokA"}}, "allowed", "tokA", nil},
		"all: header and cookie differ":       {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app.at=tokB"}}, "token_malformed", "", nil},
		"all: cookie and bare differ":         {all, [][2]string{{"cookie", "app.at=tokA"}, {"x-access-token", "tokB"}}, "token_malformed", "", nil},
		"all: another scheme and a cookie":    {all, [][2]string{{"authorization", "Basic Zm9v"}, {"cookie", "app.at=tokA"}}, "allowed", "tokA", nil},
		"all: malformed bearer and a cookie":  {all, [][2]string{{"authorization", "Bearer "}, {"cookie", "app.at=tokA"}}, "token_malformed", "", nil},
		"all: oversized in one source":        {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app.at=" + long}}, "token_malformed", "", nil},
		"all: two authorization":              {all, [][2]string{{"authorization", "Bearer tokA"}, {"authorization", "Bearer tokA"}}, "token_malformed", "", nil},
		// Names an upstream reads as a source's (CGI's HTTP_X_ACCESS_TOKEN,
		// ASP.NET Core's case-insensitive cookies, PHP's "." → "_").
		"bare header variant":             {bare, [][2]string{{"x_access_token", "tokA"}}, "header_invalid", "", nil},
		"bare header variant, upper":      {bare, [][2]string{{"X-Access-Token", "tokA"}}, "header_invalid", "", nil},
		"all: bare variant beside bearer": {all, [][2]string{{"authorization", "Bearer tokA"}, {"x_access_token", "tokB"}}, "header_invalid", "", nil},
		"all: cookie upper beside bearer": {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "APP.AT=tokB"}}, "token_malformed", "", nil},
		"all: cookie _ beside bearer":     {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app_at=tokB"}}, "token_malformed", "", nil},
		"all: cookie %2E beside bearer":   {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "app%2Eat=tokB"}}, "token_malformed", "", nil},
		"all: cookie %2e beside bearer":   {all, [][2]string{{"authorization", "Bearer tokA"}, {"cookie", "x=1; App%2eAt=tokB"}}, "token_malformed", "", nil},
		"cookie variant, same value":      {cookie, [][2]string{{"cookie", "app.at=tokA; APP_AT=tokA"}}, "token_malformed", "", nil},
		"cookie variant alone":            {cookie, [][2]string{{"cookie", "app_at=tokA"}}, "token_malformed", "", nil},
		"cookie variant is a prefix":      {cookie, [][2]string{{"cookie", "app_att=tokA"}}, "token_missing", "", nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			// header_map: one entry per line.
			reason, got := sourcesReason(t, tt.sources, rawRequest(tt.headers))
			if reason != tt.reason || got != tt.token {
				t.Errorf("header_map: reason %q, token %q; want %q, %q", reason, got, tt.reason, tt.token)
			}
			// headers: repeated headers joined as Envoy joins them.
			joined := map[string]string{}
			for _, h := range tt.headers {
				if v, ok := joined[h[0]]; ok {
					joined[h[0]] = v + "," + h[1]
					continue
				}
				joined[h[0]] = h[1]
			}
			want := [2]string{tt.reason, tt.token}
			if tt.joined != nil {
				want = *tt.joined
			}
			reason, got = sourcesReason(t, tt.sources, checkRequest(joined))
			if reason != want[0] || got != want[1] {
				t.Errorf("headers: reason %q, token %q; want %q, %q", reason, got, want[0], want[1])
			}
		})
	}
}

// TestTokenSourcesValidate: a source names exactly one of a header or a
// cookie, by a valid name; no source twice; at least one; and no header
// tokengate itself sets for the upstream.
func TestTokenSourcesValidate(t *testing.T) {
	managed := []string{"x-auth-subject"}
	tests := map[string]struct {
		sources []extauthz.TokenSource
		want    string // in the error; "" for none
	}{
		"default":          {[]extauthz.TokenSource{{Header: "authorization"}}, ""},
		"all kinds":        {[]extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}, {Header: "x-access-token"}}, ""},
		"none":             {nil, "at least one"},
		"both":             {[]extauthz.TokenSource{{Header: "a", Cookie: "b"}}, "sources[0]: exactly one of header or cookie"},
		"neither":          {[]extauthz.TokenSource{{}}, "sources[0]: exactly one of header or cookie"},
		"bad header":       {[]extauthz.TokenSource{{Header: "x token"}}, "sources[0].header"},
		"upper header":     {[]extauthz.TokenSource{{Header: "X-Token"}}, "sources[0].header"},
		"bad cookie":       {[]extauthz.TokenSource{{Cookie: "a;b"}}, "sources[0].cookie"},
		"duplicate header": {[]extauthz.TokenSource{{Header: "x-t"}, {Header: "x-t"}}, "sources[1]: x-t is listed twice"},
		"duplicate cookie": {[]extauthz.TokenSource{{Cookie: "c"}, {Cookie: "c"}}, "sources[1]: c is listed twice"},
		"cookie header":    {[]extauthz.TokenSource{{Header: "cookie"}}, "sources[0].header"},
		"managed header":   {[]extauthz.TokenSource{{Header: "x-auth-subject"}}, "sources[0].header"},
		"managed variant":  {[]extauthz.TokenSource{{Header: "x_auth_subject"}}, `sources[0].header: "x_auth_subject" is a variant of x-auth-subject`},
		"request id":       {[]extauthz.TokenSource{{Header: "x-request-id"}}, `sources[0].header: "x-request-id" is a header`},
		"host":             {[]extauthz.TokenSource{{Header: "host"}}, `sources[0].header: "host" is a header`},
		"content-length":   {[]extauthz.TokenSource{{Header: "content-length"}}, `sources[0].header: "content-length" is a header`},
		"pseudo-header":    {[]extauthz.TokenSource{{Header: ":authority"}}, `sources[0].header: ":authority" is a pseudo-header`},
		"header variants":  {[]extauthz.TokenSource{{Header: "x-t"}, {Header: "x_t"}}, `sources[1].header: "x_t" is a variant of sources[0]`},
		"cookie variants":  {[]extauthz.TokenSource{{Cookie: "app.at"}, {Cookie: "APP_AT"}}, `sources[1].cookie: "APP_AT" is a variant of sources[0]`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := extauthz.ValidateTokenSources(tt.sources, managed)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := extauthz.NewServer(extauthz.Options{Verifier: &echoVerifier{}, TokenSources: []extauthz.TokenSource{{}}}); err == nil {
		t.Error("NewServer accepted an invalid token source")
	}
}

type revokeAll struct{}

func (revokeAll) Keys(string, string, string, string, []string) *storage.Keys { return nil }
func (revokeAll) Revoked(*storage.Keys, time.Time, time.Time) bool            { return true }

type logoutOK struct{}

func (logoutOK) RevokeLogout(context.Context, *token.Identity, bool, bool, bool) error { return nil }

// TestRevokedLogoutRemovesTokenHeaders: a revoked token's pass-through on a
// logout route goes on without the token in any header source, as it goes
// on without authorization.
func TestRevokedLogoutRemovesTokenHeaders(t *testing.T) {
	headers, err := policy.NewHeaderMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := policy.NewLogoutRoutes([]policy.LogoutRoute{{PathPrefix: "/oauth2/logout"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, extauthz.Options{Verifier: &echoVerifier{}, Headers: headers, Revocations: revokeAll{},
		MaxStaleness: time.Minute, LogoutRoutes: routes, Logout: logoutOK{},
		TokenSources: []extauthz.TokenSource{{Header: "authorization"}, {Header: "x-access-token"}, {Cookie: "app.at"}}})
	req := checkRequest(map[string]string{"x-access-token": "tokA"})
	req.Attributes.Request.Http.Path = "/oauth2/logout"
	resp, err := srv.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if reason := resp.GetDynamicMetadata().AsMap()["reason"]; reason != "logout_revoked" {
		t.Fatalf("reason %v, want logout_revoked", reason)
	}
	removed := resp.GetOkResponse().GetHeadersToRemove()
	for _, h := range []string{"authorization", "x-access-token"} {
		if !slices.Contains(removed, h) {
			t.Errorf("headers_to_remove %v lacks %s", removed, h)
		}
	}
}

// FuzzTokenSources reads the Authorization header, the app.at cookie and
// a bare-token header. Whatever they hold: no panic and no gRPC error; the
// reason is allowed, token_missing or token_malformed; an allowed token is
// not empty, within the size limit, and found in what was sent; and both
// encodings of the headers agree, but for a comma in the Cookie header
// (which the headers map reads as a join of two header lines; Envoy itself
// joins Cookie lines with "; ").
//
//	go test -run '^$' -fuzz FuzzTokenSources -fuzztime 30s ./extauthz
func FuzzTokenSources(f *testing.F) {
	for _, seed := range [][3]string{
		{"Bearer tokA", "app.at=tokA", "tokA"},
		{"", "theme=dark; app.at=tokA; app.rt=r", ""},
		{"Bearer tokA", "app.at=tokB", ""},
		{"", "app.at=\"tokA\"", ""},
		{"", "app.at=tokA; app.at=tokB", ""},
		{"", "a=1;app.at=tokA", ""},
		{"", "app.at=tokA,app.at=tokB", ""},
		{"", "x=\"a; app.at=tokA", ""},
		{"Basic Zm9v", "app.at=", "tokA"},
		{"Bearer ", "", ""},
		{"", "app.at=" + strings.Repeat("a", 65), ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	sources := []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}, {Header: "x-access-token"}}
	f.Fuzz(func(t *testing.T, authorization, cookie, bare string) {
		var lines [][2]string
		for _, h := range [][2]string{{"authorization", authorization}, {"cookie", cookie}, {"x-access-token", bare}} {
			if h[1] != "" {
				lines = append(lines, h)
			}
		}
		raw, rawTok := sourcesReason(t, sources, rawRequest(lines))
		joined := map[string]string{}
		for _, h := range lines {
			joined[h[0]] = h[1]
		}
		reason, tok := sourcesReason(t, sources, checkRequest(joined))
		for _, r := range []string{raw, reason} {
			if r != "allowed" && r != "token_missing" && r != "token_malformed" {
				t.Fatalf("reason %q", r)
			}
		}
		if raw == "allowed" && (rawTok == "" || len(rawTok) > 64 || !strings.Contains(authorization+"\n"+cookie+"\n"+bare, rawTok)) {
			t.Fatalf("allowed token %q is not one sent", rawTok)
		}
		if !strings.Contains(cookie, ",") && (raw != reason || (raw == "allowed" && rawTok != tok)) {
			t.Fatalf("header_map: %s %q; headers: %s %q", raw, rawTok, reason, tok)
		}
	})
}

// TestUncheckedAuthorizationRemoved: with authorization not among the
// sources, an Authorization header is never checked, so every allow removes
// it: the upstream must not take an unchecked bearer token for a checked
// one. With authorization a source, it goes on.
func TestUncheckedAuthorizationRemoved(t *testing.T) {
	headers, err := policy.NewHeaderMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		sources []extauthz.TokenSource
		req     map[string]string
		removed bool
	}{
		{[]extauthz.TokenSource{{Cookie: "app.at"}}, map[string]string{"authorization": "Bearer tokB", "cookie": "app.at=tokA"}, true},
		{[]extauthz.TokenSource{{Header: "x-access-token"}}, map[string]string{"x-access-token": "tokA"}, true},
		{nil, map[string]string{"authorization": "Bearer tokA"}, false},
		{[]extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}}, map[string]string{"cookie": "app.at=tokA"}, false},
	} {
		srv := newServer(t, extauthz.Options{Verifier: &echoVerifier{}, Headers: headers, TokenSources: tt.sources})
		// Twice: the second answer comes from what the first left behind.
		for range 2 {
			resp, err := srv.Check(t.Context(), checkRequest(tt.req))
			if err != nil {
				t.Fatal(err)
			}
			if reason := resp.GetDynamicMetadata().AsMap()["reason"]; reason != "allowed" {
				t.Fatalf("%v: reason %v, want allowed", tt.sources, reason)
			}
			removed := resp.GetOkResponse().GetHeadersToRemove()
			if n := slices.Index(removed, "authorization"); (n >= 0) != tt.removed || slices.Index(removed[n+1:], "authorization") >= 0 {
				t.Errorf("%v: headers_to_remove %v; want authorization removed (once): %v", tt.sources, removed, tt.removed)
			}
		}
	}
}
