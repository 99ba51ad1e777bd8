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

// TestConfigMergeKeys: a merge key (<<: *anchor) fills in only the keys the
// mapping does not give itself, wherever it is written; of several merged
// mappings the first wins. A merged mapping's unknown keys are still
// reported.
func TestConfigMergeKeys(t *testing.T) {
	cfg, err := loadConfig(strings.NewReader(`
issuers:
  - &a {name: a, issuer: https://a.example, audiences: [x], allow_insecure_http: true, leeway: 45s}
  - name: b
    issuer: https://b.example
    allow_insecure_http: false
    leeway: 0
    <<: *a
  - &c {name: c, issuer: https://c.example, audiences: [y], max_token_lifetime: 2h}
  - <<: [*c, *a]
    name: d
    issuer: https://d.example
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Audiences         string
		Leeway, Lifetime  time.Duration
		AllowInsecureHTTP bool
	}
	for i, want := range map[int]got{
		1: {Audiences: "x", Leeway: 0, Lifetime: time.Hour, AllowInsecureHTTP: false},
		3: {Audiences: "y", Leeway: 45 * time.Second, Lifetime: 2 * time.Hour, AllowInsecureHTTP: true},
	} {
		ic := cfg.Issuers[i]
		g := got{strings.Join(ic.Audiences, " "), ic.Leeway, ic.MaxTokenLifetime, ic.AllowInsecureHTTP}
		if g != want {
			t.Errorf("issuers[%d] (%s): got %+v, want %+v", i, ic.Name, g, want)
		}
	}

	_, err = loadConfig(strings.NewReader(`
issuers:
  - &a {name: a, issuer: https://a.example, audiences: [x]}
  - {<<: *bad, name: b, issuer: https://b.example, audiences: [x]}
`), noEnv)
	if err == nil {
		t.Error("a merge of an undefined anchor accepted")
	}
	_, err = loadConfig(strings.NewReader(`
tokens: &t {max_bytes: 4096}
issuers:
  - {<<: *t, name: b, issuer: https://b.example, audiences: [x]}
  - {<<: 5, name: c, issuer: https://c.example, audiences: [x]}
  - &d {<<: *d, name: d, issuer: https://d.example, audiences: [x]}
`), noEnv)
	for _, want := range []string{
		"issuers[0].max_bytes: unknown key",
		"issuers[1]: <<: want a mapping",
		"issuers[2]: <<: merges a mapping into itself",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

// TestConfigOneDocument: a second YAML document is an error, not ignored.
func TestConfigOneDocument(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
issuers: [{name: a, issuer: https://a.example, audiences: [x]}]
---
bogus: 1
`), noEnv)
	if err == nil || !strings.Contains(err.Error(), "second YAML document") {
		t.Errorf("err = %v, want the second document reported", err)
	}
	if _, err := loadConfig(strings.NewReader(`---
issuers: [{name: a, issuer: https://a.example, audiences: [x]}]
`), noEnv); err != nil {
		t.Errorf("one document after ---: %v", err)
	}
	for name, tail := range map[string]string{"a trailing ---": "---\n", "--- and a comment": "---\n# end\n", "--- and null": "---\n~\n"} {
		if _, err := loadConfig(strings.NewReader("issuers: [{name: a, issuer: https://a.example, audiences: [x]}]\n"+tail), noEnv); err != nil {
			t.Errorf("%s: %v, want an empty second document accepted", name, err)
		}
	}
	for name, doc := range map[string]string{"empty": "", "comments only": "# nothing\n"} {
		if _, err := loadConfig(strings.NewReader(doc), noEnv); err == nil || !strings.Contains(err.Error(), "at least one issuer") {
			t.Errorf("%s: err = %v, want only the defaults' validation error", name, err)
		}
	}
}

// TestConfigMergeKeyOnce: a second << in one mapping is an error, as any
// other key given twice is, not silently ignored.
func TestConfigMergeKeyOnce(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
defaults: &d {leeway: 5s}
more: &m {max_token_lifetime: 2h}
issuers:
  - {name: a, issuer: https://a.example, audiences: [x], <<: *d, <<: *m}
`), noEnv)
	if err == nil || !strings.Contains(err.Error(), "<< given twice") {
		t.Errorf("err = %v, want the second << reported", err)
	}
}

// TestConfigLogoutRouteMatchingEveryPath: a logout route whose path_prefix
// matches every path (/, or none) is refused with its YAML path, beside the
// other problems of the file.
func TestConfigLogoutRouteMatchingEveryPath(t *testing.T) {
	_, err := loadConfig(strings.NewReader(`
issuers:
  - {name: a, issuer: https://a.example, audiences: [x]}
logout_routes:
  - {path_prefix: /oauth2/logout}
  - {host: auth.example.com, path_prefix: /}
  - {host: auth.example.com, methods: [FETCH]}
`), noEnv)
	if err == nil {
		t.Fatal("a logout route matching every path was accepted")
	}
	for _, want := range []string{
		"logout_routes[1].path_prefix: \"/\" matches every path",
		"logout_routes[2].path_prefix: required",
		"logout_routes[2].methods:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "logout_routes[0]") {
		t.Errorf("the valid route is reported:\n%v", err)
	}
}
