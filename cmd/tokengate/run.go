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
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `tokengate makes logout real for APIs behind Envoy and Istio.

Usage:
  tokengate serve --config FILE   serve Envoy ext_authz (gRPC) and the HTTP endpoints
  tokengate dev                   serve on loopback with a built-in development issuer
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
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
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
	f, err := os.Open(*path)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(f, getenv)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s:\n%w", *path, err)
	}
	log := newLogger(cfg.Log, stderr)
	return serve(ctx, cfg, log, serveHooks{})
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
