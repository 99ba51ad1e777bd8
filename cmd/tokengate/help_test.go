package main

import (
	"strings"
	"testing"
)

// TestHelpExitsZero: COMMAND -h (or --help) prints the command's usage on
// stdout and succeeds, for every command; nothing goes to stderr.
func TestHelpExitsZero(t *testing.T) {
	commands := map[string]string{ // command → what its usage must mention
		"serve":            "--config",
		"dev":              "-data",
		"migrate":          "-postgres-url",
		"revoke":           "tokengate revoke subject",
		"revoke token":     "-expires-at",
		"revoke session":   "-sid",
		"revoke subject":   "-revoked-before",
		"revoke cutoff":    "-audience",
		"revocations":      "tokengate revocations list",
		"revocations list": "-cursor",
		"unrevoke":         "-server",
		"introspect":       "-timeout",
		"version":          "tokengate version",
		"healthcheck":      "-url",
		"check":            "-policy",
		"help":             "tokengate serve",
	}
	for cmd, want := range commands {
		for _, flag := range []string{"-h", "--help", "-help"} {
			t.Run(cmd+" "+flag, func(t *testing.T) {
				var stdout, stderr strings.Builder
				args := append(strings.Fields(cmd), flag)
				err := run(t.Context(), args, func(string) string { return "" }, &stdout, &stderr)
				if err != nil {
					t.Errorf("tokengate %s: %v, want success", strings.Join(args, " "), err)
				}
				if !strings.Contains(stdout.String(), "Usage") || !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout: got %q, want the usage, with %q", stdout.String(), want)
				}
				if stderr.Len() > 0 {
					t.Errorf("stderr: got %q, want nothing", stderr.String())
				}
			})
		}
	}
}

// TestFlagErrorsUseStderr: a wrong flag still fails, with the usage on
// stderr and nothing on stdout.
func TestFlagErrorsUseStderr(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--bogus"}, {"dev", "--bogus"}, {"migrate", "--bogus"},
		{"revoke", "token", "--bogus"}, {"unrevoke", "--bogus", "1"}, {"version", "--bogus"}, {"healthcheck", "--bogus"},
		{"check", "--bogus"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(t.Context(), args, func(string) string { return "" }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "bogus") {
				t.Errorf("got %v, want an error naming the flag", err)
			}
			if stdout.Len() > 0 || !strings.Contains(stderr.String(), "Usage") {
				t.Errorf("stdout %q, stderr %q: want the usage on stderr only", stdout.String(), stderr.String())
			}
		})
	}
}
