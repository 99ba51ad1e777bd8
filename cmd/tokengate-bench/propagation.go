package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// propagationCommand runs the propagation benchmark: how long a revocation
// written through one replica takes to be enforced by every replica sharing
// its PostgreSQL database.
const propagationCommand = "propagation"

const (
	// maxPropagationP99 is the target from the issue.
	maxPropagationP99 = 50 * time.Millisecond
	// revocationTimeout bounds one revocation: its write, then every
	// replica's first denial. A replica slower than this fails the run.
	revocationTimeout = 5 * time.Second
	// benchAudience is the aud of the bench's tokens and the one audience
	// the replicas accept.
	benchAudience = "bench"
	// tokenTTL is the minted tokens' lifetime: within the issuer's default
	// max_token_lifetime (1h), and longer than any run we expect.
	tokenTTL = 50 * time.Minute
	// benchDatabase is the database created on the throwaway cluster.
	benchDatabase = "tokengate_bench"
)

type propagationConfig struct {
	tokengate   string
	replicas    int
	revocations int
	postgresURL string // empty: a throwaway durable cluster
	json        bool
}

// runPropagation is `tokengate-bench propagation [flags]`.
func runPropagation(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parsePropagationConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	rep, err := benchPropagation(ctx, cfg, stderr)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err != nil {
		return err
	}
	if cfg.json {
		rep.writeText(stderr)
		return rep.writeJSON(stdout)
	}
	return rep.writeText(stdout)
}

func parsePropagationConfig(args []string, stderr io.Writer) (propagationConfig, error) {
	var cfg propagationConfig
	fs := flag.NewFlagSet("tokengate-bench "+propagationCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.tokengate, "tokengate", "bin/tokengate", "path to a built tokengate binary")
	fs.IntVar(&cfg.replicas, "replicas", 3, "tokengate replicas sharing one PostgreSQL database")
	fs.IntVar(&cfg.revocations, "revocations", 200, "revocations to make through replica 1, one after another")
	fs.StringVar(&cfg.postgresURL, "postgres-url", "",
		"the replicas' database, on an existing server (its tables are created if missing); "+
			"default: a throwaway durable cluster, removed at the end")
	fs.BoolVar(&cfg.json, "json", false, "write a JSON report to stdout; the table goes to stderr")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.validate()
}

// validate reports every problem at once.
func (c propagationConfig) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("-%s: %s", name, fmt.Sprintf(format, args...)))
	}
	if c.tokengate == "" {
		bad("tokengate", "required: the path to a built tokengate binary (make bench-propagation builds bin/tokengate)")
	}
	if c.replicas < 1 || c.replicas > 16 {
		bad("replicas", "must be between 1 and 16, got %d", c.replicas)
	}
	if c.revocations < 1 || c.revocations > 10_000 {
		bad("revocations", "must be between 1 and 10000, got %d", c.revocations)
	}
	return errors.Join(errs...)
}

