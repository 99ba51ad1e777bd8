package main

import (
	"fmt"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api], logout_client_ids: [web-app]}]
webhooks:
  fusionauth:
    issuer: idp
    header: {name: x-webhook-secret, value: "0123456789abcdef0123456789abcdef"}
policy: {file: %q}
`, iss.URL, policyFile))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, in)
	if _, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
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
