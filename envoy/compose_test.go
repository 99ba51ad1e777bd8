package envoy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/extauthz/intake"
)

// The local stack: docker-compose.yml, the FusionAuth kickstart, tokengate's
// compose configuration, and what the README says about them. No container
// engine runs in the tests, so the stack is checked statically: what one
// file says of another must be what the other says.
const (
	composeFile   = "../docker-compose.yml"
	kickstartFile = "fusionauth/kickstart.json"
	tokengateFile = "tokengate.compose.yaml"
	readmeFile    = "../README.md"
	serveFile     = "../cmd/tokengate/serve.go"
)

// webhookPath is where tokengate receives FusionAuth's webhooks; the check
// also finds it registered in cmd/tokengate/serve.go.
const webhookPath = "/webhooks/fusionauth"

// Services the stack needs, by compose name.
const (
	tokengateService  = "tokengate"
	postgresService   = "postgres"
	envoyService      = "envoy"
	fusionAuthService = "fusionauth"
)

// transactionAllMustSucceed is FusionAuth's TransactionType for "all
// webhooks must succeed": the README's recommendation, so that a logout can
// never succeed while tokengate missed it.
const transactionAllMustSucceed = "AbsoluteMajority"

// handledEvents are the FusionAuth event types tokengate acts on: every
// entry of intake.EventTypes but the metrics label for the rest and the
// test event (sent by the admin UI's test button, never enabled).
func handledEvents() []string {
	var events []string
	for _, e := range intake.EventTypes {
		if e != "other" && e != intake.EventTest {
			events = append(events, e)
		}
	}
	return events
}

func readStackFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{composeFile, kickstartFile, tokengateFile, readmeFile, serveFile} {
		files[name] = readFile(t, name)
	}
	return files
}

func TestComposeStack(t *testing.T) {
	for _, p := range checkStack(readStackFiles(t)) {
		t.Errorf("compose stack: %s", p)
	}
}

