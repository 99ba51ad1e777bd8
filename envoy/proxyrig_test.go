package envoy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// The rig of the proxy tests: tokengate built and run as a child process,
// an upstream that echoes what reaches it, and a real proxy (nginx, Caddy)
// as a child process between a client and both, every one on loopback.

// requireTool returns the path of a proxy's binary. A missing one skips
// the test with the command that installs it, except under CI=true, where
// it fails: CI never silently skips the proxy tests (as pgtest does for
// PostgreSQL).
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		// Debian puts nginx in /usr/sbin, which a user's PATH may lack.
		if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
			return p
		}
		msg := fmt.Sprintf("%s is not installed (apt-get install -y %s)", name, debianPackage)
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatal(msg + "; failing rather than skipping because CI is true")
		}
		t.Skip(msg)
	}
	return path
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// buildTokengateBinary builds cmd/tokengate into the test's temp dir: the
// proxies talk to the binary as deployed, over its own listeners.
func buildTokengateBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tokengate")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/tokengate")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tokengate: %v\n%s", err, out)
	}
	return bin
}

// freeLoopbackAddr returns a loopback address no one listens on, for a
// proxy whose configuration must name its port before it starts.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// render replaces each old string of the shipped file by its new one. Each
// must occur exactly once: the test runs the file we ship, and a change to
// it that the rendering no longer matches fails here rather than testing
// something else.
func render(t *testing.T, name string, replacements ...string) string {
	t.Helper()
	text := string(readFile(t, name))
	for i := 0; i+1 < len(replacements); i += 2 {
		old, repl := replacements[i], replacements[i+1]
		if n := strings.Count(text, old); n != 1 {
			t.Fatalf("%s: %q occurs %d times, want once (the test rewrites it)", name, old, n)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	return text
}

// lockedBuffer collects a child's output for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// child is a process the test started and stops.
type child struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
	err    error
	once   sync.Once
}

// startChild starts cmd, with its output collected; the test's end stops it.
func startChild(t *testing.T, name string, cmd *exec.Cmd) *child {
	t.Helper()
	c := &child{name: name, cmd: cmd, output: &lockedBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = c.output
	}
	if cmd.Stderr == nil {
		cmd.Stderr = c.output
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop asks the process to end (SIGTERM: nginx's fast shutdown, Caddy's and
// tokengate's graceful one) and waits; after a generous grace it kills it.
func (c *child) stop(t *testing.T) {
	t.Helper()
	c.once.Do(func() {
		select {
		case <-c.done:
			return
		default:
		}
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("stop %s: %v", c.name, err)
		}
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s still running 30s after SIGTERM; killed", c.name)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitListening waits until addr accepts connections, failing early if the
// process exits. The deadline is generous, for a loaded machine.
func (c *child) waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if c.exited() {
			t.Fatalf("%s exited before listening on %s: %v\n%s", c.name, addr, c.err, c.output)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after a minute\n%s", c.name, addr, c.output)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rigAdminToken authenticates the test's calls to tokengate's admin API.
const rigAdminToken = "proxies-test-admin-token-0123456789abcdef"

// rigPolicy is the route policy behind both proxies: /public is public,
// /admin needs the admin role, a POST to /orders the orders:write scope,
// /internal a valid token that does not go on (forward_token: false), the
// rest a valid token. The policy open lets any valid token anywhere: no
// shipped proxy configuration names it, so no client may choose it.
const rigPolicy = `
policy:
  unmatched: deny
  policies:
    default:
      - name: public
        match: {path_prefix: /public}
        access: public
      - name: internal
        match: {path_prefix: /internal}
        access: authenticated
        forward_token: false
      - name: admin
        match: {path_prefix: /admin}
        require: {roles: {any_of: [admin]}}
      - name: orders-write
        match: {path_prefix: /orders, methods: [POST]}
        require: {scopes: {all_of: ["orders:write"]}}
      - name: api
        match: {path_prefix: /}
        access: authenticated
    open:
      - name: anything
        match: {path_prefix: /}
        access: authenticated
`

// rigTokenCookie is the rig's cookie token source, beside authorization
// (FusionAuth's hosted backend's name).
const rigTokenCookie = "app.at"

// tokengateProc is tokengate's binary running with the HTTP authorization
// endpoint in one mode; down is an issuer whose keys never load (its tokens
// cannot be decided: 503).
type tokengateProc struct {
	*child
	iss, down          *tokentest.Issuer
	authzAddr, apiAddr string
}

func startTokengateProc(t *testing.T, bin, mode string) *tokengateProc {
	t.Helper()
	iss := tokentest.NewServer(t, "api")
	down := tokentest.NewServer(t, "api")
	down.FailJWKS(true)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tokengate.yaml")
	body := fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", authz_http: "127.0.0.1:0"}
authz_http: {mode: %s}
shutdown: {drain_delay: 0s, timeout: 5s}
log: {format: json, level: info}
issuers:
  - {name: idp, issuer: %q, audiences: [api]}
  - {name: down, issuer: %q, audiences: [api], required: false}
admin: {token: %q}
claim_headers: {x-auth-roles: roles, x-auth-tenant: tid}
tokens:
  sources: [{header: authorization}, {cookie: %s}]
logout_routes:
  - {path_prefix: /oauth2/logout, methods: [GET, POST]}
storage: {path: %q}
%s`, mode, iss.URL, down.URL, rigAdminToken, rigTokenCookie, filepath.Join(dir, "data", "tokengate.db"), rigPolicy)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &tokengateProc{iss: iss, down: down}
	serving := make(chan map[string]any, 1)
	logs := &lockedBuffer{}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			logs.Write(append(line, '\n'))
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "serving" {
				serving <- rec
			}
		}
	}()
	p.child = startChild(t, "tokengate", cmd)
	p.child.output = logs
	go func() {
		<-p.child.done // the process and the copying of its output ended
		pw.Close()
	}()
	select {
	case rec := <-serving:
		p.authzAddr, _ = rec["authz_http_addr"].(string)
		p.apiAddr, _ = rec["http_addr"].(string)
		if p.authzAddr == "" || p.apiAddr == "" {
			t.Fatalf("tokengate's serving line lacks authz_http_addr or http_addr: %v", rec)
		}
	case <-p.child.done:
		t.Fatalf("tokengate exited before serving: %v\n%s", p.child.err, logs)
	case <-time.After(time.Minute):
		t.Fatalf("tokengate not serving after a minute\n%s", logs)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + p.apiAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tokengate not ready after a minute\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// mint mints a token of the rig's issuer for sub, valid for an hour.
func (p *tokengateProc) mint(t *testing.T, sub string, claims map[string]any) string {
	t.Helper()
	tok, err := p.iss.Mint(sub, time.Hour, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// revokeToken revokes one token (its jti, until its exp) through the admin
// API.
func (p *tokengateProc) revokeToken(t *testing.T, jti string, exp time.Time) {
	t.Helper()
	body := fmt.Sprintf(`{"kind":"token","issuer":%q,"jti":%q,"expires_at":%q}`, p.iss.URL, jti, exp.UTC().Format(time.RFC3339))
	req, err := http.NewRequest("POST", "http://"+p.apiAddr+"/v1/revocations", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+rigAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("revoke %s: %d %s", jti, resp.StatusCode, b)
	}
}

// seenRequest is what reached the upstream.
type seenRequest struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
}

// echoUpstream is the protected API: it records every request that reaches
// it and answers 200 with the request's headers as JSON.
type echoUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]seenRequest // by X-Test-Case
}

func startEchoUpstream(t *testing.T) *echoUpstream {
	t.Helper()
	u := &echoUpstream{seen: map[string]seenRequest{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := seenRequest{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(b)}
		u.mu.Lock()
		u.seen[r.Header.Get("X-Test-Case")] = s
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(u.Close)
	return u
}

// reached returns the request of one test case, if it reached the upstream.
func (u *echoUpstream) reached(testCase string) (seenRequest, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.seen[testCase]
	return s, ok
}

// proxyAnswer is what the client got.
type proxyAnswer struct {
	status int
	header http.Header
	body   string
}

// send makes one request through the proxy at addr, as a client would, for
// host api.example.com, tagged with testCase for the upstream's record.
func send(t *testing.T, addr, method, target, testCase string, header map[string]string, body string) proxyAnswer {
	t.Helper()
	lines := http.Header{}
	for k, v := range header {
		lines[k] = []string{v} // as written: no canonicalisation
	}
	return sendLines(t, addr, method, target, testCase, lines, body)
}

// sendLines is send with header lines as written, a name's values each on a
// line of its own (two Cookie lines, say).
func sendLines(t *testing.T, addr, method, target, testCase string, header http.Header, body string) proxyAnswer {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "api.example.com"
	req.Header.Set("X-Test-Case", testCase)
	for k, v := range header {
		req.Header[k] = append(req.Header[k], v...)
	}
	if body == "" {
		req.Body = nil
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s through the proxy: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return proxyAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// sendRaw writes a request as bytes (for request lines net/http will not
// write) and returns the status line's code.
func sendRaw(t *testing.T, addr, request string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRequireToolSkipsOutsideCI: a missing proxy skips the test, with the
// package to install, when CI is not true.
func TestRequireToolSkipsOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	var sub *testing.T
	t.Run("missing", func(t *testing.T) {
		sub = t
		requireTool(t, "tokengate-no-such-proxy", "no-such-package")
		t.Error("requireTool returned for a missing binary")
	})
	if !sub.Skipped() {
		t.Errorf("a missing proxy did not skip the test")
	}
}
