package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// TestMetricsDocumented scrapes /metrics of a running instance (every
// source of metrics configured: an issuer with a JWKS, FusionAuth webhooks,
// back-channel logout, a policy file) and checks that the README's metrics
// table lists exactly the tokengate_* families it exports: each exported
// one is documented, each documented one is exported from the start, but
// for the route policy's decision families, which have series once a
// decision is made under a rule (one request makes one, and one shadow
// decision).
func TestMetricsDocumented(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, `policies:
  default:
    - {name: health-shadow, match: {path: /healthz}, access: deny, shadow: true}
    - {name: health, match: {path: /healthz}, access: public}
`)
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 1, false, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	certFile, keyFile := filepath.Join(t.TempDir(), "tls.crt"), filepath.Join(t.TempDir(), "tls.key")
	writeAtomically(t, certFile, certPEM)
	writeAtomically(t, keyFile, keyPEM)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", grpc_tls: {cert_file: %q, key_file: %q}}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api], logout_client_ids: [web-app]}]
webhooks:
  fusionauth:
    issuer: idp
    header: {name: x-webhook-secret, value: "0123456789abcdef0123456789abcdef"}
policy: {file: %q}
`, certFile, keyFile, iss.URL, policyFile))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := authv3.NewAuthorizationClient(conn).Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "api.example.com", Path: "/healthz"}}}}); err != nil {
		t.Fatal(err)
	}
	_, body := httpGet(t, "http://"+in.httpAddr+"/metrics")
	if !regexp.MustCompile(`(?m)^tokengate_build_info\{commit="[^"]+",go_version="go[^"]+",version="dev"\} 1$`).MatchString(body) {
		t.Errorf("/metrics lacks tokengate_build_info{commit,go_version,version} 1")
	}
	var exported []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (tokengate_[a-z0-9_]+) `).FindAllStringSubmatch(body, -1) {
		exported = append(exported, m[1])
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Metrics and health\n")
	if !ok {
		t.Fatal(`README has no "## Metrics and health" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var documented []string
	name := regexp.MustCompile("^`(tokengate_[a-z0-9_]+)(\\{[a-z_,]*\\})?`$")
	for line := range strings.Lines(section) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if !strings.HasPrefix(line, "| `tokengate_") {
			continue
		}
		m := name.FindStringSubmatch(strings.TrimSpace(cells[0]))
		if m == nil {
			t.Errorf("metrics row %q: the first cell must be one `family{labels}`", strings.TrimSpace(line))
			continue
		}
		documented = append(documented, m[1])
	}
	slices.Sort(exported)
	slices.Sort(documented)
	if diff := cmp.Diff(exported, documented); diff != "" {
		t.Errorf("README metrics table differs from /metrics (-exported +documented):\n%s", diff)
	}
}
