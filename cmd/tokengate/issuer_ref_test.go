package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extauthz/intake"
)

// TestIssuerByNameOrIss: wherever an issuer is named — the CLI's --issuer,
// the admin API's "issuer", webhooks.fusionauth.issuer — its name
// (issuers[].name) and its iss (issuers[].issuer) both work.
func TestIssuerByNameOrIss(t *testing.T) {
	s := startCLIServer(t) // one issuer: name idp, iss s.iss.URL
	for _, ref := range []string{"idp", s.iss.URL} {
		t.Run(ref, func(t *testing.T) {
			var got intake.Entry
			out := s.mustCLI(t, "", "revoke", "subject", "--issuer", ref, "--subject", "sub-"+ref, "--json")
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Issuer != s.iss.URL {
				t.Fatalf("revoke --issuer %s: got %s (%v), want an entry of %s", ref, out, err, s.iss.URL)
			}
			var page intake.ListResponse
			out = s.mustCLI(t, "", "revocations", "list", "--issuer", ref, "--subject", "sub-"+ref, "--json")
			if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Revocations) != 1 {
				t.Errorf("list --issuer %s: got %s (%v), want the entry", ref, out, err)
			}
		})
	}
	_, _, err := s.cli(t, "", "revoke", "cutoff", "--issuer", "nobody")
	if err == nil || !strings.Contains(err.Error(), `issuer "nobody" is not configured`) ||
		!strings.Contains(err.Error(), "name") || !strings.Contains(err.Error(), "iss") {
		t.Errorf("unknown issuer: got %v, want an error that says name or iss", err)
	}
}

func TestFusionAuthIssuerByNameOrIss(t *testing.T) {
	const base = `
issuers:
  - {name: fusionauth, issuer: acme.com, jwks_uri: "https://auth.example.com/.well-known/jwks.json", audiences: [app]}
webhooks: {fusionauth: {signing_key: {hmac_secret: 0123456789abcdef0123456789abcdef}, issuer: %s}}
`
	for _, ref := range []string{"fusionauth", "acme.com"} {
		s, err := loadConfig(strings.NewReader(strings.Replace(base, "%s", ref, 1)), noEnv)
		if err != nil {
			t.Errorf("webhooks.fusionauth.issuer: %s: %v", ref, err)
			continue
		}
		if iss, ok := s.issuerRef(s.Webhooks.FusionAuth.Issuer); !ok || iss.Issuer != "acme.com" {
			t.Errorf("webhooks.fusionauth.issuer: %s resolves to %+v, %v; want acme.com", ref, iss, ok)
		}
	}
	_, err := loadConfig(strings.NewReader(strings.Replace(base, "%s", "nobody", 1)), noEnv)
	if err == nil || !strings.Contains(err.Error(), `webhooks.fusionauth.issuer: "nobody" is neither the name nor the iss of a configured issuer`) {
		t.Errorf("unknown issuer: got %v", err)
	}
}

// TestIssuerNamesUnambiguous: a name may not be another issuer's iss, or a
// reference to it could mean either.
func TestIssuerNamesUnambiguous(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
issuers:
  - {name: a, issuer: b, jwks_uri: "https://b.example/jwks", audiences: [x]}
  - {name: b, issuer: c, jwks_uri: "https://c.example/jwks", audiences: [x]}
`), noEnv)
	if err == nil || !strings.Contains(err.Error(), `issuers[1].name: "b" is the iss of issuers[0]`) {
		t.Errorf("got %v, want the ambiguous name refused", err)
	}
}
