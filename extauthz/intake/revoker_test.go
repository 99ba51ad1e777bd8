package intake_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// TestAdminListWithoutIssuerListsEveryIssuer: with no issuer filter, the
// list is not narrowed to an issuer, even one configured without a name.
func TestAdminListWithoutIssuerListsEveryIssuer(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	issuers := []intake.Issuer{
		{Issuer: "https://unnamed.example", MaxTokenLifetime: time.Hour},
		{Name: "b", Issuer: "https://b.example", MaxTokenLifetime: time.Hour},
	}
	r := newRevoker(t, s, newFollower(t, s, storage.NewIndex(), storage.FollowerOptions{}), issuers, nil)
	now := time.Now()
	var revs []storage.Revocation
	for _, iss := range issuers {
		revs = append(revs, storage.Revocation{Kind: storage.KindCutoff, Issuer: iss.Issuer,
			RevokedBefore: now, ExpiresAt: iss.Keep(now), Source: "test"})
	}
	if _, err := r.Revoke(t.Context(), storage.Write{Revocations: revs}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	intake.NewAdmin(intake.AdminOptions{Token: adminToken, Revoker: r, Store: s}).Mount(mux)
	for query, want := range map[string]int{"": 2, "?issuer=b": 1, "?issuer=https://unnamed.example": 1} {
		req := httptest.NewRequest("GET", "/v1/revocations"+query, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var body intake.ListResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("GET /v1/revocations%s: %d %s", query, rec.Code, rec.Body)
		}
		if got := len(body.Revocations); got != want {
			t.Errorf("GET /v1/revocations%s: %d revocations, want %d", query, got, want)
		}
	}
}

// TestNewRevokerRefusesAmbiguousIssuers: every reference (an iss, or a
// name) means one issuer, whoever builds the Revoker.
func TestNewRevokerRefusesAmbiguousIssuers(t *testing.T) {
	a := intake.Issuer{Name: "a", Issuer: "https://a.example", MaxTokenLifetime: time.Hour}
	for name, tc := range map[string]struct {
		issuers []intake.Issuer
		ok      bool
	}{
		"distinct":              {[]intake.Issuer{a, {Name: "b", Issuer: "https://b.example"}}, true},
		"unnamed":               {[]intake.Issuer{a, {Issuer: "https://b.example"}, {Issuer: "https://c.example"}}, true},
		"name is its own iss":   {[]intake.Issuer{a, {Name: "acme", Issuer: "acme"}}, true},
		"none":                  {nil, true},
		"empty iss":             {[]intake.Issuer{a, {Name: "b"}}, false},
		"iss twice":             {[]intake.Issuer{a, {Name: "b", Issuer: a.Issuer}}, false},
		"name twice":            {[]intake.Issuer{a, {Name: "a", Issuer: "https://b.example"}}, false},
		"name is another's iss": {[]intake.Issuer{a, {Name: a.Issuer, Issuer: "https://b.example"}}, false},
		"iss is another's name": {[]intake.Issuer{a, {Name: "b", Issuer: "a"}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := intake.NewRevoker(nil, nil, tc.issuers, nil)
			if tc.ok && (err != nil || r == nil) {
				t.Errorf("NewRevoker(%+v) = %v, %v; want a Revoker", tc.issuers, r, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("NewRevoker(%+v) accepted", tc.issuers)
			}
		})
	}
}

// TestKeepSession: a session entry is kept for the issuer's session
// lifetime (DefaultSessionLifetime when it says none), plus the lifetime of
// the last token the session could mint.
func TestKeepSession(t *testing.T) {
	from := time.Now()
	for name, tc := range map[string]struct {
		lifetime, want time.Duration
	}{
		"configured": {48 * time.Hour, 48*time.Hour + time.Hour + 30*time.Second},
		"default":    {0, intake.DefaultSessionLifetime + time.Hour + 30*time.Second},
	} {
		iss := intake.Issuer{Issuer: "https://a.example", MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second, SessionLifetime: tc.lifetime}
		if got := iss.KeepSession(from).Sub(from); got != tc.want {
			t.Errorf("%s: KeepSession = from%+v, want from%+v", name, got, tc.want)
		}
	}
}
