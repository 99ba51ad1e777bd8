package extauthz_test

import (
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/policy"
)

// TestRevokedLogoutRewritesTokenCookies: a revoked token's pass-through on a
// logout route goes on without the token in a cookie source either: the
// Cookie header is rewritten without the token cookies, so that an
// upstream the request reaches (the IdP, or another one if the routes
// disagree) never gets the revoked token. The IdP's own session cookie
// still reaches it, since its logout goes by that cookie. No cookie left:
// the header is removed. Over real gRPC, with both header encodings.
func TestRevokedLogoutRewritesTokenCookies(t *testing.T) {
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
		TokenSources: []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}, {Cookie: "app.id"}}})
	client := serveGRPC(t, srv)

	cases := map[string]struct {
		req  *authv3.CheckRequest
		want string // "": the cookie header removed
	}{
		"headers map":                          {checkRequest(map[string]string{"cookie": "app.at=tokA; fusionauth.sso=abc"}), "fusionauth.sso=abc"},
		"headers map, joined":                  {checkRequest(map[string]string{"cookie": "fusionauth.sso=abc,app.at=tokA; app.id=tokA; theme=dark"}), "fusionauth.sso=abc; theme=dark"},
		"headers map, comma in another cookie": {checkRequest(map[string]string{"cookie": "pref=a,b=c; app.at=tokA; theme=dark"}), "pref=a,b=c; theme=dark"},
		"header map, comma in another line":    {rawRequest([][2]string{{"cookie", "pref=a,b=c"}, {"cookie", "app.at=tokA"}}), "pref=a,b=c"},
		"header map":                           {rawRequest([][2]string{{"cookie", "app.at=tokA"}, {"cookie", "fusionauth.sso=abc"}}), "fusionauth.sso=abc"},
		"header map, one line":                 {rawRequest([][2]string{{"cookie", "fusionauth.sso=abc; app.at=tokA"}}), "fusionauth.sso=abc"},
		"token cookie only":                    {checkRequest(map[string]string{"cookie": "app.at=tokA"}), ""},
		"token cookies only":                   {rawRequest([][2]string{{"cookie", "app.at=tokA; app.id=tokA"}, {"cookie", "app.at=tokA"}}), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.req.Attributes.Request.Http.Path = "/oauth2/logout"
			resp, err := client.Check(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if reason := resp.GetDynamicMetadata().AsMap()["reason"]; reason != "logout_revoked" {
				t.Fatalf("reason %v, want logout_revoked", reason)
			}
			ok := resp.GetOkResponse()
			var set []*corev3.HeaderValueOption
			for _, h := range ok.GetHeaders() {
				if h.GetHeader().GetKey() == "cookie" {
					set = append(set, h)
				}
			}
			removed := slices.Contains(ok.GetHeadersToRemove(), "cookie")
			if tc.want == "" {
				if len(set) != 0 || !removed {
					t.Fatalf("cookie set %v, removed %v; want it removed (only token cookies were sent)", set, removed)
				}
				return
			}
			if removed {
				t.Fatalf("cookie removed; want it rewritten to %q", tc.want)
			}
			if len(set) != 1 || set[0].GetHeader().GetValue() != tc.want ||
				set[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Fatalf("cookie set %v; want %q, overwriting", set, tc.want)
			}
		})
	}
}

// TestLookalikeTokenCookiesRemoved: a cookie whose name reads as a token
// cookie's to some upstream (case, '_' for '.', an escape: App.At, app_at,
// app%2Eat for app.at) makes the token malformed, and where the request
// goes on without identity (a public route) it must not go on with that
// cookie either: an upstream reading cookie names loosely (PHP, ASP.NET)
// would take the token. The other cookies stay.
func TestLookalikeTokenCookiesRemoved(t *testing.T) {
	srv := publicCookieServer(t)
	client := serveGRPC(t, srv)
	for _, cookie := range []string{"App.At=tokA; theme=dark", "app_at=tokA; theme=dark", "app%2Eat=tokA; theme=dark",
		"APP.AT=tokA; theme=dark", "theme=dark; app.at=tokA; App.At=tokB"} {
		t.Run(cookie, func(t *testing.T) {
			req := checkRequest(map[string]string{"cookie": cookie})
			req.Attributes.Request.Http.Path = "/public/info"
			resp, err := client.Check(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if reason := resp.GetDynamicMetadata().AsMap()["reason"]; reason != "anonymous" {
				t.Fatalf("reason %v, want anonymous", reason)
			}
			ok := resp.GetOkResponse()
			got := "(unchanged)"
			for _, h := range ok.GetHeaders() {
				if h.GetHeader().GetKey() == "cookie" {
					got = h.GetHeader().GetValue()
				}
			}
			if slices.Contains(ok.GetHeadersToRemove(), "cookie") {
				got = "(removed)"
			}
			if got != "theme=dark" {
				t.Fatalf("cookie upstream: %s; want theme=dark, without any token cookie", got)
			}
		})
	}
}

// publicCookieServer has a public route, /public, and the token in
// authorization or the cookie app.at; every token is revoked.
func publicCookieServer(t *testing.T) *extauthz.Server {
	t.Helper()
	headers, err := policy.NewHeaderMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(policy.Options{Unmatched: policy.UnmatchedAuthenticated,
		Policies: map[string][]policy.RuleSpec{"default": {
			{Name: "public", Match: policy.MatchSpec{PathPrefix: "/public"}, Access: "public"},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	return newServer(t, extauthz.Options{Verifier: &echoVerifier{}, Headers: headers, Revocations: revokeAll{},
		MaxStaleness: time.Minute, Policy: func() *policy.Set { return set },
		TokenSources: []extauthz.TokenSource{{Header: "authorization"}, {Cookie: "app.at"}}})
}
