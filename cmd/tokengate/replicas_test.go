package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

const testAdminToken = "test-admin-token-0123456789abcdef0123"

func replicaConfig(t *testing.T, iss *tokentest.Issuer, storage string) string {
	t.Helper()
	return writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
admin: {token: %q}
revocation: {poll_interval: 200ms}
%s
`, iss.URL, testAdminToken, storage))
}

func (in *instance) revoke(t *testing.T, body string) int {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+in.httpAddr+"/v1/revocations", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// decision is "allowed" or the denial reason.
func (in *instance) decision(t *testing.T, tok string) string {
	t.Helper()
	resp := in.check(t, tok)
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		return "allowed"
	}
	reason, _ := resp.GetDynamicMetadata().AsMap()["reason"].(string)
	return reason
}

// eventually waits until cond holds. The deadline is generous, for a
// loaded machine: what is tested is that it happens, not how fast.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tokengateDatabase is a database "tokengate" on a throwaway cluster of
// its own, and its URL.
func tokengateDatabase(t *testing.T) (*pgtest.Cluster, string) {
	t.Helper()
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	url, err := cluster.CreateDatabase(t.Context(), "tokengate")
	if err != nil {
		t.Fatal(err)
	}
	return cluster, url
}

// TestTwoReplicasOnePostgres: revoke through A and B denies; restart the
// database while both serve: they keep answering from memory, then catch up
// with revocations written after it is back.
func TestTwoReplicasOnePostgres(t *testing.T) {
	cluster, url := tokengateDatabase(t)
	iss := tokentest.NewServer(t, "api")
	storage := fmt.Sprintf("storage: {postgres_url: %q}", url)
	a := start(t, []string{"serve", "--config", replicaConfig(t, iss, storage)}, nil)
	b := start(t, []string{"serve", "--config", replicaConfig(t, iss, "")}, map[string]string{"TOKENGATE_POSTGRES_URL": url})
	waitReady(t, a)
	waitReady(t, b)

	mint := func(sub string) string {
		tok, err := iss.Mint(sub, 10*time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t1, t2, t3 := mint("one"), mint("two"), mint("three")
	for _, in := range []*instance{a, b} {
		if got := in.decision(t, t1); got != "allowed" {
			t.Fatalf("t1 before any revocation: %s", got)
		}
	}
	if code := a.revoke(t, `{"token":"`+t1+`"}`); code != http.StatusCreated {
		t.Fatalf("revoke through A: %d", code)
	}
	if got := a.decision(t, t1); got != "token_revoked" {
		t.Errorf("A right after its own write: %s, want token_revoked", got)
	}
	eventually(t, "B denies t1", func() bool { return b.decision(t, t1) == "token_revoked" })

	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if got := in.decision(t, t1); got != "token_revoked" {
			t.Errorf("%s during the outage, t1: %s", name, got)
		}
		if got := in.decision(t, t2); got != "allowed" {
			t.Errorf("%s during the outage, t2: %s", name, got)
		}
	}
	if code := a.revoke(t, `{"token":"`+t2+`"}`); code != http.StatusServiceUnavailable {
		t.Errorf("revoke with the database down: %d, want 503 (so the sender retries)", code)
	}
	if err := cluster.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A writes again", func() bool { return a.revoke(t, `{"token":"`+t2+`"}`) == http.StatusCreated })
	if code := b.revoke(t, `{"token":"`+t3+`"}`); code != http.StatusCreated {
		t.Fatalf("revoke through B: %d", code)
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		eventually(t, name+" denies t2 and t3", func() bool {
			return in.decision(t, t2) == "token_revoked" && in.decision(t, t3) == "token_revoked"
		})
	}
}

// TestRevocationsSurviveRestart: on each backend, a revocation made before a
// restart of tokengate is enforced after it.
func TestRevocationsSurviveRestart(t *testing.T) {
	backends := map[string]func(t *testing.T) string{
		"embedded": func(t *testing.T) string {
			return fmt.Sprintf("storage: {path: %q}", filepath.Join(t.TempDir(), "tokengate.db"))
		},
		"postgres": func(t *testing.T) string { return fmt.Sprintf("storage: {postgres_url: %q}", pgtest.URL(t)) },
	}
	for name, storage := range backends {
		t.Run(name, func(t *testing.T) {
			iss := tokentest.NewServer(t, "api")
			cfg := replicaConfig(t, iss, storage(t))
			tok := mintToken(t, iss, "u", 10*time.Minute, nil)
			first := start(t, []string{"serve", "--config", cfg}, nil)
			waitReady(t, first)
			if code := first.revoke(t, `{"token":"`+tok+`"}`); code != http.StatusCreated {
				t.Fatalf("revoke: %d", code)
			}
			if err := first.stop(); err != nil {
				t.Fatal(err)
			}
			second := start(t, []string{"serve", "--config", cfg}, nil)
			waitReady(t, second)
			if got := second.decision(t, tok); got != "token_revoked" {
				t.Errorf("after restart: %s, want token_revoked", got)
			}
		})
	}
}

func TestMigrateCommand(t *testing.T) {
	url := pgtest.URL(t)
	for i, want := range []string{"applied 0001_revocations.sql", "schema up to date"} {
		var out strings.Builder
		if err := run(t.Context(), []string{"migrate"}, func(k string) string {
			return map[string]string{"TOKENGATE_POSTGRES_URL": url}[k]
		}, &out, io.Discard); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate run %d printed %q, want %q", i+1, out.String(), want)
		}
	}
}

// TestLogoutRoute: a Check on the logout route with token T is allowed
// (the request goes on to the IdP), and the next Check with T is denied.
func TestLogoutRoute(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
logout_routes:
  - {host: auth.example.com, path_prefix: /oauth2/logout, methods: [GET, POST], revoke: [session]}
`, iss.URL))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	tok := mintToken(t, iss, "alice", 10*time.Minute, map[string]any{"sid": "s-1"})
	other := mintToken(t, iss, "alice", 10*time.Minute, map[string]any{"sid": "s-1"}) // same session, another token
	elsewhere := mintToken(t, iss, "alice", 10*time.Minute, map[string]any{"sid": "s-2"})
	logout := func(tok string) *authv3.CheckResponse {
		resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Host: "auth.example.com", Path: "/oauth2/logout?client_id=app&post_logout_redirect_uri=x",
				Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if got := in.decision(t, tok); got != "allowed" {
		t.Fatalf("before logout: %s", got)
	}
	if resp := logout(tok); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("the logout request itself was denied: %v", resp.GetDeniedResponse())
	}
	for name, want := range map[string]string{tok: "token_revoked", other: "token_revoked", elsewhere: "allowed"} {
		if got := in.decision(t, name); got != want {
			t.Errorf("after logout: %s, want %s", got, want)
		}
	}
}

