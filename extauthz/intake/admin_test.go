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
			// (201). A token revocation by jti is kept for the issuer's max
			// token lifetime from now, so it moves forward too.
			wantCode := http.StatusCreated
			if name == "cutoff" {
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
	if err := r.RevokeLogout(t.Context(), id, false, true, false); err != nil {
		t.Fatal(err)
	}
	if !x.Revoked(x.Keys(id.Issuer, "", "", id.Subject, nil), id.IssuedAt, time.Now()) {
		t.Error("the logged-out token, issued by a clock ahead of ours, is not revoked")
	}
}

// TestAdminBounds: the admin API's clock is injected, far from the real one,
// so that these bounds are seen to use it. A revoked_before more than the
// issuer's leeway (30s) in the future is refused: cutoffs never move back,
// so a typo would deny a user for decades. A token revoked by jti is kept
// for at least the issuer's max token lifetime (1h) + leeway from now,
// whatever expires_at says: a too-early expires_at would let it back.
func TestAdminBounds(t *testing.T) {
	e := newEnv(t, adminToken)
	now := time.Now().Add(400 * 24 * time.Hour).UTC().Truncate(time.Second)
	e.clock.Set(now)
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	cases := map[string]struct {
		body    string
		code    int
		expires time.Time // of the stored entry, when created
	}{
		"cutoff beyond the leeway": {fmt.Sprintf(`{"kind":"cutoff","issuer":%q,"revoked_before":%q}`, e.iss.URL, at(31*time.Second)), 400, time.Time{}},
		"subject in 2052": {fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"alice","revoked_before":%q}`, e.iss.URL,
			now.AddDate(26, 0, 0).Format(time.RFC3339)), 400, time.Time{}},
		"subject within the leeway": {fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"bob","revoked_before":%q}`, e.iss.URL, at(30*time.Second)),
			201, now.Add(30*time.Second + time.Hour + 30*time.Second)},
		"token expiring too early": {fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"j-early","expires_at":%q}`, e.iss.URL, at(time.Minute)),
			201, now.Add(time.Hour + 30*time.Second)},
		"token expired already": {fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"j-past","expires_at":%q}`, e.iss.URL, at(-time.Hour)),
			201, now.Add(time.Hour + 30*time.Second)},
		"token expiring later": {fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":"j-late","expires_at":%q}`, e.iss.URL, at(2*time.Hour)),
			201, now.Add(2*time.Hour + 30*time.Second)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, m := e.admin(t, "POST", "/v1/revocations", tc.body)
			if code != tc.code {
				t.Fatalf("%d %v, want %d", code, m, tc.code)
			}
			if tc.code != 201 {
				if m["error"] != "invalid_request" {
					t.Errorf("answer %v, want invalid_request", m)
				}
				return
			}
			if got := m["expires_at"]; got != tc.expires.Format(time.RFC3339) {
				t.Errorf("expires_at = %v, want %s", got, tc.expires.Format(time.RFC3339))
			}
		})
	}
}

// TestAdminUnrevokeBySource: an entry an operator and a FusionAuth event
// both wrote. DELETE takes out the operator's part only (?source=admin by
// default), says what it removed and what remains, and the event's part
// stands, in the store and in this replica's index; ?source=all removes the
// rest and deletes the entry.
func TestAdminUnrevokeBySource(t *testing.T) {
	e := newEnv(t, adminToken)
	now := e.clock.Now().UTC().Truncate(time.Second)
	code, m := e.admin(t, "POST", "/v1/revocations", fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"alice"}`, e.iss.URL))
	if code != 201 {
		t.Fatalf("revoke: %d %v", code, m)
	}
	path := fmt.Sprintf("/v1/revocations/%v", m["id"])
	event := storage.Revocation{Kind: storage.KindSubject, Issuer: e.iss.URL, Key: "alice", RevokedBefore: now.Add(-10 * time.Minute),
		ExpiresAt: now.Add(50 * time.Minute), Source: "fusionauth:ev-1", Reason: "user.deactivate"}
	w := storage.Write{Revocations: []storage.Revocation{event}, EventID: "fusionauth:ev-1", EventExpiresAt: now.Add(time.Hour)}
	if _, err := e.store.Apply(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	if _, m := e.admin(t, "GET", path, ""); fmt.Sprint(sources(m["contributions"])) != "[admin fusionauth]" {
		t.Errorf("the entry's contributions: %v, want admin and fusionauth", m["contributions"])
	}

	code, m = e.admin(t, "DELETE", path, "")
	if code != 200 || fmt.Sprint(sources(m["removed"])) != "[admin]" || m["deleted"] != nil {
		t.Fatalf("unrevoke (source admin by default): %d %v, want admin's part removed", code, m)
	}
	rest, _ := m["remaining"].(map[string]any)
	if rest["source"] != "fusionauth:ev-1" || rest["revoked_before"] != event.RevokedBefore.Format(time.RFC3339) ||
		fmt.Sprint(sources(rest["contributions"])) != "[fusionauth]" {
		t.Errorf("remaining = %v, want the event's cutoff", rest)
	}
	k := e.index.Keys(e.iss.URL, "", "", "alice", nil)
	if !e.index.Revoked(k, event.RevokedBefore, now) || e.index.Revoked(k, now.Add(-time.Minute), now) {
		t.Error("the index does not hold the event's cutoff after the unrevoke")
	}
	if res, err := e.store.Apply(t.Context(), w); err != nil || !res.Duplicate {
		t.Errorf("the event redelivered: %+v, %v; want a duplicate", res, err)
	}
	if code, m := e.admin(t, "DELETE", path, ""); code != 404 || m["error"] != "source_not_found" {
		t.Errorf("unrevoke admin again: %d %v, want 404 source_not_found", code, m)
	}
	for _, bad := range []string{"fusionauth:ev-1", ""} {
		if code, m := e.admin(t, "DELETE", path+"?source="+url.QueryEscape(bad), ""); code != 400 {
			t.Errorf("?source=%q: %d %v, want 400", bad, code, m)
		}
	}
	code, m = e.admin(t, "DELETE", path+"?source=all", "")
	if code != 200 || fmt.Sprint(sources(m["removed"])) != "[fusionauth]" || m["deleted"] == nil || m["remaining"] != nil {
		t.Errorf("unrevoke all: %d %v, want the entry deleted", code, m)
	}
	if e.index.Revoked(k, event.RevokedBefore, now) {
		t.Error("still revoked after ?source=all")
	}
	if code, _ := e.admin(t, "GET", path, ""); code != 404 {
		t.Errorf("get after ?source=all: %d, want 404", code)
	}
}

// sources lists the "source" of each contribution in a JSON array.
func sources(v any) []any {
	var out []any
	list, _ := v.([]any)
	for _, c := range list {
		out = append(out, c.(map[string]any)["source"])
	}
	return out
}