// TestComposeStackChecksCatchMistakes proves the checks above can fail: each
// case breaks one file in one way and expects it to be reported.
func TestComposeStackChecksCatchMistakes(t *testing.T) {
	tests := map[string]mutation{
		"latest image": {
			file: composeFile, old: "fusionauth/fusionauth-app:1.62.0", new: "fusionauth/fusionauth-app:latest",
			want: "latest",
		},
		"port on every interface": {
			file: composeFile, old: `"127.0.0.1:8181:8181"`, new: `"8181:8181"`,
			want: "every interface",
		},
		"moving minor tag": {
			file: composeFile, old: "envoyproxy/envoy:v1.36.13", new: "envoyproxy/envoy:v1.36-latest",
			want: "latest",
		},
		"untagged image": {
			file: composeFile, old: "image: postgres:15.10", new: "image: postgres",
			want: "no version tag",
		},
		"major-only Envoy": {
			file: composeFile, old: "envoyproxy/envoy:v1.36.13", new: "envoyproxy/envoy:v1",
			want: "a specific version",
		},
		"digest-only image": {
			file: composeFile, old: "mccutchen/go-httpbin:v2.15.0", new: "mccutchen/go-httpbin@sha256:0123",
			want: "no version tag",
		},
		"bind mount of a missing file": {
			file: composeFile, old: "./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro", new: "./envoy/envoy.yml:/etc/envoy/envoy.yaml:ro",
			want: "does not exist",
		},
		"tokengate image instead of a build": {
			file: composeFile, old: "    build: .\n", new: "    image: ghcr.io/tokengate/tokengate:latest\n",
			want: "build",
		},
		"healthcheck by curl": {
			file: composeFile, old: `test: ["CMD", "/tokengate", "healthcheck"]`, new: `test: ["CMD", "curl", "-f", "http://127.0.0.1:8181/readyz"]`,
			want: "tokengate healthcheck",
		},
		"envoy does not wait for health": {
			file: composeFile, old: "      tokengate:\n        condition: service_healthy", new: "      tokengate:\n        condition: service_started",
			want: "service_healthy",
		},
		"short depends_on": {
			file: composeFile, old: "    depends_on:\n      tokengate:\n        condition: service_healthy\n      app:\n        condition: service_started",
			new:  "    depends_on: [tokengate, app]",
			want: "condition",
		},
		"tokengate does not wait for postgres": {
			file: composeFile, old: "    depends_on:\n      postgres:\n        condition: service_healthy\n      # tokengate",
			new:  "    depends_on:\n      # tokengate",
			want: "postgres",
		},
		"config not mounted where serve reads it": {
			file: composeFile, old: `"--config", "/etc/tokengate/tokengate.yaml"`, new: `"--config", "/etc/tokengate/config.yaml"`,
			want: "--config",
		},
		"secret differs": {
			file: kickstartFile, old: `"webhookSecret": "compose-only-webhook-secret-change-me-0123456789"`, new: `"webhookSecret": "another-secret-of-at-least-thirty-two-bytes"`,
			want: "secret",
		},
		"key not HMAC": {
			file: kickstartFile, old: `"algorithm": "HS256"`, new: `"algorithm": "ES256"`,
			want: "HMAC",
		},
		"webhook to the wrong port": {
			file: kickstartFile, old: `"webhookURL": "http://tokengate:8181/webhooks/fusionauth"`, new: `"webhookURL": "http://tokengate:9191/webhooks/fusionauth"`,
			want: "webhook url",
		},
		"webhook to the wrong path": {
			file: kickstartFile, old: `"webhookURL": "http://tokengate:8181/webhooks/fusionauth"`, new: `"webhookURL": "http://tokengate:8181/webhook/fusionauth"`,
			want: "webhook url",
		},
		"unsigned webhook": {
			file: kickstartFile, old: `"signatureConfiguration": {
            "enabled": true,`, new: `"signatureConfiguration": {
            "enabled": false,`,
			want: "signatureConfiguration",
		},
		"signed with another key": {
			file: kickstartFile, old: `"signingKeyId": "#{webhookKeyId}"`, new: `"signingKeyId": "#{signingKeyId}"`,
			want: "signingKeyId",
		},
		"webhook for no tenant": {
			file: kickstartFile, old: `"tenantIds": ["#{FUSIONAUTH_TENANT_ID}"],`, new: ``,
			want: "tenant",
		},
		"event off on the webhook": {
			file: kickstartFile, old: `"user.deactivate": true,`, new: `"user.deactivate": false,`,
			want: "user.deactivate",
		},
		"event off on the tenant": {
			file: kickstartFile, old: `"user.deactivate": {"enabled": true,`, new: `"user.deactivate": {"enabled": false,`,
			want: "user.deactivate",
		},
		"event tokengate ignores": {
			file: kickstartFile, old: `"user.delete": true,`, new: `"user.delete": true, "user.login.success": true,`,
			want: "user.login.success",
		},
		"fire and forget": {
			file: kickstartFile, old: `"jwt.refresh-token.revoke": {"enabled": true, "transactionType": "AbsoluteMajority"}`,
			new:  `"jwt.refresh-token.revoke": {"enabled": true, "transactionType": "None"}`,
			want: "transactionType",
		},
		"audience is another application": {
			file: kickstartFile, old: `"applicationId": "b8f5c1f2-3d6a-4e1b-9c7d-0a2e4f6b8d10"`, new: `"applicationId": "b8f5c1f2-3d6a-4e1b-9c7d-0a2e4f6b8d11"`,
			want: "audience",
		},
		"issuer differs": {
			file: kickstartFile, old: `"issuer": "http://fusionauth:9011"`, new: `"issuer": "http://localhost:9011"`,
			want: "issuer",
		},
		"no password grant": {
			file: kickstartFile, old: `"enabledGrants": ["password", "refresh_token"]`, new: `"enabledGrants": ["authorization_code", "refresh_token"]`,
			want: "password",
		},
		"no refresh tokens": {
			file: kickstartFile, old: `"enabledGrants": ["password", "refresh_token"],
            "generateRefreshTokens": true,`, new: `"enabledGrants": ["password", "refresh_token"],
            "generateRefreshTokens": false,`,
			want: "generateRefreshTokens",
		},
		"password changes ignored": {
			file: tokengateFile, old: "revoke_on_password_change: true", new: "revoke_on_password_change: false",
			want: "revoke_on_password_change",
		},
		"webhook receiver off": {
			file: tokengateFile, old: "    issuer: fusionauth\n    # A password", new: "    # A password",
			want: "webhooks.fusionauth",
		},
		"README names another FusionAuth": {
			file: readmeFile, old: "fusionauth/fusionauth-app:1.62.0", new: "fusionauth/fusionauth-app:1.61.0",
			want: "README",
		},
		"README forgets /oauth2/logout": {
			file: readmeFile, old: "`/oauth2/logout` alone does not", new: "the logout endpoint alone does not",
			want: "/oauth2/logout",
		},
	}
	good := readStackFiles(t)
	catchMistakes(t, good, tests, func(files map[string][]byte) []string { return checkStack(files) })
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       yaml.Node         `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   yaml.Node         `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Volumes []string `yaml:"volumes"`
	Ports   []string `yaml:"ports"`
}