// TestNotReadyUntilStoreReachable: with the database down at start, the
// replica is not ready and says why; once it is up, the replica becomes
// ready on its own.
func TestNotReadyUntilStoreReachable(t *testing.T) {
	cluster, url := tokengateDatabase(t)
	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss, fmt.Sprintf("storage: {postgres_url: %q}", url))}, nil)
	eventually(t, "a retry is logged", func() bool { return strings.Contains(in.logs.String(), "not ready; retrying") })
	code, body := httpGet(t, "http://"+in.httpAddr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"store"`) {
		t.Errorf("/readyz with the database down = %d %s; want 503 naming the store", code, body)
	}
	if err := cluster.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, in)
}

// TestAutoMigrateOff: without auto_migrate the replica waits, not ready,
// until `tokengate migrate` has run.
func TestAutoMigrateOff(t *testing.T) {
	url := pgtest.URL(t)
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss,
		fmt.Sprintf("storage: {postgres_url: %q, auto_migrate: false}", url))}, nil)
	eventually(t, "the schema check fails and is retried", func() bool {
		return strings.Contains(in.logs.String(), "not ready; retrying")
	})
	if code, _ := httpGet(t, "http://"+in.httpAddr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before migrate = %d, want 503", code)
	}
	if err := run(t.Context(), []string{"migrate", "--postgres-url", url}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitReady(t, in)
}

// TestBackchannelLogoutEndToEnd: an OP's logout token, posted to tokengate,
// revokes the session: the next Check with a token of that session is
// denied; a replayed logout token (an OP retrying after a lost answer) is
// answered 200 again.
func TestBackchannelLogoutEndToEnd(t *testing.T) {
	op := tokentest.NewServer(t, "api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: op, issuer: %q, audiences: [api], logout_client_ids: [web-app]}]
`, op.URL))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	tok := mintToken(t, op, "alice", 10*time.Minute, map[string]any{"sid": "session-7"})
	if got := in.decision(t, tok); got != "allowed" {
		t.Fatalf("before logout: %s", got)
	}
	now := time.Now()
	lt, err := op.Sign(jwt.MapClaims{
		"iss": op.URL, "aud": "web-app", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(), "jti": "lt-1", "sid": "session-7",
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}, map[string]any{"typ": "logout+jwt"})
	if err != nil {
		t.Fatal(err)
	}
	post := func() int {
		resp, err := http.PostForm("http://"+in.httpAddr+"/backchannel-logout", url.Values{"logout_token": {lt}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(); code != http.StatusOK {
		t.Fatalf("logout token: %d", code)
	}
	if got := in.decision(t, tok); got != "token_revoked" {
		t.Errorf("after back-channel logout: %s, want token_revoked", got)
	}
	if code := post(); code != http.StatusOK {
		t.Errorf("replayed logout token: %d, want 200", code)
	}
}

// TestDrainingReplicaKeepsFollowing: while a replica drains after SIGTERM
// (still answering Checks), revocations made elsewhere still reach it.
func TestDrainingReplicaKeepsFollowing(t *testing.T) {
	url := pgtest.URL(t)
	iss := tokentest.NewServer(t, "api")
	a := start(t, []string{"serve", "--config", replicaConfig(t, iss, fmt.Sprintf("storage: {postgres_url: %q}", url))}, nil)
	draining := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 3s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
storage: {postgres_url: %q}
revocation: {poll_interval: 200ms}
`, iss.URL, url))
	b := start(t, []string{"serve", "--config", draining}, nil)
	waitReady(t, a)
	waitReady(t, b)
	tok := mintToken(t, iss, "u", 10*time.Minute, nil)
	if got := b.decision(t, tok); got != "allowed" {
		t.Fatalf("before: %s", got)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	eventually(t, "B goes not ready", func() bool {
		code, _ := httpGet(t, "http://"+b.httpAddr+"/readyz")
		return code == http.StatusServiceUnavailable
	})
	if code := a.revoke(t, `{"token":"`+tok+`"}`); code != http.StatusCreated {
		t.Fatalf("revoke through A: %d", code)
	}
	eventually(t, "the draining replica denies", func() bool { return b.decision(t, tok) == "token_revoked" })
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// withAppName is url with its connections named name in pg_stat_activity.
func withAppName(t *testing.T, raw, name string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestReadOnlyReplicaHoldsTwoConnections: a replica that writes nothing (no
// admin API, webhooks, back-channel logout or logout routes) holds at most
// two PostgreSQL connections, its LISTEN connection and one for reads,
// while it follows a stream of revocations written through another one.
func TestReadOnlyReplicaHoldsTwoConnections(t *testing.T) {
	db := pgtest.URL(t)
	iss := tokentest.NewServer(t, "api")
	w := start(t, []string{"serve", "--config", replicaConfig(t, iss,
		fmt.Sprintf("storage: {postgres_url: %q}", withAppName(t, db, "writer")))}, nil)
	r := start(t, []string{"serve", "--config", writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
revocation: {poll_interval: 200ms}
storage: {postgres_url: %q}
`, iss.URL, withAppName(t, db, "reader")))}, nil)
	waitReady(t, w)
	waitReady(t, r)

	conn := pgtest.Connect(t, db)
	const readerConns = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'reader%'"
	most := 0
	for i := range 30 {
		tok, err := iss.Mint(fmt.Sprintf("user-%d", i), 10*time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code := w.revoke(t, `{"token":"`+tok+`"}`); code != http.StatusCreated {
			t.Fatalf("revoke %d through the writer: %d", i, code)
		}
		eventually(t, fmt.Sprintf("the reader denies token %d", i), func() bool { return r.decision(t, tok) == "token_revoked" })
		most = max(most, pgtest.QueryInt(t, conn, readerConns))
	}
	if most > 2 {
		t.Errorf("the read-only replica held %d connections, want at most 2", most)
	}
	if got := pgtest.QueryInt(t, conn, readerConns+" AND application_name = 'reader-listen'"); got != 1 {
		t.Errorf("the read-only replica's LISTEN connections: %d, want 1", got)
	}
}

