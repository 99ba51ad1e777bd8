package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func grpcCode(err error) codes.Code { return status.Code(err) }

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(strings.NewReader(`
issuers:
  - name: fusionauth
    issuer: https://auth.example.com
    audiences: [app-1]
`), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ic := cfg.Issuers[0]
	if ic.Leeway != 30*time.Second || ic.MaxTokenLifetime != time.Hour {
		t.Errorf("issuer defaults: leeway %v, lifetime %v; want 30s, 1h", ic.Leeway, ic.MaxTokenLifetime)
	}
	if !ic.Required || ic.AcceptIDTokens || ic.RequireTyp != "" {
		t.Errorf("issuer defaults: required %v, accept_id_tokens %v, require_typ %q; want true, false, none",
			ic.Required, ic.AcceptIDTokens, ic.RequireTyp)
	}
	if ti := cfg.issuers[0]; ti.AcceptIDTokens || ti.RequireTyp != "" {
		t.Errorf("verifier issuer: accept ID tokens %v, require typ %q; want false, none", ti.AcceptIDTokens, ti.RequireTyp)
	}
	if cfg.Listen.GRPC != "127.0.0.1:9191" || cfg.Listen.HTTP != "127.0.0.1:8181" || cfg.Cache.MaxEntries != 100000 ||
		cfg.Cache.MaxBytes != 64<<20 {
		t.Errorf("defaults: %+v %+v", cfg.Listen, cfg.Cache)
	}
}

// TestConfigReportsEveryProblem: one load names every problem with its path.
func TestConfigReportsEveryProblem(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
listen: {grpc: "nope"}
log: {level: loud}
cache: {max_bytes: 4096}
issuers:
  - name: Bad Name
    issuer: https://a.example
    audiences: []
    algorithms: [none, HS256]
  - name: b
    issuer: acme.com
    audiences: [x]
  - name: c
    issuer: https://c.example
    jwks_uri: http://keys.c.example/jwks
    audiences: [x]
    max_token_lifetime: 0s
    leeway: 1h
    require_typ: JWT
claim_headers:
  authorization: sub
storage: {write_timeout: 1ms}
`), func(string) string { return "" })
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"listen.grpc", "log.level", "cache.max_bytes", "issuers[0].name", "issuers[0].audiences",
		"issuers[0].algorithms[0]", "issuers[0].algorithms[1]", "issuers[1].jwks_uri",
		"issuers[2].jwks_uri", "issuers[2].leeway", "issuers[2].require_typ", "claim_headers",
		"storage.write_timeout",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestConfigUnknownKeysAreErrors(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
issuers:
  - name: a
    issuer: https://a.example
    audiences: [x]
    audience: [typo]
`), func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("err = %v, want the unknown key named", err)
	}
}

func TestConfigSecretFromEnvironment(t *testing.T) {
	env := map[string]string{"TOKENGATE_ISSUER_FUSION_AUTH_HMAC_SECRET": "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"}
	cfg, err := loadConfig(strings.NewReader(`
issuers: [{name: fusion-auth, issuer: acme.com, audiences: [app], algorithms: [HS256]}]
`), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Issuers[0].HMACSecret; got != env["TOKENGATE_ISSUER_FUSION_AUTH_HMAC_SECRET"] {
		t.Errorf("hmac secret = %q, want it from the environment", got)
	}
}

// TestExampleConfigLoads keeps tokengate.example.yaml honest.
func TestExampleConfigLoads(t *testing.T) {
	f := mustOpen(t, "../../tokengate.example.yaml")
	if _, err := loadConfig(f, func(string) string { return "" }); err != nil {
		t.Fatalf("tokengate.example.yaml: %v", err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestShippedConfigsLoad: the compose configuration and the Kubernetes
// ConfigMap load as tokengate would load them, with the variables their
// manifests set.
func TestShippedConfigsLoad(t *testing.T) {
	env := map[string]string{
		"TOKENGATE_POSTGRES_URL":                   "postgres://u:p@db:5432/tokengate",
		"TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET": "a-webhook-secret-of-at-least-32-bytes",
	}
	getenv := func(k string) string { return env[k] }
	if _, err := loadConfig(mustOpen(t, "../../envoy/tokengate.compose.yaml"), getenv); err != nil {
		t.Errorf("envoy/tokengate.compose.yaml: %v", err)
	}
	manifests, err := os.ReadFile("../../envoy/istio/tokengate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(manifests))
	found := false
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if cfg, ok := doc.Data["tokengate.yaml"]; doc.Kind == "ConfigMap" && ok {
			found = true
			c, err := loadConfig(strings.NewReader(cfg), getenv)
			if err != nil {
				t.Errorf("the ConfigMap's tokengate.yaml: %v", err)
			}
			if c.Storage.PostgresURL == "" {
				t.Error("the Deployment runs several replicas: they need the shared PostgreSQL store")
			}
		}
	}
	if !found {
		t.Error("no ConfigMap with tokengate.yaml in envoy/istio/tokengate.yaml")
	}
}

// TestMaxConnsFollowsWrites: storage.max_conns, when not set, is one
// connection on a replica that only reads and a few on one that writes; a
// value that is set wins.
func TestMaxConnsFollowsWrites(t *testing.T) {
	for name, tc := range map[string]struct {
		set  func(*Config)
		want int32
	}{
		"reads only":         {func(*Config) {}, readerConns},
		"admin API":          {func(c *Config) { c.Admin.Token = testAdminToken }, writerConns},
		"FusionAuth":         {func(c *Config) { c.Webhooks.FusionAuth.Issuer = "idp" }, writerConns},
		"back-channel":       {func(c *Config) { c.Issuers[0].LogoutClientIDs = []string{"app"} }, writerConns},
		"logout route":       {func(c *Config) { c.LogoutRoutes = []LogoutRouteConfig{{PathPrefix: "/logout"}} }, writerConns},
		"set on a reader":    {func(c *Config) { c.Storage.MaxConns = 7 }, 7},
		"set on a writer":    {func(c *Config) { c.Admin.Token = testAdminToken; c.Storage.MaxConns = 2 }, 2},
		"standby, read only": {func(c *Config) { c.Storage.FollowURL = "postgres://standby/db" }, readerConns},
	} {
		t.Run(name, func(t *testing.T) {
			c := defaultConfig()
			c.Issuers = []IssuerConfig{defaultIssuer()}
			tc.set(&c)
			if got := c.poolSize(); got != tc.want {
				t.Errorf("poolSize = %d, want %d", got, tc.want)
			}
		})
	}
}
