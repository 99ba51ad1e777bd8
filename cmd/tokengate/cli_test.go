package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// cliServer is a tokengate, started through run, with the admin API on.
type cliServer struct {
	in  *instance
	iss *tokentest.Issuer
	env map[string]string // TOKENGATE_SERVER and TOKENGATE_ADMIN_TOKEN
}

func startCLIServer(t *testing.T) *cliServer {
	t.Helper()
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss, "")}, nil)
	waitReady(t, in)
	return &cliServer{in: in, iss: iss, env: map[string]string{
		"TOKENGATE_SERVER": "http://" + in.httpAddr, "TOKENGATE_ADMIN_TOKEN": testAdminToken}}
}

// cli runs `tokengate ARGS…` with the server's environment.
func (s *cliServer) cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runCLIEnv(t, s.env, stdin, args...)
}

// mustCLI is cli for commands that must succeed; it returns stdout.
func (s *cliServer) mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, stderr, err := s.cli(t, stdin, args...)
	if err != nil {
		t.Fatalf("tokengate %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func (s *cliServer) mint(t *testing.T, sub string) string {
	t.Helper()
	tok, err := s.iss.Mint(sub, 10*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func runCLIEnv(t *testing.T, env map[string]string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := cli(t.Context(), args[0], args[1:], cliIO{getenv: func(k string) string { return env[k] },
		stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr})
	return stdout.String(), stderr.String(), err
}

const timeRE = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`

func TestCLIRevokeEachKind(t *testing.T) {
	s := startCLIServer(t)
	iss := s.iss.URL
	q := regexp.QuoteMeta
	exp := time.Now().Add(20 * time.Minute).UTC().Truncate(time.Second).Format(time.RFC3339)
	before := time.Now().Add(-time.Minute).UTC().Truncate(time.Second).Format(time.RFC3339)
	cases := map[string]struct {
		args []string
		line string // regexp of the human output, with the id as group 1
		want intake.Entry
		// unchanged: the same request again changes nothing (explicit times);
		// otherwise the default "now" moves the entry forward.
		unchanged bool
	}{
		"token": {
			args: []string{"revoke", "token", "--issuer", iss, "--jti", "j-1", "--expires-at", exp, "--reason", "lost laptop"},
			line: `revoked token "j-1" of ` + q(iss) + `; id (\d+), kept until ` + timeRE,
			// Without the token, the entry is kept for the max token lifetime
			// from now: the default "now" moves it forward, as for a session.
			want: intake.Entry{Kind: "token", Issuer: iss, JTI: "j-1", Source: "admin", Reason: "lost laptop"},
		},
		"session": {
			args: []string{"revoke", "session", "--issuer", iss, "--sid", "s-1"},
			line: `revoked session "s-1" of ` + q(iss) + `; id (\d+), kept until ` + timeRE,
			want: intake.Entry{Kind: "session", Issuer: iss, SID: "s-1", Source: "admin"},
		},
		"subject": {
			args: []string{"revoke", "subject", "--issuer", iss, "--subject", "alice", "--audience", "api", "--revoked-before", before},
			line: `revoked subject "alice" of ` + q(iss) + ` \(audience api\) before ` + q(before) + `; id (\d+), kept until ` + timeRE,
			want: intake.Entry{Kind: "subject", Issuer: iss, Subject: "alice", Audience: "api", Source: "admin"}, unchanged: true,
		},
		"cutoff": {
			args: []string{"revoke", "cutoff", "--issuer", iss, "--audience", "other-api", "--revoked-before", before},
			line: `revoked all tokens of ` + q(iss) + ` \(audience other-api\) before ` + q(before) + `; id (\d+), kept until ` + timeRE,
			want: intake.Entry{Kind: "cutoff", Issuer: iss, Audience: "other-api", Source: "admin"}, unchanged: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out := s.mustCLI(t, "", tc.args...)
			m := regexp.MustCompile(`^` + tc.line + "\n$").FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("got %q, want a line matching %s", out, tc.line)
			}
			id, _ := strconv.ParseInt(m[1], 10, 64)

			out = s.mustCLI(t, "", append(tc.args, "--json")...)
			if !strings.HasPrefix(out, "{\n  \"id\": ") {
				t.Errorf("--json printed %q, want indented JSON", out)
			}
			var got intake.Entry
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("--json output: %v\n%s", err, out)
			}
			if got.ID != id {
				t.Errorf("the same request again: id %d, want %d (merged into the first)", got.ID, id)
			}
			if got.ExpiresAt.IsZero() || got.CreatedAt.IsZero() || (name == "subject" || name == "cutoff") != (got.RevokedBefore != nil) {
				t.Errorf("entry times: %+v", got)
			}
			if len(got.Contributions) != 1 || got.Contributions[0].Source != "admin" || !got.Contributions[0].ExpiresAt.Equal(got.ExpiresAt) {
				t.Errorf("contributions %+v, want the operator's only, with the entry's expiry", got.Contributions)
			}
			ignore := cmpopts.IgnoreFields(intake.Entry{}, "ID", "ExpiresAt", "CreatedAt", "RevokedBefore", "Contributions")
			if diff := cmp.Diff(tc.want, got, ignore); diff != "" {
				t.Errorf("--json entry (-want +got):\n%s", diff)
			}

			out = s.mustCLI(t, "", tc.args...)
			if got := strings.HasPrefix(out, "already revoked (unchanged): "); got != tc.unchanged {
				t.Errorf("third time: got %q, want unchanged %v", out, tc.unchanged)
			}
		})
	}
}

// TestCLIRevokeUnrevokeIntrospect: the commands as an operator would chain
// them, checked against Envoy's view (Check).
func TestCLIRevokeUnrevokeIntrospect(t *testing.T) {
	s := startCLIServer(t)
	tok := s.mint(t, "carol")

	out := s.mustCLI(t, "", "introspect", tok)
	if want := `^active: sub=carol iss=` + regexp.QuoteMeta(s.iss.URL) + ` exp=` + timeRE + ` jti=\w+` + "\n$"; !regexp.MustCompile(want).MatchString(out) {
		t.Errorf("introspect: got %q, want %s", out, want)
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(s.mustCLI(t, "", "introspect", "--json", tok)), &claims); err != nil || claims["active"] != true {
		t.Fatalf("introspect --json: %v %v", claims, err)
	}
	jti := claims["jti"].(string)

	out = s.mustCLI(t, tok+"\n", "revoke", "token", "--token", "-", "--reason", "stolen")
	m := regexp.MustCompile(`^revoked token "` + jti + `" of .*; id (\d+), kept until ` + timeRE + "\n$").FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("revoke token from stdin: got %q", out)
	}
	if got := s.in.decision(t, tok); got != "token_revoked" {
		t.Errorf("Check after revoke: got %s, want token_revoked", got)
	}
	if out := s.mustCLI(t, tok, "introspect", "-"); out != "inactive (invalid, expired or revoked)\n" {
		t.Errorf("introspect a revoked token: got %q", out)
	}
	if out := s.mustCLI(t, "", "introspect", "--json", "not.a.token"); out != "{\n  \"active\": false\n}\n" {
		t.Errorf("introspect --json garbage: got %q", out)
	}

	// Flags after the argument work too.
	out = s.mustCLI(t, "", "unrevoke", m[1], "--json")
	var deleted struct{ Deleted intake.Entry }
	if err := json.Unmarshal([]byte(out), &deleted); err != nil || strconv.FormatInt(deleted.Deleted.ID, 10) != m[1] || deleted.Deleted.JTI != jti {
		t.Errorf("unrevoke --json: got %s (%v), want entry %s", out, err, m[1])
	}
	if got := s.in.decision(t, tok); got != "allowed" {
		t.Errorf("Check after unrevoke: got %s, want allowed", got)
	}
	if out := s.mustCLI(t, "", "introspect", tok); !strings.HasPrefix(out, "active: sub=carol") {
		t.Errorf("introspect after unrevoke: got %q", out)
	}

	// By value on the command line, pasted with its scheme; then by subject.
	other := s.mint(t, "dave")
	out = s.mustCLI(t, "", "revoke", "token", "--token", "Bearer "+tok)
	m = regexp.MustCompile(`^revoked token "` + jti + `" of .*; id (\d+),`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("revoke token --token: got %q", out)
	}
	if out := s.mustCLI(t, "", "unrevoke", m[1]); out != fmt.Sprintf("unrevoked token %q of %s (id %s)\n", jti, s.iss.URL, m[1]) {
		t.Errorf("unrevoke: got %q", out)
	}
	s.mustCLI(t, "", "revoke", "subject", "--issuer", s.iss.URL, "--subject", "dave")
	for sub, c := range map[string]struct{ tok, want string }{"carol": {tok, "allowed"}, "dave": {other, "token_revoked"}} {
		if got := s.in.decision(t, c.tok); got != c.want {
			t.Errorf("after revoking subject dave, %s's token: got %s, want %s", sub, got, c.want)
		}
	}
}

func TestCLIList(t *testing.T) {
	s := startCLIServer(t)
	iss := s.iss.URL
	for i := range 5 {
		if code := s.in.revoke(t, fmt.Sprintf(`{"kind":"subject","issuer":%q,"subject":"u%d"}`, iss, i)); code != http.StatusCreated {
			t.Fatalf("revoke u%d: %d", i, code)
		}
	}
	if code := s.in.revoke(t, fmt.Sprintf(`{"kind":"session","issuer":%q,"sid":"s-9"}`, iss)); code != http.StatusCreated {
		t.Fatalf("revoke s-9: %d", code)
	}

	out := s.mustCLI(t, "", "revocations", "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("list: got %d lines, want a header and 6 rows:\n%s", len(lines), out)
	}
	header := lines[0]
	cols := []string{"ID", "KIND", "ISSUER", "KEY", "AUDIENCE", "REVOKED BEFORE", "EXPIRES", "SOURCE"}
	for i, c := range cols {
		if !strings.Contains(header, c) || (i > 0 && strings.Index(header, c) < strings.Index(header, cols[i-1])) {
			t.Errorf("header %q: want the columns %v in order", header, cols)
		}
	}
	row := lines[3] // u2
	if f := strings.Fields(row); len(f) != 8 || f[1] != "subject" || f[2] != iss || f[3] != "u2" || f[4] != "-" || f[7] != "admin" {
		t.Errorf("row for u2: got %q", row)
	}
	if f := strings.Fields(lines[6]); len(f) != 8 || f[1] != "session" || f[3] != "s-9" || f[5] != "-" {
		t.Errorf("row for s-9: got %q", lines[6])
	}
	for _, l := range lines[1:] {
		for _, col := range []string{"KIND", "ISSUER", "KEY", "SOURCE"} {
			at := strings.Index(header, col)
			if at >= len(l) || l[at-1] != ' ' || l[at] == ' ' {
				t.Errorf("row %q: column %s not aligned with the header", l, col)
			}
		}
	}

	out, stderr, err := s.cli(t, "", "revocations", "list", "--kind", "subject", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out, "\n") - 1; got != 2 {
		t.Errorf("--limit 2: got %d rows, want 2:\n%s", got, out)
	}
	m := regexp.MustCompile(`--cursor (\d+) `).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("--limit 2: stderr %q, want the next cursor", stderr)
	}
	out = s.mustCLI(t, "", "revocations", "list", "--kind", "subject", "--limit", "2", "--cursor", m[1])
	if !strings.Contains(out, " u2 ") || !strings.Contains(out, " u3 ") || strings.Contains(out, " u1 ") {
		t.Errorf("second page: got\n%s\nwant u2 and u3", out)
	}

	out, stderr, err = s.cli(t, "", "revocations", "list", "--kind", "subject", "--limit", "2", "--all")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out, "\n") - 1; got != 5 || stderr != "" {
		t.Errorf("--all: got %d rows and stderr %q, want 5 rows and no cursor:\n%s", got, stderr, out)
	}

	var all intake.ListResponse
	if err := json.Unmarshal([]byte(s.mustCLI(t, "", "revocations", "list", "--all", "--limit", "4", "--json")), &all); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range all.Revocations {
		keys = append(keys, e.Subject+e.SID)
	}
	if want := []string{"u0", "u1", "u2", "u3", "u4", "s-9"}; !slices.Equal(keys, want) || all.NextCursor != "" {
		t.Errorf("--all --json: got %v (cursor %q), want %v", keys, all.NextCursor, want)
	}
	if out := s.mustCLI(t, "", "revocations", "list", "--limit", "1", "--json"); !strings.Contains(out, `"next_cursor": "`) {
		t.Errorf("one page --json: got %s, want the API's next_cursor", out)
	}

	if out := s.mustCLI(t, "", "revocations", "list", "--subject", "u3"); strings.Count(out, "\n") != 2 || !strings.Contains(out, " u3 ") {
		t.Errorf("--subject u3: got\n%s", out)
	}
	if out := s.mustCLI(t, "", "revocations", "list", "--issuer", "https://nobody.example"); out != "no revocations\n" {
		t.Errorf("another issuer: got %q", out)
	}
}

func TestCLIErrors(t *testing.T) {
	s := startCLIServer(t)
	iss := s.iss.URL
	tok := s.mint(t, "erin")
	other, err := tokentest.New(iss, "api") // same iss, keys the IdP never published
	if err != nil {
		t.Fatal(err)
	}
	forged := mintToken(t, other, "erin", time.Minute, nil)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + closed.Addr().String()
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	notTokengate := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notTokengate.Close)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)

	with := func(k, v string) map[string]string {
		env := map[string]string{"TOKENGATE_SERVER": s.env["TOKENGATE_SERVER"], "TOKENGATE_ADMIN_TOKEN": testAdminToken}
		env[k] = v
		return env
	}
	cases := map[string]struct {
		env        map[string]string
		stdin      string
		args       []string
		want       string
		wantStderr string
	}{
		"no admin token": {env: with("TOKENGATE_ADMIN_TOKEN", ""), args: []string{"revocations", "list"},
			want: "revocations list: TOKENGATE_ADMIN_TOKEN is not set"},
		"wrong admin token": {env: with("TOKENGATE_ADMIN_TOKEN", "not-the-admin-token"), args: []string{"revoke", "cutoff", "--issuer", iss},
			want: "revoke cutoff: 401 unauthorized: a valid admin token is required (does TOKENGATE_ADMIN_TOKEN match the server's admin.token?)"},
		"server down": {args: []string{"unrevoke", "--server", down, "1"},
			want: "unrevoke: no answer from tokengate at " + down + ": "},
		"timeout": {args: []string{"revocations", "list", "--server", slow.URL, "--timeout", "100ms"},
			want: "Client.Timeout exceeded"},
		"admin API off": {env: with("TOKENGATE_SERVER", notTokengate.URL), args: []string{"introspect", tok},
			want: "introspect: 404 not found (is --server a tokengate with the admin API on, i.e. admin.token set?)"},
		"bad server": {args: []string{"revocations", "list", "--server", "127.0.0.1:8181"},
			want: `--server "127.0.0.1:8181": want http(s)://HOST:PORT`},
		"unknown subcommand": {args: []string{"revoke", "everything"},
			want: `revoke: unknown subcommand "everything"`, wantStderr: "tokengate revoke subject --issuer ISS"},
		"no subcommand": {args: []string{"revocations"},
			want: "revocations: a subcommand is required", wantStderr: "tokengate revocations list"},
		"unknown flag": {args: []string{"revoke", "subject", "--user", "x"},
			want: "flag provided but not defined: -user", wantStderr: "Usage: tokengate revoke subject --issuer ISS --subject SUB"},
		"missing flags": {args: []string{"revoke", "token", "--jti", "j"},
			want: "revoke token: missing --issuer, --expires-at"},
		"token and fields": {args: []string{"revoke", "token", "--token", tok, "--jti", "j"},
			want: "revoke token: give --token, or --issuer, --jti and --expires-at, not both"},
		"bad time": {args: []string{"revoke", "cutoff", "--issuer", iss, "--revoked-before", "yesterday"},
			want: `invalid value "yesterday" for flag -revoked-before: want RFC 3339`},
		"extra argument": {args: []string{"revoke", "session", "--issuer", iss, "--sid", "s", tok},
			want: `revoke session: unexpected argument "` + tok[:10] + `…"`},
		"unknown issuer": {args: []string{"revoke", "cutoff", "--issuer", "https://nobody.example"},
			want: `revoke cutoff: 400 invalid_request: issuer "https://nobody.example" is not configured`},
		"forged token": {args: []string{"revoke", "token", "--token", "-"}, stdin: forged,
			want: "revoke token: 400 invalid_request: token does not verify: token key unknown"},
		"unrevoke unknown id": {args: []string{"unrevoke", "424242"},
			want: "unrevoke: 404 not_found: "},
		"unrevoke bad id": {args: []string{"unrevoke", "abc"},
			want: `unrevoke: ID "abc" is not a revocation id`},
		"introspect without token": {args: []string{"introspect"},
			want: "introspect: missing TOKEN", wantStderr: "Usage: tokengate introspect TOKEN|-"},
		"introspect empty stdin": {args: []string{"introspect", "-"},
			want: "introspect: empty token"},
		"bad kind": {args: []string{"revocations", "list", "--kind", "user"},
			want: `revocations list: 400 invalid_request: unknown revocation kind "user"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := tc.env
			if env == nil {
				env = s.env
			}
			out, stderr, err := runCLIEnv(t, env, tc.stdin, tc.args...)
			if err == nil {
				t.Fatalf("got no error (stdout %q), want %q", out, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %q, want %q", err, tc.want)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("got stderr %q, want %q", stderr, tc.wantStderr)
			}
			for _, secret := range []string{testAdminToken, tok, forged} {
				if strings.Contains(err.Error()+out+stderr, secret) {
					t.Errorf("a secret was printed: %v\n%s%s", err, out, stderr)
				}
			}
		})
	}
}

func TestCLIHelp(t *testing.T) {
	out, _, err := runCLIEnv(t, nil, "", "revoke", "--help")
	if err != nil || !strings.Contains(out, "TOKENGATE_ADMIN_TOKEN") || !strings.Contains(out, "tokengate unrevoke ID") {
		t.Errorf("revoke --help: got %q, %v; want the usage on stdout", out, err)
	}
	out, stderr, err := runCLIEnv(t, nil, "", "unrevoke", "-h")
	if err != nil || stderr != "" || !strings.Contains(out, "-server URL") || !strings.Contains(out, "never a flag") {
		t.Errorf("unrevoke -h: got %q, %q, %v; want the flags on stdout and success", out, stderr, err)
	}
}

func TestCLIParseArgs(t *testing.T) {
	cases := map[string]struct {
		args     []string
		wantPos  []string
		wantJSON bool
	}{
		"flags first":        {[]string{"--json", "42"}, []string{"42"}, true},
		"flags after":        {[]string{"42", "--json"}, []string{"42"}, true},
		"stdin":              {[]string{"-", "--json"}, []string{"-"}, true},
		"double dash":        {[]string{"--", "--json"}, []string{"--json"}, false},
		"no flags":           {[]string{"42"}, []string{"42"}, false},
		"flag value not arg": {[]string{"--server", "http://x", "42"}, []string{"42"}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			asJSON := fs.Bool("json", false, "")
			fs.String("server", "", "")
			pos, err := parseArgs(fs, tc.args, io.Discard, "ARG")
			if err != nil || !slices.Equal(pos, tc.wantPos) || *asJSON != tc.wantJSON {
				t.Errorf("got %v, json %v, %v; want %v, json %v", pos, *asJSON, err, tc.wantPos, tc.wantJSON)
			}
		})
	}
}

// TestCLIUnrevokeBySource: a token an operator revoked and then logged out
// through a logout route. `unrevoke ID` removes the operator's part only,
// and the token stays revoked by the logout; --source all removes the rest.
func TestCLIUnrevokeBySource(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	in := start(t, []string{"serve", "--config", replicaConfig(t, iss, `logout_routes:
  - {host: auth.example.com, path_prefix: /logout, methods: [GET]}`)}, nil)
	waitReady(t, in)
	s := &cliServer{in: in, iss: iss, env: map[string]string{
		"TOKENGATE_SERVER": "http://" + in.httpAddr, "TOKENGATE_ADMIN_TOKEN": testAdminToken}}
	tok := s.mint(t, "erin")
	if _, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "auth.example.com", Path: "/logout",
			Headers: map[string]string{"authorization": "Bearer " + tok}}}}}); err != nil {
		t.Fatal(err)
	}
	if got := in.decision(t, tok); got != "token_revoked" {
		t.Fatalf("after the logout: %s, want token_revoked", got)
	}
	out := s.mustCLI(t, tok, "revoke", "token", "--token", "-")
	m := regexp.MustCompile(`; id (\d+),`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("revoke printed no id: %q", out)
	}
	if _, stderr, err := s.cli(t, "", "unrevoke", m[1], "--source", "fusionauth"); err == nil || !strings.Contains(err.Error(), "404 source_not_found") {
		t.Errorf("unrevoke --source fusionauth: %v (%s), want 404 source_not_found", err, stderr)
	}
	out = s.mustCLI(t, "", "unrevoke", m[1])
	if !strings.HasPrefix(out, "removed admin from id "+m[1]+"; still revoked by logout-route: token ") {
		t.Errorf("unrevoke: got %q", out)
	}
	if got := in.decision(t, tok); got != "token_revoked" {
		t.Errorf("Check after unrevoking the operator's part: %s, want token_revoked (the logout stands)", got)
	}
	if out := s.mustCLI(t, "", "unrevoke", m[1], "--source", "all"); !strings.HasPrefix(out, "unrevoked token ") {
		t.Errorf("unrevoke --source all: got %q", out)
	}
	if got := in.decision(t, tok); got != "allowed" {
		t.Errorf("Check after --source all: %s, want allowed", got)
	}
}
