package intake_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

const adminToken = "admin-token-0123456789-0123456789-abcdef"

// env is the admin API over real HTTP, on an embedded store, with an issuer
// whose JWKS is served over HTTP.
type env struct {
	clock *clock // the admin API's
	iss   *tokentest.Issuer
	store *bolt.Store
	index *storage.Index
	url   string
}

func newEnv(t *testing.T, adminTok string) *env {
	t.Helper()
	e := &env{clock: &clock{t: time.Now()}, iss: tokentest.NewServer(t, "api"), index: storage.NewIndex()}
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "idp", Issuer: e.iss.URL,
		Audiences: []string{"api"}, Leeway: 30 * time.Second, MaxTokenLifetime: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "idp"); err != nil {
		t.Fatal(err)
	}
	f := newFollower(t, s, e.index, storage.FollowerOptions{})
	issuers := []intake.Issuer{{Name: "idp", Issuer: e.iss.URL, MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}}
	mux := http.NewServeMux()
	intake.NewAdmin(intake.AdminOptions{
		Token: adminTok, Revoker: newRevoker(t, s, f, issuers, e.clock.Now), Store: s, Verifier: v, Revocations: e.index,
		Now: e.clock.Now,
	}).Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// newRevoker is intake.NewRevoker, failing the test on an error.
func newRevoker(t testing.TB, s storage.Store, f intake.Follower, issuers []intake.Issuer, now func() time.Time) *intake.Revoker {
	t.Helper()
	r, err := intake.NewRevoker(s, f, issuers, now)
	if err != nil {
		t.Fatalf("NewRevoker: %v", err)
	}
	return r
}

// newFollower is storage.NewFollower, failing the test on an error.
func newFollower(t testing.TB, s storage.Store, x *storage.Index, opts storage.FollowerOptions) *storage.Follower {
	t.Helper()
	f, err := storage.NewFollower(s, x, opts)
	if err != nil {
		t.Fatalf("NewFollower: %v", err)
	}
	return f
}

