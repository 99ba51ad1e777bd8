package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// instance is tokengate started through run, as main starts it.
type instance struct {
	grpcAddr, httpAddr string
	logs               *logSink
	stop               func() error
	client             authv3.AuthorizationClient
	health             healthpb.HealthClient
}

// logSink collects the JSON log lines and announces the "serving" line.
type logSink struct {
	mu      sync.Mutex
	lines   []string
	serving chan map[string]any
	pw      *io.PipeWriter
}

func newLogSink() *logSink {
	pr, pw := io.Pipe()
	s := &logSink{serving: make(chan map[string]any, 1), pw: pw}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "serving" {
				s.serving <- rec
			}
		}
	}()
	return s
}

func (s *logSink) Write(p []byte) (int, error) { return s.pw.Write(p) }

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func start(t *testing.T, args []string, env map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := newLogSink()
	done := make(chan error, 1)
	var stdout strings.Builder
	go func() {
		done <- run(ctx, args, func(k string) string { return env[k] }, &stdout, logs)
	}()
	in := &instance{logs: logs}
	var once sync.Once
	var stopErr error
	in.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(time.Minute):
				stopErr = fmt.Errorf("run did not return within a minute of cancel")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := in.stop(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	select {
	case rec := <-logs.serving:
		in.grpcAddr, in.httpAddr = rec["grpc_addr"].(string), rec["http_addr"].(string)
	case err := <-done:
		once.Do(func() { cancel(); stopErr = err }) // nothing left to stop
		t.Fatalf("run returned before serving: %v\nlogs:\n%s", err, logs)
	case <-time.After(time.Minute):
		t.Fatalf("not serving after a minute; logs:\n%s", logs)
	}
	conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	in.client = authv3.NewAuthorizationClient(conn)
	in.health = healthpb.NewHealthClient(conn)
	return in
}

// writeConfig writes a config file; a storage section pointing into the
// test's temp dir is added unless the body has one.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(body, "storage:") {
		body += fmt.Sprintf("\nstorage: {path: %q}\n", filepath.Join(dir, "data", "tokengate.db"))
	}
	p := filepath.Join(dir, "tokengate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (in *instance) check(t *testing.T, tok string) *authv3.CheckResponse {
	t.Helper()
	resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things?page=2", Host: "api.example.com",
			Headers: map[string]string{"authorization": "Bearer " + tok, "x-request-id": "e2e"},
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// mintToken mints a token of iss for sub, valid for ttl from now.
func mintToken(t *testing.T, iss *tokentest.Issuer, sub string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	tok, err := iss.Mint(sub, ttl, extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitReady waits until /readyz says ready; the deadline is generous, for
// a loaded machine: what is tested is that it gets ready, not how fast.
func waitReady(t *testing.T, in *instance) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := httpGet(t, "http://"+in.httpAddr+"/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s after a minute", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeEndToEnd starts run("serve") with :0 ports against an issuer whose
// JWKS is served over HTTP, and talks to it as Envoy and Kubernetes would.
func TestServeEndToEnd(t *testing.T) {
	iss := tokentest.NewServer(t, "orders-api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers:
  - name: idp
    issuer: %q
    audiences: [orders-api]
claim_headers:
  x-auth-roles: roles
`, iss.URL))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)

	hc, err := in.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health = %v, %v; want SERVING", hc.GetStatus(), err)
	}

	tok, err := iss.Mint("alice", 5*time.Minute, map[string]any{"roles": []any{"reader", "writer"}})
	if err != nil {
		t.Fatal(err)
	}
	resp := in.check(t, tok)
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("valid token denied: %v", resp.GetDeniedResponse())
	}
	got := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	for k, want := range map[string]string{"x-auth-subject": "alice", "x-auth-issuer": iss.URL, "x-auth-roles": "reader,writer"} {
		if got[k] != want {
			t.Errorf("header %s = %q, want %q", k, got[k], want)
		}
	}

	other, err := tokentest.New(iss.URL, "orders-api") // same iss, keys the IdP never published
	if err != nil {
		t.Fatal(err)
	}
	forged := mintToken(t, other, "alice", 5*time.Minute, nil)
	resp = in.check(t, forged)
	denied := resp.GetDeniedResponse()
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || denied.GetStatus().GetCode() != 401 {
		t.Fatalf("forged token: status %v, HTTP %v; want Unauthenticated, 401", resp.GetStatus(), denied.GetStatus())
	}
	var challenge string
	for _, h := range denied.GetHeaders() {
		if h.GetHeader().GetKey() == "www-authenticate" {
			challenge = h.GetHeader().GetValue()
		}
	}
	if want := `Bearer realm="tokengate", error="invalid_token", error_description="key unknown"`; challenge != want {
		t.Errorf("www-authenticate = %q, want %q", challenge, want)
	}
	if !strings.Contains(denied.GetBody(), `"reason":"key_unknown"`) {
		t.Errorf("body = %s, want reason key_unknown", denied.GetBody())
	}

	_, metrics := httpGet(t, "http://"+in.httpAddr+"/metrics")
	for _, want := range []string{
		`tokengate_check_decisions_total{decision="allow",protocol="grpc",reason="allowed"} 1`,
		`tokengate_check_decisions_total{decision="deny",protocol="grpc",reason="key_unknown"} 1`,
		`tokengate_jwks_fetches_total{issuer="idp",result="changed"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := httpGet(t, "http://"+in.httpAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	// Server reflection: grpcurl and ghz work without proto files.
	conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	listed, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil { // an open stream would hold up the graceful stop below
		t.Fatal(err)
	}
	var services []string
	for _, s := range listed.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !slices.Contains(services, "envoy.service.auth.v3.Authorization") || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v", services)
	}

	if err := in.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	logs := in.logs.String()
	if strings.Contains(logs, tok) || strings.Contains(logs, forged) {
		t.Error("a token was written to the logs")
	}
}

// TestNotReadyUntilKeysLoad: with the JWKS endpoint down at start, /readyz
// and gRPC health say not ready, and Check answers UNAVAILABLE (Envoy's
// failure mode decides); once the endpoint is back, it becomes ready.
func TestNotReadyUntilKeysLoad(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	iss.FailJWKS(true)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, jwks_uri: %q, audiences: [api]}]
`, iss.URL, iss.URL+"/jwks.json"))
	in := start(t, []string{"serve", "--config", cfg}, nil)

	code, body := httpGet(t, "http://"+in.httpAddr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "issuer/idp") {
		t.Errorf("/readyz = %d %s; want 503 naming issuer/idp", code, body)
	}
	hc, err := in.health.Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health = %v, %v; want NOT_SERVING", hc.GetStatus(), err)
	}
	tok := mintToken(t, iss, "u", time.Minute, nil)
	_, err = in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
	if got := grpcCode(err); got != codes.Unavailable {
		t.Errorf("Check before keys: %v, want Unavailable", err)
	}

	iss.FailJWKS(false)
	waitReady(t, in)
	if resp := in.check(t, tok); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Errorf("after keys loaded: %v", resp.GetDeniedResponse())
	}
}

// TestShutdownGoesNotServingFirst: during the drain delay, health already
// says NOT_SERVING while Check still answers. The drain delay is long, so
// that a loaded machine still does all of that within it.
func TestShutdownGoesNotServingFirst(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 5s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
`, iss.URL))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	tok := mintToken(t, iss, "u", time.Minute, nil)

	stopped := make(chan error, 1)
	go func() { stopped <- in.stop() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		hc, err := in.health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && hc.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health did not go NOT_SERVING during the drain delay: %v %v", hc, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if resp := in.check(t, tok); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Errorf("Check during drain: %v", resp.GetDeniedResponse())
	}
	if code, _ := httpGet(t, "http://"+in.httpAddr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during drain = %d, want 503", code)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func TestDevServesAWorkingToken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &syncBuffer{}
	logs := newLogSink()
	done := make(chan error, 1)
	// Fixed ports would collide between test runs; dev accepts any loopback address.
	go func() {
		done <- run(ctx, []string{"dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--authz-http", "127.0.0.1:0", "--log-format", "json", "--data", t.TempDir()}, func(string) string { return "" }, stdout, logs)
	}()
	var rec map[string]any
	select {
	case rec = <-logs.serving:
	case err := <-done:
		t.Fatalf("dev exited: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("dev not serving after a minute")
	}
	httpAddr := rec["http_addr"].(string)
	in := &instance{httpAddr: httpAddr}
	waitReady(t, in)
	banner := stdout.String()
	authzAddr := rec["authz_http_addr"].(string)
	for _, want := range []string{"DEV MODE", "development only", "grpcurl", "TOKEN=ey", "curl -i http://" + authzAddr + "/orders"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	resp, err := http.Post("http://"+httpAddr+"/dev/token", "application/json", strings.NewReader(`{"sub":"bob","ttl":"5m","claims":{"roles":["x"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	var minted struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&minted); err != nil {
		t.Fatalf("/dev/token: %v", err)
	}
	resp.Body.Close()
	conn, err := grpc.NewClient(rec["grpc_addr"].(string), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	in.client = authv3.NewAuthorizationClient(conn)
	if r := in.check(t, minted.Token); codes.Code(r.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("minted dev token denied: %v", r.GetDeniedResponse())
	}
	// The banner's curl: the same decision over HTTP.
	authzHTTP := func() *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+authzAddr+"/orders", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+minted.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := authzHTTP(); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Auth-Subject") != "bob" {
		t.Fatalf("HTTP endpoint: %d, x-auth-subject %q; want 200, bob", resp.StatusCode, resp.Header.Get("X-Auth-Subject"))
	}
	// The walkthrough: revoke it through the admin API; the next check denies it.
	admin := between(banner, "ADMIN=", "\n")
	req, err := http.NewRequest("POST", "http://"+httpAddr+"/v1/revocations", strings.NewReader(`{"token":"`+minted.Token+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	rresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rresp.Body.Close()
	if rresp.StatusCode != http.StatusCreated {
		t.Fatalf("revoke with the printed admin token: %d", rresp.StatusCode)
	}
	r := in.check(t, minted.Token)
	if !strings.Contains(r.GetDeniedResponse().GetBody(), `"reason":"token_revoked"`) {
		t.Fatalf("after revocation: %v, want token_revoked", r.GetDeniedResponse())
	}
	if resp := authzHTTP(); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Tokengate-Reason") != "token_revoked" {
		t.Fatalf("HTTP endpoint after revocation: %d %q, want 401 token_revoked", resp.StatusCode, resp.Header.Get("X-Tokengate-Reason"))
	}
	resp, err = http.Post("http://"+httpAddr+"/dev/token", "application/json", strings.NewReader(`{"ttl":"100h"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("ttl 100h: status %d, want 400", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	err := run(t.Context(), []string{"dev", "--grpc", "0.0.0.0:0"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("err = %v, want a loopback refusal", err)
	}
}

func TestVersion(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"version"}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "tokengate ") {
		t.Errorf("version printed %q", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func between(s, start, end string) string {
	_, rest, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, end)
	return strings.TrimSpace(v)
}
