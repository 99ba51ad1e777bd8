package main

import (
	"strings"
	"testing"
	"time"
)

// TestConfigSessionLifetime: issuers[].session_lifetime defaults to 30
// days, reaches revocation intake, and is bounded.
func TestConfigSessionLifetime(t *testing.T) {
	load := func(extra string) (settings, error) {
		return loadConfig(strings.NewReader(`
issuers:
  - name: a
    issuer: https://a.example
    audiences: [x]
`+extra), func(string) string { return "" })
	}
	for extra, want := range map[string]time.Duration{"": 720 * time.Hour, "    session_lifetime: 48h\n": 48 * time.Hour} {
		s, err := load(extra)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.intakeIssuers[0].SessionLifetime; got != want {
			t.Errorf("%q: intake session lifetime %v, want %v", extra, got, want)
		}
	}
	for _, bad := range []string{"0s", "30s", "8761h"} {
		if _, err := load("    session_lifetime: " + bad + "\n"); err == nil || !strings.Contains(err.Error(), "issuers[0].session_lifetime") {
			t.Errorf("session_lifetime %s: %v, want an error naming issuers[0].session_lifetime", bad, err)
		}
	}
}

// TestConfigMaxClockSkew: webhooks.fusionauth.max_clock_skew defaults to
// 5m and is bounded.
func TestConfigMaxClockSkew(t *testing.T) {
	load := func(extra string) (settings, error) {
		return loadConfig(strings.NewReader(`
issuers:
  - name: a
    issuer: https://a.example
    audiences: [x]
webhooks:
  fusionauth:
    issuer: a
    header: {name: x-webhook-secret, value: 0123456789abcdef0123}
`+extra), func(string) string { return "" })
	}
	s, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Webhooks.FusionAuth.MaxClockSkew; got != 5*time.Minute {
		t.Errorf("default max_clock_skew %v, want 5m", got)
	}
	for _, bad := range []string{"0s", "2h"} {
		if _, err := load("    max_clock_skew: " + bad + "\n"); err == nil || !strings.Contains(err.Error(), "webhooks.fusionauth.max_clock_skew") {
			t.Errorf("max_clock_skew %s: %v, want an error naming webhooks.fusionauth.max_clock_skew", bad, err)
		}
	}
}