func (e *env) do(t *testing.T, method, path, auth, contentType, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (e *env) admin(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	return e.do(t, method, path, "Bearer "+adminToken, "application/json", body)
}

func (e *env) entries(t *testing.T) int {
	t.Helper()
	n := 0
	if _, err := e.store.Snapshot(t.Context(), time.Now(), func(storage.Revocation) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAdminOffWithoutToken(t *testing.T) {
	e := newEnv(t, "")
	for _, p := range []string{"/v1/revocations", "/v1/introspect"} {
		if code, _ := e.do(t, "POST", p, "Bearer anything", "application/json", "{}"); code != http.StatusNotFound {
			t.Errorf("POST %s with the admin API off: %d, want 404", p, code)
		}
	}
}

func TestAdminRequiresTheToken(t *testing.T) {
	e := newEnv(t, adminToken)
	body := fmt.Sprintf(`{"kind":"cutoff","issuer":%q}`, e.iss.URL)
	for name, auth := range map[string]string{
		"none": "", "wrong": "Bearer " + adminToken + "x", "prefix": "Bearer " + adminToken[:10],
		"basic": "Basic " + adminToken, "empty bearer": "Bearer ",
	} {
		t.Run(name, func(t *testing.T) {
			if code, _ := e.do(t, "POST", "/v1/revocations", auth, "application/json", body); code != http.StatusUnauthorized {
				t.Errorf("%d, want 401", code)
			}
		})
	}
	if n := e.entries(t); n != 0 {
		t.Errorf("unauthenticated requests wrote %d entries", n)
	}
}

func TestAdminRevokeEachKind(t *testing.T) {
	e := newEnv(t, adminToken)
	exp := time.Now().Add(20 * time.Minute).UTC().Truncate(time.Second)
	recent := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second).Format(time.RFC3339)
	cases := map[string]struct {
		body  string
		check func(map[string]any) error
	}{
		"token": {fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"j-1","expires_at":%q}`, e.iss.URL, exp.Format(time.RFC3339)),
			func(m map[string]any) error { return want(m, "jti", "j-1") }},
		"session": {fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":"s-1"}`, e.iss.URL),
			func(m map[string]any) error { return want(m, "sid", "s-1") }},
		"subject": {fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"alice","audience":"api","reason":"deleted"}`, e.iss.URL),
			func(m map[string]any) error { return want(m, "subject", "alice") }},
		"cutoff": {fmt.Sprintf(`{"kind":"cutoff","issuer":%q,"revoked_before":%q}`, e.iss.URL, recent),
			func(m map[string]any) error { return want(m, "revoked_before", recent) }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, m := e.admin(t, "POST", "/v1/revocations", tc.body)
			if code != http.StatusCreated {
				t.Fatalf("%d %v, want 201", code, m)
			}
			if err := tc.check(m); err != nil {
				t.Error(err)
			}
			if m["kind"] != name || m["id"] == nil || m["source"] != "admin" {
				t.Errorf("entry %v", m)
			}
			// The same request a second later: with explicit times nothing
			// changes (200); with the default "now", the entry moves forward
			// (201).
			wantCode := http.StatusCreated
			if name == "token" || name == "cutoff" {
				wantCode = http.StatusOK
			}
			e.clock.Set(e.clock.Now().Add(time.Second))
			if code, _ := e.admin(t, "POST", "/v1/revocations", tc.body); code != wantCode {
				t.Errorf("repeated: %d, want %d", code, wantCode)
			}
		})
	}
}

func want(m map[string]any, k, v string) error {
	if m[k] != v {
		return fmt.Errorf("%s = %v, want %s", k, m[k], v)
	}
	return nil
}

func TestAdminRevokeByValueThenIntrospect(t *testing.T) {
	e := newEnv(t, adminToken)
	tok, _ := e.iss.Mint("bob", 10*time.Minute, map[string]any{"scope": "read"})
	form := "application/x-www-form-urlencoded"
	introspect := func() map[string]any {
		_, m := e.do(t, "POST", "/v1/introspect", "Bearer "+adminToken, form, "token="+url.QueryEscape(tok))
		return m
	}
	if m := introspect(); m["active"] != true || m["sub"] != "bob" || m["scope"] != "read" {
		t.Fatalf("introspect before revocation = %v, want active with claims", m)
	}
	code, m := e.admin(t, "POST", "/v1/revocations", `{"token":"`+tok+`","reason":"stolen"}`)
	if code != http.StatusCreated || m["kind"] != "token" || m["reason"] != "stolen" {
		t.Fatalf("revoke by value: %d %v", code, m)
	}
	if m := introspect(); len(m) != 1 || m["active"] != false {
		t.Errorf("introspect after revocation = %v, want only active:false", m)
	}
	_, m = e.do(t, "POST", "/v1/introspect", "Bearer "+adminToken, form, "token=not.a.token")
	if len(m) != 1 || m["active"] != false {
		t.Errorf("introspect garbage = %v", m)
	}
	other, _ := tokentest.New(e.iss.URL, "api")
	forged, _ := other.Mint("bob", time.Minute, nil)
	if code, _ := e.admin(t, "POST", "/v1/revocations", `{"token":"`+forged+`"}`); code != http.StatusBadRequest {
		t.Errorf("revoking a token that does not verify: %d, want 400", code)
	}
}

func TestAdminRejectsBadInput(t *testing.T) {
	e := newEnv(t, adminToken)
	// A cutoff so far back that every token it matches has expired.
	longAgo := e.clock.Now().AddDate(0, 0, -400).Format(time.RFC3339)
	cases := map[string]struct {
		body string
		code int
	}{
		"invalid JSON":          {`{"kind":`, 400},
		"unknown field":         {fmt.Sprintf(`{"kind":"cutoff","issuer":%q,"extra":1}`, e.iss.URL), 400},
		"unknown kind":          {fmt.Sprintf(`{"kind":"user","issuer":%q}`, e.iss.URL), 400},
		"unknown issuer":        {`{"kind":"cutoff","issuer":"https://evil.example"}`, 400},
		"token without expiry":  {fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"x"}`, e.iss.URL), 400},
		"subject without sub":   {fmt.Sprintf(`{"kind":"subject","issuer":%q}`, e.iss.URL), 400},
		"field of another kind": {fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":"s","subject":"x"}`, e.iss.URL), 400},
		"two values":            {`{} {}`, 400},
		"revokes nothing":       {fmt.Sprintf(`{"kind":"cutoff","issuer":%q,"revoked_before":%q}`, e.iss.URL, longAgo), 400},
		"oversized":             {`{"reason":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, m := e.admin(t, "POST", "/v1/revocations", tc.body)
			if code != tc.code || m["error"] == nil {
				t.Errorf("%d %v, want %d with an error", code, m, tc.code)
			}
		})
	}
	if n := e.entries(t); n != 0 {
		t.Errorf("bad requests wrote %d entries", n)
	}
}

func TestAdminListDeleteAndUnavailable(t *testing.T) {
	e := newEnv(t, adminToken)
	for i := range 5 {
		e.admin(t, "POST", "/v1/revocations", fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"u%d"}`, e.iss.URL, i))
	}
	e.admin(t, "POST", "/v1/revocations", fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":"s"}`, e.iss.URL))
	var ids []any
	cursor := ""
	for {
		code, m := e.admin(t, "GET", "/v1/revocations?kind=subject&limit=2&cursor="+cursor, "")
		if code != 200 {
			t.Fatalf("list: %d %v", code, m)
		}
		for _, r := range m["revocations"].([]any) {
			ids = append(ids, r.(map[string]any)["id"])
		}
		next, _ := m["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(ids) != 5 {
		t.Fatalf("paged through %d subjects, want 5", len(ids))
	}
	if _, m := e.admin(t, "GET", "/v1/revocations?subject=u3", ""); len(m["revocations"].([]any)) != 1 {
		t.Errorf("filter by subject: %v", m)
	}
	path := fmt.Sprintf("/v1/revocations/%v", ids[0])
	if code, m := e.admin(t, "DELETE", path, ""); code != 200 || m["deleted"] == nil {
		t.Errorf("delete: %d %v", code, m)
	}
	if code, _ := e.admin(t, "GET", path, ""); code != 404 {
		t.Errorf("get after delete: %d, want 404", code)
	}
	if code, _ := e.admin(t, "DELETE", path, ""); code != 404 {
		t.Errorf("second delete: %d, want 404", code)
	}
	if code, _ := e.admin(t, "DELETE", "/v1/revocations/abc", ""); code != 400 {
		t.Errorf("delete abc: %d, want 400", code)
	}
	if err := e.store.Close(); err != nil { // the store is gone: writes must fail with 503, so callers retry
		t.Fatal(err)
	}
	code, m := e.admin(t, "POST", "/v1/revocations", fmt.Sprintf(`{"kind":"cutoff","issuer":%q}`, e.iss.URL))
	if code != http.StatusServiceUnavailable {
		t.Errorf("revoke with the store closed: %d %v, want 503", code, m)
	}
}

// TestIntrospectWhenStale: a replica whose revocations are not current
// cannot say a token is active.
func TestIntrospectWhenStale(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	v, err := token.New(token.Options{Issuers: []token.Issuer{{Name: "idp", Issuer: iss.URL, Audiences: []string{"api"}, MaxTokenLifetime: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(t.Context(), "idp"); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	intake.NewAdmin(intake.AdminOptions{Token: adminToken, Verifier: v, Revocations: storage.NewIndex(),
		Fresh: func() bool { return false }}).Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tok, _ := iss.Mint("u", time.Minute, nil)
	req, _ := http.NewRequest("POST", srv.URL+"/v1/introspect", strings.NewReader("token="+tok))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("introspect with stale revocations: %d, want 503", resp.StatusCode)
	}
}

// TestLogoutSubjectCutoffCoversTheToken: with the IdP's clock ahead of ours
// (iat in our future, within the leeway), a logout that revokes the subject
// still takes the presented token out.
func TestLogoutSubjectCutoffCoversTheToken(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := storage.NewIndex()
	iss := intake.Issuer{Name: "idp", Issuer: "https://idp.example", MaxTokenLifetime: time.Hour, Leeway: 30 * time.Second}
	r := newRevoker(t, s, newFollower(t, s, x, storage.FollowerOptions{}), []intake.Issuer{iss}, nil)
	id := &token.Identity{Issuer: iss.Issuer, Subject: "alice", IssuedAt: time.Now().Add(10 * time.Second),
		ExpiresAt: time.Now().Add(10 * time.Minute)}
	if err := r.RevokeLogout(t.Context(), id, false, true); err != nil {
		t.Fatal(err)
	}
	if !x.Revoked(x.Keys(id.Issuer, "", "", id.Subject, nil), id.IssuedAt, time.Now()) {
		t.Error("the logged-out token, issued by a clock ahead of ours, is not revoked")
	}
}
