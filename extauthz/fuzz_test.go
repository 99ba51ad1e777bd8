package extauthz_test

import (
	"encoding/json"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/policy"
)

// FuzzCheck drives the whole path from the Authorization header to the
// decision. Whatever the input: no panic, no gRPC error (the keys are
// loaded), and the answer is either an allow or a well-formed denial whose
// reason is in the closed set.
//
//	go test -run '^$' -fuzz FuzzCheck -fuzztime 30s ./extauthz
func FuzzCheck(f *testing.F) {
	iss := tokentest.NewServer(f, audience)
	headers, _ := policy.NewHeaderMap(map[string]string{"x-auth-roles": "roles"})
	v, err := token.New(token.Options{
		Issuers: []token.Issuer{{Name: "a", Issuer: iss.URL, JWKSURI: iss.URL + "/jwks.json",
			Audiences: []string{audience}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}},
		CacheMaxEntries:    1000,
		UnknownKIDInterval: time.Hour,
		Derive:             extauthz.Derive(headers, nil, nil),
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := v.Refresh(f.Context(), "a"); err != nil {
		f.Fatal(err)
	}
	srv := newServer(f, extauthz.Options{Verifier: v, Headers: headers})

	valid, _ := iss.Mint("user", time.Hour, map[string]any{"roles": []any{"a", "b"}})
	for _, seed := range []string{
		"", "Bearer", "Bearer ", "bearer " + valid, "Bearer " + valid, "Basic Zm9vOmJhcg==",
		"Bearer a.b.c", "Bearer " + valid + "x", "Bearer " + valid[:len(valid)/2],
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer \x00\xff", "Bearer a..c",
	} {
		f.Add(seed)
	}
	reasons := map[string]bool{}
	for _, r := range extauthz.Reasons() {
		reasons[r.String()] = true
	}
	f.Fuzz(func(t *testing.T, authorization string) {
		req := checkRequest(map[string]string{"authorization": authorization})
		resp, err := srv.Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check(%q) returned a gRPC error: %v", authorization, err)
		}
		roundTrip(t, resp) // the server's codec encodes it faithfully
		reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
		if !reasons[reason] {
			t.Fatalf("reason %q is not in the closed set", reason)
		}
		switch codes.Code(resp.GetStatus().GetCode()) {
		case codes.OK:
			if resp.GetOkResponse() == nil || reason != "allowed" {
				t.Fatalf("OK status without an allow: %v", resp)
			}
		case codes.Unauthenticated:
			checkDenial(t, resp, reason)
		default:
			t.Fatalf("unexpected status %v", resp.GetStatus())
		}
	})
}

func checkDenial(t *testing.T, resp *authv3.CheckResponse, reason string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != 401 {
		t.Fatalf("denial without a 401: %v", resp)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["reason"] != reason {
		t.Fatalf("denial body %q does not carry reason %q", d.GetBody(), reason)
	}
}
