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

const usage = `tokengate makes logout real for APIs behind Envoy and Istio.

Usage:
  tokengate serve --config FILE   serve Envoy ext_authz (gRPC) and the HTTP endpoints
  tokengate dev                   serve on loopback with a built-in development issuer
  tokengate migrate --config FILE apply pending PostgreSQL migrations (or --postgres-url URL)
  tokengate revoke token|session|subject|cutoff …   revoke through the admin API (TOKENGATE_ADMIN_TOKEN, --server)
  tokengate revocations list      list revocations (--all follows the pages)
  tokengate unrevoke ID           delete a revocation
  tokengate introspect TOKEN|-    say whether a token is active
  tokengate check --config FILE --token T|- --path P   decide one request offline, explained (exit 0 allow, 1 deny)
  tokengate healthcheck [--url URL]   exit 0 when a running tokengate answers 200 (container health checks)
  tokengate version               print the version, the commit and the Go release

Run "tokengate COMMAND -h" for a command's flags.
`

// run is the whole program; main only calls it. Tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // COMMAND -h: the usage is on stdout
	}
	return err
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
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
	case "check":
		return runCheck(ctx, rest, getenv, stdout, stderr)
	case "revoke", "revocations", "unrevoke", "introspect":
		return runCLI(ctx, cmd, rest, getenv, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout, stderr)
	case "version":
		fs := newFlagSet("version", "", "Prints the version, the commit it was built from (\"unknown\" when not recorded)\nand the Go release it was built with.")
		if err := parseFlags(fs, rest, stdout, stderr); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("version: unexpected argument %q", fs.Arg(0))
		}
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

// newFlagSet returns a command's flag set; its usage shows the synopsis,
// the description and the flags.
func newFlagSet(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tokengate %s %s\n\n%s\n", name, synopsis, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses a command's flags. -h, -help or --help prints the
// usage on stdout and returns flag.ErrHelp, which run answers with success;
// any other problem prints it on stderr.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	usage := fs.Usage
	fs.Usage = func() {}
	fs.SetOutput(stderr)
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
	case err != nil:
		fs.Usage()
	}
	return err
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "--config FILE",
		"Serves Envoy ext_authz (gRPC) and the HTTP endpoints (health, readiness, metrics,\nwebhooks, admin API) as the configuration file says.")
	path := fs.String("config", getenv("TOKENGATE_CONFIG"), "configuration `FILE` (YAML); env TOKENGATE_CONFIG")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
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
	tuneMemory(getenv, "/", log)
	return serve(ctx, cfg, log, serveHooks{})
}

// runMigrate applies pending migrations and says what it did. Replicas do
// this at start unless storage.auto_migrate is false.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "[--config FILE | --postgres-url URL]",
		"Applies pending PostgreSQL migrations and says which. Replicas do this at start\nunless storage.auto_migrate is false; the embedded store needs none.")
	path := fs.String("config", getenv("TOKENGATE_CONFIG"), "configuration `FILE` whose storage.postgres_url to use; env TOKENGATE_CONFIG")
	url := fs.String("postgres-url", "", "PostgreSQL `URL` (default: TOKENGATE_POSTGRES_URL, then the configuration's)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
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
	switch {
	case *url == "" && *path != "":
		return fmt.Errorf("migrate: %s has no storage.postgres_url (and neither --postgres-url nor TOKENGATE_POSTGRES_URL is set); the embedded store needs no migrations", *path)
	case *url == "":
		return errors.New("migrate: no PostgreSQL URL: give --config FILE (or TOKENGATE_CONFIG) with storage.postgres_url, --postgres-url or TOKENGATE_POSTGRES_URL; the embedded store needs no migrations")
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
	cfg, err := loadConfigFrom(path, f, getenv)
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
