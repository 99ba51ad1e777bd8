package main

import (
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

// TestConfigUnknownKeysWithPaths: an unknown key is reported with its YAML
// path, together with every validation problem, not instead of them.
func TestConfigUnknownKeysWithPaths(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
bogus: 1
log: {level: loud, colour: true}
issuers:
  - name: a
    issuer: https://a.example
    audiences: []
    bogus: x
webhooks:
  fusionauth:
    signing_key: {hmac_secret: "", jwks: x}
logout_routes:
  - {path_prefix: /logout, verbs: [GET]}
`), noEnv)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"bogus: unknown key",
		"log.colour: unknown key",
		"issuers[0].bogus: unknown key",
		"webhooks.fusionauth.signing_key.jwks: unknown key",
		"logout_routes[0].verbs: unknown key",
		"log.level: want debug",                       // validation, reported too
		"issuers[0].audiences: at least one audience", // validation, reported too
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "main.") {
		t.Errorf("error names Go types:\n%v", err)
	}
}

// TestConfigTypeErrorsWithPaths: a value of the wrong type is reported with
// its path too, beside the other problems.
func TestConfigTypeErrorsWithPaths(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
cache: {max_entries: many}
issuers:
  - {name: a, issuer: https://a.example, audiences: [x], leeway: soon}
  - {name: b, issuer: https://b.example, audiences: x}
`), noEnv)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"cache.max_entries:", "issuers[0].leeway:", "issuers[1].audiences:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

// TestConfigZeroLeeway: leeway 0 means no leeway; only an absent leeway
// takes the default.
func TestConfigZeroLeeway(t *testing.T) {
	cfg, err := loadConfig(strings.NewReader(`
issuers:
  - {name: zero, issuer: https://a.example, audiences: [x], leeway: 0s}
  - {name: unset, issuer: https://b.example, audiences: [x]}
  - {name: zero-int, issuer: https://c.example, audiences: [x], leeway: 0}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{0, 30 * time.Second, 0} {
		if got := cfg.Issuers[i].Leeway; got != want {
			t.Errorf("issuers[%d] (%s).leeway = %v, want %v", i, cfg.Issuers[i].Name, got, want)
		}
		if got := cfg.issuers[i].Leeway; got != want {
			t.Errorf("the verifier's issuer %d: leeway %v, want %v", i, got, want)
		}
	}
}

func TestConfigNotAMapping(t *testing.T) {
	for name, doc := range map[string]string{
		"list":         "- a\n- b\n",
		"scalar":       "tokengate\n",
		"issuers list": "issuers: {name: a}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadConfig(strings.NewReader(doc), noEnv); err == nil {
				t.Errorf("%q accepted", doc)
			}
		})
	}
}
