package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// propagationCommand runs the propagation benchmark: how long a revocation
// written through one replica takes to be enforced by every replica sharing
// its PostgreSQL database.
const propagationCommand = "propagation"

const (
	// maxPropagationP99 is the propagation target: 99% of revocations are
	// denied on every replica within it. The report says whether it was met.
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
)

type propagationConfig struct {
	tokengate   string
	replicas    int
	revocations int
	postgresURL string // empty: a throwaway durable cluster
	json        bool
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
	return cfg, parseFlags(fs, args, func() error { return cfg.validate() })
}

// validate reports every problem at once.
func (c propagationConfig) validate() error {
	var p problems
	bad := p.bad
	if c.tokengate == "" {
		bad("tokengate", "required: the path to a built tokengate binary (make bench-propagation builds bin/tokengate)")
	}
	if c.replicas < 1 || c.replicas > 16 {
		bad("replicas", "must be between 1 and 16, got %d", c.replicas)
	}
	if c.revocations < 1 || c.revocations > 10_000 {
		bad("revocations", "must be between 1 and 10000, got %d", c.revocations)
	}
	return p.err()
}

// benchPropagation sets up PostgreSQL, an issuer and the replicas, measures,
// and tears everything down again. Progress goes to w.
func benchPropagation(ctx context.Context, cfg propagationConfig, w io.Writer) (rep propagationReport, err error) {
	bench, tearDown, err := setUp(ctx, cfg.postgresURL, "", benchAudience, w)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := tearDown(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	adminToken, err := randomHex(24)
	if err != nil {
		return rep, err
	}
	configs := make([]string, cfg.replicas)
	for i := range configs {
		configs[i] = replicaConfig(bench.iss.URL, adminToken, bench.db.url)
	}
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	replicas, err := startReplicas(ctx, cfg.tokengate, dir, configs)
	defer stopReplicas(replicas)
	if err != nil {
		return rep, err
	}
	for _, r := range replicas {
		fmt.Fprintf(w, "%s serving: grpc %s, http %s\n", r.name, r.addrs.GRPC, r.addrs.HTTP)
	}

	tokens := make([]string, cfg.revocations)
	for i := range tokens {
		if tokens[i], err = bench.iss.Mint(fmt.Sprintf("bench-%d", i), tokenTTL, nil); err != nil {
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
	return newPropagationReport(samples, bench.db.desc), nil
}

// replicaConfig is every replica's configuration: the same issuer, admin
// token and database. Each replica logs one line per revocation it makes or
// denies.
func replicaConfig(issuerURL, adminToken, dbURL string) string {
	return replicaBase + fmt.Sprintf(`issuers: [{name: bench, issuer: %q, audiences: [%s]}]
admin: {token: %q}
storage: {postgres_url: %q}
revocation: {poll_interval: 1s}
`, issuerURL, benchAudience, adminToken, dbURL)
}