// TestReaderAppliesPushedChanges: as the binary wires its store (the
// metrics wrapper over group commit over PostgreSQL), a replica applies the
// changes its notifications carry without reading the feed: the wrappers
// pass the pushed changes through. The replica that wrote them applies
// what its transactions committed, as the results report them.
func TestReaderAppliesPushedChanges(t *testing.T) {
	_, url := tokengateDatabase(t)
	iss := tokentest.NewServer(t, "api")
	storage := fmt.Sprintf("storage: {postgres_url: %q}", url)
	a := start(t, []string{"serve", "--config", replicaConfig(t, iss, storage)}, nil)
	b := start(t, []string{"serve", "--config", replicaConfig(t, iss, storage)}, nil)
	waitReady(t, a)
	waitReady(t, b)
	// A reads none of its writes back: each is applied from what its
	// transaction reported, or by its own notification when that comes
	// first. (It used to read the feed once a write at least.)
	feedReads := func() int {
		_, body := httpGet(t, "http://"+a.httpAddr+"/metrics")
		m := regexp.MustCompile(`(?m)^tokengate_store_operation_duration_seconds_count\{op="changes",result="ok"\} (\d+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("A's metrics lack its feed reads:\n%s", grepLines(body, "tokengate_store_operation_duration_seconds_count"))
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	readsBefore := feedReads()
	var toks []string
	const writes = 10
	for i := range writes {
		tok, err := iss.Mint(fmt.Sprintf("user-%d", i), 10*time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		if code := a.revoke(t, `{"token":"`+tok+`"}`); code != http.StatusCreated {
			t.Fatalf("revoke through A: %d", code)
		}
	}
	for _, tok := range toks {
		eventually(t, "B denies every revoked token", func() bool { return b.decision(t, tok) == "token_revoked" })
	}
	_, body := httpGet(t, "http://"+b.httpAddr+"/metrics")
	re := regexp.MustCompile(`(?m)^tokengate_revocation_changes_applied_total\{via="notification"\} (\d+)`)
	m := re.FindStringSubmatch(body)
	if m == nil || m[1] == "0" {
		t.Fatalf("B applied no change from its notifications (%v): every one was read\n%s", m, grepLines(body, "tokengate_revocation_changes_applied_total"))
	}
	// Besides its polls (one a second), a few reads at most.
	if n := feedReads() - readsBefore; n >= writes/2 {
		t.Errorf("A read the feed %d times during %d writes through it: its writes were read back", n, writes)
	}
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