// benchPropagation sets up PostgreSQL, an issuer and the replicas, measures,
// and tears everything down again. Progress goes to w.
func benchPropagation(ctx context.Context, cfg propagationConfig, w io.Writer) (rep propagationReport, err error) {
	dbURL, storage := cfg.postgresURL, "the server of -postgres-url"
	if dbURL == "" {
		storage = "a throwaway durable cluster"
		fmt.Fprintln(w, "starting a throwaway PostgreSQL cluster (durable: fsync and synchronous_commit on)")
		cluster, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
		if err != nil {
			return rep, fmt.Errorf("start postgres (or give -postgres-url): %w", err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if cerr := cluster.Close(cctx); cerr != nil && err == nil {
				err = fmt.Errorf("close postgres: %w", cerr)
			}
		}()
		if dbURL, err = cluster.CreateDatabase(ctx, benchDatabase); err != nil {
			return rep, fmt.Errorf("create database: %w", err)
		}
	}

	iss, stopIssuer, err := serveIssuer()
	if err != nil {
		return rep, err
	}
	defer stopIssuer()
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	adminToken, err := randomHex(24)
	if err != nil {
		return rep, err
	}
	configs := make([]string, cfg.replicas)
	for i := range configs {
		configs[i] = filepath.Join(dir, fmt.Sprintf("replica-%d.yaml", i+1))
		if err := os.WriteFile(configs[i], []byte(replicaConfig(iss.URL, adminToken, dbURL)), 0o600); err != nil {
			return rep, err
		}
	}

	replicas, err := startReplicas(ctx, cfg.tokengate, configs)
	defer stopReplicas(replicas)
	if err != nil {
		return rep, err
	}
	for _, r := range replicas {
		fmt.Fprintf(w, "%s serving: grpc %s, http %s\n", r.name, r.addrs.GRPC, r.addrs.HTTP)
	}

	tokens := make([]string, cfg.revocations)
	for i := range tokens {
		if tokens[i], err = iss.Mint(fmt.Sprintf("bench-%d", i), tokenTTL, nil); err != nil {
			return rep, fmt.Errorf("mint token: %w", err)
		}
	}
	if err := checkAllowed(ctx, replicas, tokens); err != nil {
		return rep, err
	}
	fmt.Fprintf(w, "%s allowed on every replica; revoking them one by one through %s\n",
		plural(len(tokens), "token"), replicas[0].name)
	admin := newAdminClient(replicas[0].addrs.HTTP, adminToken)
	defer admin.http.CloseIdleConnections()
	samples, err := measurePropagation(ctx, replicas, admin, tokens, w)
	if err != nil {
		return rep, err
	}
	return newPropagationReport(samples, storage), nil
}

// replicaConfig is every replica's configuration: the same issuer, admin
// token and database. Level info, for the "serving" line; each replica then
// logs one line per revocation it makes or denies.
func replicaConfig(issuerURL, adminToken, dbURL string) string {
	return fmt.Sprintf(`listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
log: {level: info, format: json}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: bench, issuer: %q, audiences: [%s]}]
admin: {token: %q}
storage: {postgres_url: %q}
revocation: {poll_interval: 1s}
`, issuerURL, benchAudience, adminToken, dbURL)
}

// serveIssuer serves a new issuer's JWKS and discovery document on loopback
// until stop is called. The issuer's URL is the server's.
func serveIssuer() (iss *tokentest.Issuer, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("issuer: %w", err)
	}
	iss, err = tokentest.New("http://"+lis.Addr().String(), benchAudience)
	if err != nil {
		lis.Close()
		return nil, nil, fmt.Errorf("issuer: %w", err)
	}
	srv := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		srv.Serve(lis) // returns ErrServerClosed on Close
		close(done)
	}()
	return iss, func() {
		srv.Close()
		<-done
	}, nil
}

// startReplicas starts a `tokengate serve` child per configuration file and
// returns once each serves and is ready. On error, the replicas returned so
// far must still be stopped.
func startReplicas(ctx context.Context, path string, configs []string) ([]*replica, error) {
	var replicas []*replica
	for i, config := range configs {
		name := fmt.Sprintf("replica %d", i+1)
		proc, err := startChild(ctx, name, path, "serve", "--config", config)
		if err != nil {
			return replicas, err
		}
		replicas = append(replicas, &replica{name: name, proc: proc})
	}
	for _, r := range replicas { // they start up side by side
		addrs, err := r.proc.serving(ctx)
		if err != nil {
			return replicas, err
		}
		if addrs.HTTP == "" {
			return replicas, r.proc.explain(errors.New("no http_addr in its serving log line"))
		}
		r.addrs = addrs
		if err := r.proc.waitReady(ctx, addrs.HTTP); err != nil {
			return replicas, err
		}
		if err := r.dial(); err != nil {
			return replicas, err
		}
	}
	return replicas, nil
}

// stopReplicas stops the replicas side by side and waits for them to exit.
func stopReplicas(replicas []*replica) {
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(r.close)
	}
	wg.Wait()
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
