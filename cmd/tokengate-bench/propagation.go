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
	// denied on every replica within it, with 20 replicas under a
	// background load of 200 revocations/s. The report says whether it was
	// met.
	maxPropagationP99 = 20 * time.Millisecond
	// maxReplicas bounds -replicas: enough for the sizing runs, few enough
	// that a typo does not start a thousand processes.
	maxReplicas = 64
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
	background  int           // revocations/s through another replica while measuring; 0: none
	checkEvery  time.Duration // between one replica's Checks while waiting for its denial
	standby     bool          // replicas 2… read the feed from a streaming standby
	poll        time.Duration // every replica's revocation.poll_interval
	postgresURL string        // empty: a throwaway durable cluster
	json        bool
}

func parsePropagationConfig(args []string, stderr io.Writer) (propagationConfig, error) {
	var cfg propagationConfig
	fs := flag.NewFlagSet("tokengate-bench "+propagationCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.tokengate, "tokengate", "bin/tokengate", "path to a built tokengate binary")
	fs.IntVar(&cfg.replicas, "replicas", 3, "tokengate replicas sharing one PostgreSQL database")
	fs.IntVar(&cfg.revocations, "revocations", 200, "revocations to make through replica 1, one after another")
	fs.IntVar(&cfg.background, "background", 0,
		"a background load of this many revocations/s, written through one more replica (not measured) while measuring")
	fs.DurationVar(&cfg.checkEvery, "check-every", time.Millisecond,
		"the pause between one replica's Checks while waiting for it to deny (0: a tight loop): the measurement's resolution")
	fs.BoolVar(&cfg.standby, "standby", false,
		"replicas 2… read the feed from an asynchronous streaming standby of the throwaway cluster (storage.follow_url), by polling; each revocation then waits a random time below -poll first")
	fs.DurationVar(&cfg.poll, "poll", time.Second, "every replica's revocation.poll_interval")
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
	if c.replicas < 1 || c.replicas > maxReplicas {
		bad("replicas", "must be between 1 and %d, got %d", maxReplicas, c.replicas)
	}
	if c.standby && c.postgresURL != "" {
		bad("standby", "needs the throwaway cluster: leave -postgres-url out")
	}
	if c.poll < 10*time.Millisecond || c.poll > 30*time.Second {
		bad("poll", "must be between 10ms and 30s, got %s", c.poll)
	}
	if c.checkEvery < 0 || c.checkEvery > 100*time.Millisecond {
		bad("check-every", "must be between 0 and 100ms, got %s", c.checkEvery)
	}
	if c.background < 0 || c.background > 5000 {
		bad("background", "must be between 0 and 5000 revocations/s, got %d", c.background)
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
	// Replica 1 takes the measured writes; the others only read, as most
	// replicas of a deployment do (and hold 2 connections each). With a
	// background load, one more replica takes it.
	followURL := ""
	if cfg.standby {
		fmt.Fprintln(w, "starting a streaming standby; replicas 2… read the feed from it")
		standby, err := bench.db.cluster.StartStandby(ctx)
		if err != nil {
			return rep, fmt.Errorf("start a standby: %w", err)
		}
		defer standby.Close(context.WithoutCancel(ctx))
		followURL = standby.URL(benchDatabase)
	}
	configs := make([]string, cfg.replicas, cfg.replicas+1)
	for i := range configs {
		follow := followURL
		if i == 0 {
			follow = ""
		}
		configs[i] = followerConfig(bench.iss.URL, adminToken, bench.db.url, follow, cfg.poll, i == 0)
	}
	if cfg.background > 0 {
		configs = append(configs, followerConfig(bench.iss.URL, adminToken, bench.db.url, "", cfg.poll, true))
	}
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	all, err := startReplicas(ctx, cfg.tokengate, dir, configs)
	defer stopReplicas(all)
	if err != nil {
		return rep, err
	}
	replicas := all[:cfg.replicas]
	for _, r := range replicas {
		r.checkEvery = cfg.checkEvery
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

	conns := startConnCounter(ctx, bench.db.url)
	var load *backgroundLoad
	if cfg.background > 0 {
		loader := all[cfg.replicas]
		fmt.Fprintf(w, "background load: %d revocations/s through %s\n", cfg.background, loader.name)
		load = startBackgroundLoad(ctx, newAdminClient(loader.addrs.HTTP, adminToken), cfg.background)
		time.Sleep(time.Second) // into its stride before measuring
	}
	var spread time.Duration
	if cfg.standby { // the readers poll
		spread = cfg.poll
	}
	samples, err := measurePropagation(ctx, replicas, admin, tokens, spread, w)
	var bg backgroundResult
	if load != nil {
		bg = load.stop()
	}
	peak, last := conns.stop()
	if err != nil {
		return rep, err
	}
	if bg.Failed > 0 {
		return rep, fmt.Errorf("background load: %d of %d revocations failed: %v", bg.Failed, bg.Sent, bg.firstErr)
	}
	rep = newPropagationReport(samples, bench.db.desc)
	rep.Background, rep.Connections = bg, connCount{Peak: peak, End: last}
	return rep, nil
}

// replicaConfig is a replica's configuration: the same issuer and database
// for every replica, and the admin token for one that writes (without it
// the replica only reads: one pool connection besides its LISTEN one).
// Each replica logs one line per revocation it makes or denies.
func replicaConfig(issuerURL, adminToken, dbURL string, writes bool) string {
	return followerConfig(issuerURL, adminToken, dbURL, "", time.Second, writes)
}

// followerConfig is replicaConfig reading the feed from followURL (a
// standby; "": the primary at dbURL) and polling it every poll.
func followerConfig(issuerURL, adminToken, dbURL, followURL string, poll time.Duration, writes bool) string {
	admin, follow := "", ""
	if writes {
		admin = fmt.Sprintf("admin: {token: %q}\n", adminToken)
	}
	if followURL != "" { // absent otherwise: earlier versions refuse the key
		follow = fmt.Sprintf(", follow_url: %q", followURL)
	}
	return replicaBase + admin + fmt.Sprintf(`issuers: [{name: bench, issuer: %q, audiences: [%s]}]
storage: {postgres_url: %q%s}
revocation: {poll_interval: %s}
`, issuerURL, benchAudience, dbURL, follow, poll)
}
