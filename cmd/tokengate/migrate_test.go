package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestMigrateReadsTheConfig: `tokengate migrate` finds the database where
// `tokengate serve` does — --config or TOKENGATE_CONFIG — as the README
// shows it, and --postgres-url still works on its own.
func TestMigrateReadsTheConfig(t *testing.T) {
	cfg := func(url string) string {
		return writeConfig(t, fmt.Sprintf(`
issuers: [{name: idp, issuer: https://idp.example, audiences: [api]}]
storage: {postgres_url: %q}
`, url))
	}
	cases := map[string]func(url string) ([]string, map[string]string){
		"--config": func(url string) ([]string, map[string]string) { return []string{"migrate", "--config", cfg(url)}, nil },
		"TOKENGATE_CONFIG": func(url string) ([]string, map[string]string) {
			return []string{"migrate"}, map[string]string{"TOKENGATE_CONFIG": cfg(url)}
		},
		"--postgres-url": func(url string) ([]string, map[string]string) { return []string{"migrate", "--postgres-url", url}, nil },
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			args, env := setup(pgtest.URL(t))
			for i, want := range []string{"applied 0001_revocations.sql", "schema up to date"} {
				var out, errOut strings.Builder
				if err := run(t.Context(), args, func(k string) string { return env[k] }, &out, &errOut); err != nil {
					t.Fatalf("tokengate %s (run %d): %v\n%s", strings.Join(args, " "), i+1, err, errOut.String())
				}
				if !strings.Contains(out.String(), want) {
					t.Errorf("run %d printed %q, want %q", i+1, out.String(), want)
				}
			}
		})
	}
}

// TestMigrateWithoutPostgres says where a URL can come from, and that a
// configuration on the embedded store needs no migrations.
func TestMigrateWithoutPostgres(t *testing.T) {
	embedded := writeConfig(t, "issuers: [{name: idp, issuer: https://idp.example, audiences: [api]}]\n")
	for name, tc := range map[string]struct {
		args []string
		want []string
	}{
		"nothing":        {[]string{"migrate"}, []string{"--config", "TOKENGATE_CONFIG", "--postgres-url", "TOKENGATE_POSTGRES_URL", "the embedded store needs no migrations"}},
		"embedded store": {[]string{"migrate", "--config", embedded}, []string{embedded + " has no storage.postgres_url", "--postgres-url", "the embedded store needs no migrations"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(t.Context(), tc.args, func(string) string { return "" }, new(strings.Builder), new(strings.Builder))
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got %v, want it to say %q", err, want)
				}
			}
		})
	}
}
