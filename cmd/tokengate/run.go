package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/tokengate/tokengate/storage/postgres"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `tokengate makes logout real for APIs behind Envoy and Istio.

Usage:
  tokengate serve --config FILE   serve Envoy ext_authz (gRPC) and the HTTP endpoints
  tokengate dev                   serve on loopback with a built-in development issuer
  tokengate migrate               apply pending PostgreSQL migrations (TOKENGATE_POSTGRES_URL or --config)
  tokengate revoke token|session|subject|cutoff …   revoke through the admin API (TOKENGATE_ADMIN_TOKEN, --server)
  tokengate revocations list      list revocations (--all follows the pages)
  tokengate unrevoke ID           delete a revocation
  tokengate introspect TOKEN|-    say whether a token is active
  tokengate version               print the version

Run "tokengate COMMAND -h" for a command's flags.
`

// run is the whole program; main only calls it. Tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		tuneGC(getenv)
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "dev":
		tuneGC(getenv)
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stdout, stderr)
	case "revoke", "revocations", "unrevoke", "introspect":
		return runCLI(ctx, cmd, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "tokengate", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", getenv("TOKENGATE_CONFIG"), "configuration file (YAML); env TOKENGATE_CONFIG")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("serve: --config is required (try `tokengate dev` for a development setup)")
	}
	cfg, err := loadConfigFile(*path, getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	return serve(ctx, cfg, log, serveHooks{})
}

// runMigrate applies pending migrations and says what it did. Replicas do
// this at start unless storage.auto_migrate is false.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", getenv("TOKENGATE_CONFIG"), "configuration file whose storage.postgres_url to use")
	url := fs.String("postgres-url", "", "PostgreSQL URL (default: TOKENGATE_POSTGRES_URL, then the config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		*url = getenv("TOKENGATE_POSTGRES_URL")
	}
	if *url == "" && *path != "" {
		cfg, err := loadConfigFile(*path, getenv)
		if err != nil {
			return err
		}
		*url = cfg.Storage.PostgresURL
	}
	if *url == "" {
		return errors.New("migrate: no PostgreSQL URL (--postgres-url, TOKENGATE_POSTGRES_URL or storage.postgres_url); the embedded store needs no migrations")
	}
	s, err := postgres.Open(*url, postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	applied, err := s.Migrate(ctx)
	for _, name := range applied {
		fmt.Fprintln(stdout, "applied", name)
	}
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema up to date")
	}
	return nil
}

// gcPercent is tokengate's default GOGC. Its live heap is small (keys, the
// token cache, the revocation index) while every Check allocates, so the
// default 100 spends a large share of the CPU on collection; 200 halves
// that for a heap that stays small. GOGC in the environment wins.
const gcPercent = 200

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// loadConfigFile loads and validates a configuration file; its errors name
// the file.
func loadConfigFile(path string, getenv func(string) string) (settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return settings{}, err
	}
	defer f.Close()
	cfg, err := loadConfig(f, getenv)
	if err != nil {
		return cfg, fmt.Errorf("%s:\n%w", path, err)
	}
	return cfg, nil
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func versionString() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}