type composeStack struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type kickstartRequest struct {
	Method string          `json:"method"`
	URL    string          `json:"url"`
	Body   json.RawMessage `json:"body"`
}

type kickstart struct {
	Variables map[string]string  `json:"variables"`
	Requests  []kickstartRequest `json:"requests"`
}

// resolve replaces #{name} by the kickstart variable; FusionAuth's own
// (FUSIONAUTH_TENANT_ID, FUSIONAUTH_APPLICATION_ID) stay as they are.
func (k kickstart) resolve(s string) string {
	return regexp.MustCompile(`#\{(\w+)\}`).ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := k.Variables[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// request finds the one request with this method whose resolved URL has
// this prefix, and decodes its body into v.
func (k kickstart) request(method, urlPrefix string, v any) (string, error) {
	var found []kickstartRequest
	for _, r := range k.Requests {
		if r.Method == method && strings.HasPrefix(k.resolve(r.URL), urlPrefix) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%d requests %s %s…, want 1", len(found), method, urlPrefix)
	}
	if err := json.Unmarshal([]byte(k.resolve(string(found[0].Body))), v); err != nil {
		return "", fmt.Errorf("%s %s: %v", method, found[0].URL, err)
	}
	return k.resolve(found[0].URL), nil
}

type tokengateCompose struct {
	Listen  struct{ HTTP string } `yaml:"listen"`
	Issuers []struct {
		Name      string   `yaml:"name"`
		Issuer    string   `yaml:"issuer"`
		JWKSURI   string   `yaml:"jwks_uri"`
		Audiences []string `yaml:"audiences"`
	} `yaml:"issuers"`
	Webhooks struct {
		FusionAuth struct {
			Issuer     string `yaml:"issuer"`
			SigningKey struct {
				HMACSecret string `yaml:"hmac_secret"`
			} `yaml:"signing_key"`
			RevokeOnPasswordChange *bool `yaml:"revoke_on_password_change"`
		} `yaml:"fusionauth"`
	} `yaml:"webhooks"`
}

// pinnedTag: a version (digits and dots, an optional leading v and an
// optional suffix such as -alpine), never one that moves.
var pinnedTag = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*(-[a-z0-9.]+)?$`)

// specificVersion: major.minor.patch, for the images the configuration was
// written against (the README names them).
var specificVersion = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+$`)

func checkStack(files map[string][]byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var compose composeStack
	if err := yaml.Unmarshal(files[composeFile], &compose); err != nil {
		return []string{"docker-compose.yml: " + err.Error()}
	}
	var ks kickstart
	if err := json.Unmarshal(files[kickstartFile], &ks); err != nil {
		return []string{"kickstart.json: " + err.Error()}
	}
	var tg tokengateCompose
	if err := yaml.Unmarshal(files[tokengateFile], &tg); err != nil {
		return []string{"tokengate.compose.yaml: " + err.Error()}
	}
	for _, name := range []string{tokengateService, postgresService, envoyService, fusionAuthService} {
		if _, ok := compose.Services[name]; !ok {
			bad("docker-compose.yml: no service %q", name)
		}
	}
	if len(problems) > 0 {
		return problems
	}

	// Published ports: on loopback only. The stack's secrets (the admin
	// token, FusionAuth's kickstart API key) are in the repository, so a
	// port on every interface hands them to the network.
	for _, name := range sortedKeys(compose.Services) {
		for _, p := range compose.Services[name].Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				bad("docker-compose.yml: service %s publishes %q on every interface; want 127.0.0.1:HOST:CONTAINER", name, p)
			}
		}
	}

	// Images: pinned, and the two the configuration was written for named
	// in the README.
	for _, name := range sortedKeys(compose.Services) {
		s := compose.Services[name]
		if s.Image == "" {
			if s.Build.IsZero() {
				bad("docker-compose.yml: service %s has neither image nor build", name)
			}
			continue
		}
		// repo[:tag][@digest]; a registry host may carry a port, so the tag
		// is after the last ':' of the last path element.
		ref, _, _ := strings.Cut(s.Image, "@")
		repo, tag := ref, ""
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			repo, tag = ref[:i], ref[i+1:]
		}
		switch {
		case tag == "":
			bad("docker-compose.yml: service %s image %q: no version tag (it would pull latest, or say no version)", name, s.Image)
		case strings.Contains(tag, "latest"):
			bad("docker-compose.yml: service %s image %q: a latest tag moves; pin a version", name, s.Image)
		case !pinnedTag.MatchString(tag):
			bad("docker-compose.yml: service %s image %q: tag %q is not a version", name, s.Image, tag)
		}
		if name == fusionAuthService || name == envoyService {
			if !specificVersion.MatchString(tag) {
				bad("docker-compose.yml: service %s image %q: pin a specific version (x.y.z), the one the configuration was written for", name, s.Image)
			}
			if !bytes.Contains(files[readmeFile], []byte("`"+s.Image+"`")) {
				bad("README: %q is not named in the README (say which versions the stack was written for)", s.Image)
			}
			if !strings.Contains(repo, "/") {
				bad("docker-compose.yml: service %s image %q: want the upstream repository", name, s.Image)
			}
		}
	}

	// Bind mounts exist (paths are relative to the repository root, where
	// docker-compose.yml is); named volumes are declared.
	for _, name := range sortedKeys(compose.Services) {
		for _, v := range compose.Services[name].Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					bad("docker-compose.yml: service %s mounts %s, which does not exist", name, src)
				}
			} else if _, ok := compose.Volumes[src]; !ok {
				bad("docker-compose.yml: service %s uses volume %q, not declared under volumes", name, src)
			}
		}
	}

	// tokengate: built from the Dockerfile, its configuration mounted where
	// serve reads it, healthy by its own healthcheck.
	tgs := compose.Services[tokengateService]
	if tgs.Image != "" || !buildsRoot(tgs.Build) {
		bad("docker-compose.yml: tokengate: want build: . (the image the Dockerfile builds), got image %q", tgs.Image)
	}
	if i := slices.Index(tgs.Command, "--config"); len(tgs.Command) == 0 || tgs.Command[0] != "serve" || i < 0 || i+1 >= len(tgs.Command) {
		bad("docker-compose.yml: tokengate command %q: want serve --config <file>", tgs.Command)
	} else if want := "./envoy/" + tokengateFile + ":" + tgs.Command[i+1]; !slices.ContainsFunc(tgs.Volumes, func(v string) bool {
		return v == want || strings.HasPrefix(v, want+":")
	}) {
		bad("docker-compose.yml: tokengate --config %s: want ./envoy/%s mounted there (volumes %q)", tgs.Command[i+1], tokengateFile, tgs.Volumes)
	}
	if h := tgs.Healthcheck; h == nil || len(h.Test) < 3 || h.Test[0] != "CMD" || h.Test[1] != "/tokengate" || h.Test[2] != "healthcheck" {
		bad("docker-compose.yml: tokengate healthcheck: want [CMD, /tokengate, healthcheck] (tokengate healthcheck; the image has no shell or curl)")
	}

	// depends_on: long form with a condition; service_healthy on a
	// dependency that has a healthcheck; and the two orderings the stack
	// relies on.
	deps := map[string]map[string]string{}
	for _, name := range sortedKeys(compose.Services) {
		d, err := dependsOn(compose.Services[name].DependsOn)
		if err != nil {
			bad("docker-compose.yml: service %s depends_on: %v", name, err)
			continue
		}
		deps[name] = d
		for _, dep := range sortedKeys(d) {
			target, ok := compose.Services[dep]
			switch {
			case !ok:
				bad("docker-compose.yml: service %s depends on %q, not a service", name, dep)
			case target.Healthcheck != nil && d[dep] != "service_healthy":
				bad("docker-compose.yml: service %s depends on %s with %s: want condition service_healthy (it has a healthcheck)", name, dep, d[dep])
			}
		}
	}
	for _, want := range [][2]string{{envoyService, tokengateService}, {tokengateService, postgresService}} {
		if deps[want[0]][want[1]] != "service_healthy" {
			bad("docker-compose.yml: %s must depend on %s with condition service_healthy", want[0], want[1])
		}
	}

	// The issuer, the audience and the webhook receiver.
	var issuer *struct {
		Name      string   `yaml:"name"`
		Issuer    string   `yaml:"issuer"`
		JWKSURI   string   `yaml:"jwks_uri"`
		Audiences []string `yaml:"audiences"`
	}
	fa := tg.Webhooks.FusionAuth
	for i := range tg.Issuers {
		if fa.Issuer != "" && (tg.Issuers[i].Name == fa.Issuer || tg.Issuers[i].Issuer == fa.Issuer) {
			issuer = &tg.Issuers[i]
		}
	}
	if issuer == nil {
		bad("tokengate.compose.yaml: webhooks.fusionauth.issuer %q names no issuer: the webhook receiver is off", fa.Issuer)
		return problems
	}
	appID := ks.Variables["applicationId"]
	if appID == "" || !slices.Contains(issuer.Audiences, appID) {
		bad("tokengate.compose.yaml: issuer %s audiences %q: want the kickstart's application id %q (FusionAuth's aud)", issuer.Name, issuer.Audiences, appID)
	}
	var tenant struct {
		Tenant struct {
			Issuer             string `json:"issuer"`
			EventConfiguration struct {
				Events map[string]struct {
					Enabled         bool   `json:"enabled"`
					TransactionType string `json:"transactionType"`
				} `json:"events"`
			} `json:"eventConfiguration"`
		} `json:"tenant"`
	}
	if _, err := ks.request("PATCH", "/api/tenant/#{FUSIONAUTH_TENANT_ID}", &tenant); err != nil {
		bad("kickstart.json: the default tenant: %v", err)
	}
	if tenant.Tenant.Issuer != issuer.Issuer {
		bad("kickstart.json: tenant issuer %q, tokengate.compose.yaml issuer %q: they must be equal (exact match on iss)", tenant.Tenant.Issuer, issuer.Issuer)
	}
	if !strings.HasPrefix(issuer.JWKSURI, issuer.Issuer+"/") {
		bad("tokengate.compose.yaml: jwks_uri %q is not under the issuer %q", issuer.JWKSURI, issuer.Issuer)
	}
	var app struct {
		Application struct {
			OAuthConfiguration struct {
				EnabledGrants         []string `json:"enabledGrants"`
				GenerateRefreshTokens bool     `json:"generateRefreshTokens"`
			} `json:"oauthConfiguration"`
		} `json:"application"`
	}
	if _, err := ks.request("POST", "/api/application/"+appID, &app); err != nil {
		bad("kickstart.json: the application (audience %s): %v", appID, err)
	}
	oc := app.Application.OAuthConfiguration
	for _, g := range []string{"password", "refresh_token"} {
		if !slices.Contains(oc.EnabledGrants, g) {
			bad("kickstart.json: application enabledGrants %q: the walkthrough needs %s", oc.EnabledGrants, g)
		}
	}
	if !oc.GenerateRefreshTokens {
		bad("kickstart.json: application oauthConfiguration.generateRefreshTokens: the walkthrough needs a refresh token (offline_access)")
	}

	// The signing key: HMAC, its secret the one compose gives tokengate.
	secret := tgs.Environment["TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET"]
	if fa.SigningKey.HMACSecret != "" {
		bad("tokengate.compose.yaml: webhooks.fusionauth.signing_key.hmac_secret: leave it to docker-compose.yml's TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET, the one place besides the kickstart")
	}
	if secret == "" {
		bad("docker-compose.yml: tokengate sets no TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET")
	}
	var key struct {
		Key struct {
			Algorithm string `json:"algorithm"`
			Secret    string `json:"secret"`
		} `json:"key"`
	}
	keyID := ks.Variables["webhookKeyId"]
	if _, err := ks.request("POST", "/api/key/import/"+keyID, &key); err != nil || keyID == "" {
		bad("kickstart.json: the webhook signing key (variable webhookKeyId %q): %v", keyID, err)
	}
	if !strings.HasPrefix(key.Key.Algorithm, "HS") {
		bad("kickstart.json: webhook signing key algorithm %q: want HMAC (HS256), tokengate holds its secret", key.Key.Algorithm)
	}
	if key.Key.Secret != secret {
		bad("kickstart.json: the webhook signing key's secret is not docker-compose.yml's TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET")
	}

	// The webhook: to tokengate's receiver, signed with that key, for the
	// tenant, with every event tokengate handles and no other.
	var hook struct {
		Webhook struct {
			URL                    string          `json:"url"`
			Global                 bool            `json:"global"`
			TenantIDs              []string        `json:"tenantIds"`
			EventsEnabled          map[string]bool `json:"eventsEnabled"`
			SignatureConfiguration struct {
				Enabled      bool   `json:"enabled"`
				SigningKeyID string `json:"signingKeyId"`
			} `json:"signatureConfiguration"`
		} `json:"webhook"`
	}
	if _, err := ks.request("POST", "/api/webhook", &hook); err != nil {
		bad("kickstart.json: the webhook: %v", err)
	}
	w := hook.Webhook
	_, port, err := net.SplitHostPort(tg.Listen.HTTP)
	if err != nil {
		bad("tokengate.compose.yaml: listen.http %q: %v", tg.Listen.HTTP, err)
	}
	if want := "http://" + tokengateService + ":" + port + webhookPath; w.URL != want {
		bad("kickstart.json: webhook url %q: want %s (tokengate's service, listen.http port and receiver path)", w.URL, want)
	}
	if !bytes.Contains(files[serveFile], []byte(`"POST `+webhookPath+`"`)) {
		bad("cmd/tokengate/serve.go: registers no POST %s: the webhook url names a path tokengate does not serve", webhookPath)
	}
	if !w.SignatureConfiguration.Enabled || w.SignatureConfiguration.SigningKeyID != keyID {
		bad("kickstart.json: webhook signatureConfiguration %+v: want enabled, signingKeyId the imported HMAC key %s", w.SignatureConfiguration, keyID)
	}
	if !w.Global && !slices.Contains(w.TenantIDs, "#{FUSIONAUTH_TENANT_ID}") {
		bad("kickstart.json: webhook tenantIds %q: want the default tenant (#{FUSIONAUTH_TENANT_ID})", w.TenantIDs)
	}
	handled := handledEvents()
	for _, e := range handled {
		if !w.EventsEnabled[e] {
			bad("kickstart.json: webhook eventsEnabled: %s is off; tokengate acts on it", e)
		}
		ev, ok := tenant.Tenant.EventConfiguration.Events[e]
		if !ok || !ev.Enabled {
			bad("kickstart.json: tenant eventConfiguration: %s is not enabled; tokengate acts on it", e)
		}
		if ok && ev.TransactionType != transactionAllMustSucceed {
			bad("kickstart.json: tenant eventConfiguration %s transactionType %q: want %s (all webhooks must succeed)", e, ev.TransactionType, transactionAllMustSucceed)
		}
	}
	for _, e := range sortedKeys(w.EventsEnabled) {
		if w.EventsEnabled[e] && !slices.Contains(handled, e) {
			bad("kickstart.json: webhook eventsEnabled: %s is not an event tokengate acts on", e)
		}
	}
	for _, e := range sortedKeys(tenant.Tenant.EventConfiguration.Events) {
		if tenant.Tenant.EventConfiguration.Events[e].Enabled && !slices.Contains(handled, e) {
			bad("kickstart.json: tenant eventConfiguration: %s is not an event tokengate acts on (with all-must-succeed it would only add a way to fail)", e)
		}
	}
	if p := fa.RevokeOnPasswordChange; p != nil && !*p {
		bad("tokengate.compose.yaml: webhooks.fusionauth.revoke_on_password_change is false, and the README says a password change reaches tokengate")
	}

	// What the README promises of the stack.
	readme := string(files[readmeFile])
	const section = "## Local stack with FusionAuth"
	_, body, ok := strings.Cut(readme, section+"\n")
	if !ok {
		bad("README: no section %q", section)
	}
	body, _, _ = strings.Cut(body, "\n## ")
	for _, s := range []string{"`/oauth2/logout` alone does not", "POST /api/logout", "token_revoked", "offline_access"} {
		if !strings.Contains(body, s) {
			bad("README: %q does not say %q", section, s)
		}
	}
	for _, e := range handled {
		if !strings.Contains(body, "`"+e+"`") {
			bad("README: %q does not name %s", section, e)
		}
	}
	return problems
}

// buildsRoot: build: . or build: {context: .}.
func buildsRoot(n yaml.Node) bool {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value == "."
	case yaml.MappingNode:
		var b struct {
			Context string `yaml:"context"`
		}
		return n.Decode(&b) == nil && b.Context == "."
	}
	return false
}

// dependsOn reads a service's depends_on: only the long form says what is
// waited for, so the short (list) form is an error.
func dependsOn(n yaml.Node) (map[string]string, error) {
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return nil, err
		}
		out := map[string]string{}
		for k, v := range m {
			if v.Condition == "" {
				return nil, fmt.Errorf("%s: no condition", k)
			}
			out[k] = v.Condition
		}
		return out, nil
	}
	return nil, fmt.Errorf("want the long form, each dependency with a condition (service_healthy where it has a healthcheck)")
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}
