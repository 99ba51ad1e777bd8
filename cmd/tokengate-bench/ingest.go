package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
)

// ingestCommand runs the ingest benchmark: how many FusionAuth webhook
// events per second one replica commits durably to PostgreSQL, and how long
// each takes, under concurrent senders.
const ingestCommand = "ingest"

// minIngestRate is the ingest target: one replica applies at least this many
// webhook events per second, each committed durably, with 16 concurrent
// senders. The report says whether it was met.
const minIngestRate = 5000.0

type ingestConfig struct {
	tokengate   string
	senders     int
	duration    time.Duration
	warmup      time.Duration
	postgresURL string // empty: a throwaway durable cluster
	json        bool
}

func parseIngestConfig(args []string, stderr io.Writer) (ingestConfig, error) {
	var cfg ingestConfig
	fs := flag.NewFlagSet("tokengate-bench "+ingestCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.tokengate, "tokengate", "bin/tokengate", "path to a built tokengate binary")
	fs.IntVar(&cfg.senders, "senders", 16, "concurrent webhook senders, each a closed loop")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured load")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before the measurement")
	fs.StringVar(&cfg.postgresURL, "postgres-url", "",
		"the replica's database, on an existing server (its tables are created if missing); "+
			"default: a throwaway durable cluster, removed at the end")
	fs.BoolVar(&cfg.json, "json", false, "write a JSON report to stdout; the table goes to stderr")
	return cfg, parseFlags(fs, args, func() error { return cfg.validate() })
}

// validate reports every problem at once.
func (c ingestConfig) validate() error {
	var p problems
	bad := p.bad
	if c.tokengate == "" {
		bad("tokengate", "required: the path to a built tokengate binary (make bench-ingest builds bin/tokengate)")
	}
	if c.senders < 1 || c.senders > 1024 {
		bad("senders", "must be between 1 and 1024, got %d", c.senders)
	}
	if c.duration <= 0 || c.duration > time.Hour {
		bad("duration", "must be positive and at most 1h, got %s", c.duration)
	}
	if c.warmup < 0 || c.warmup > time.Hour {
		bad("warmup", "must be between 0 and 1h, got %s", c.warmup)
	}
	return p.err()
}

// benchIngest sets up PostgreSQL, the issuer and one replica, sends
// webhooks (warm-up, then the measured window), checks that every applied
// event is stored, and tears everything down again. Progress goes to w.
func benchIngest(ctx context.Context, cfg ingestConfig, w io.Writer) (rep ingestReport, err error) {
	bench, tearDown, err := setUp(ctx, cfg.postgresURL, faIssuer, faApp, w)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := tearDown(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	secret, err := randomHex(32)
	if err != nil {
		return rep, err
	}
	run, err := randomHex(4)
	if err != nil {
		return rep, err
	}
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	replicas, err := startReplicas(ctx, cfg.tokengate, dir,
		[]string{ingestReplicaConfig(bench.issuerURL+"/jwks.json", secret, bench.db.url)})
	defer stopReplicas(replicas)
	if err != nil {
		return rep, err
	}
	r := replicas[0]
	fmt.Fprintf(w, "%s serving: http %s\n", r.name, r.addrs.HTTP)

	sender := newWebhookSender(r.addrs.HTTP, []byte(secret), run, cfg.senders)
	defer sender.close()
	send := func(ctx context.Context, _ int) error { return sender.send(ctx) }
	var warm loadResult
	if cfg.warmup > 0 {
		fmt.Fprintf(w, "warm-up: %s for %s\n", plural(cfg.senders, "sender"), cfg.warmup)
		if warm, err = closedLoop(ctx, cfg.senders, cfg.warmup, send); err != nil {
			return rep, r.proc.explain(fmt.Errorf("warm-up: %w", err))
		}
		fmt.Fprintf(w, "warm-up: %d events applied, %.0f events/s\n", warm.requests, warm.throughput())
	}
	meter := cpuMeter{replica: r.proc.cmd.Process.Pid}
	if c := bench.db.cluster; c != nil {
		if meter.postmaster, err = c.PID(); err != nil {
			return rep, err
		}
	}
	cpuBefore, err := meter.sample()
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(w, "measuring: %s for %s\n", plural(cfg.senders, "sender"), cfg.duration)
	res, err := closedLoop(ctx, cfg.senders, cfg.duration, send)
	if err != nil {
		return rep, r.proc.explain(fmt.Errorf("measurement: %w", err))
	}
	cpuAfter, err := meter.sample()
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(w, "measured: %d events applied, %.0f events/s\n", res.requests, res.throughput())

	st, err := readStorage(ctx, bench.db.url, run)
	if err != nil {
		return rep, err
	}
	applied := warm.requests + res.requests
	if st.stored != applied {
		return rep, fmt.Errorf("durability: %d events applied (warm-up included), but %d of their revocations in tokengate_revocations",
			applied, st.stored)
	}
	fmt.Fprintf(w, "durability: %d events applied, %d revocations stored\n", applied, st.stored)
	rep = newIngestReport(cfg, bench.db.desc, warm, res, st)
	rep.CPU = perEvent(cpuBefore, cpuAfter, res.requests, machineCores())
	return rep, nil
}

// ingestReplicaConfig is the replica's configuration: the FusionAuth issuer
// (iss acme.com, its JWKS on loopback), the database, and the FusionAuth
// webhook receiver for it, which checks the body's HMAC signature. Each
// event logs one line.
func ingestReplicaConfig(jwksURI, hmacSecret, dbURL string) string {
	return replicaBase + fmt.Sprintf(`issuers: [{name: %s, issuer: %q, jwks_uri: %q, audiences: [%q]}]
storage: {postgres_url: %q}
webhooks: {fusionauth: {issuer: %s, signing_key: {hmac_secret: %q}}}
`, faIssuerName, faIssuer, jwksURI, faApp, dbURL, faIssuerName, hmacSecret)
}

// storageCheck is what the database holds after the run, read on a
// connection of the bench's own.
type storageCheck struct {
	// stored counts the revocations from this run's events: one each.
	stored uint64
	// fsync and synchronousCommit are the settings of a session on the
	// replica's connection string: whether a commit waits for its WAL to be
	// flushed to disk.
	fsync, synchronousCommit string
}

// durable reports whether each commit waited for its WAL flush: every
// synchronous_commit level but off does, locally.
func (s storageCheck) durable() bool {
	return s.fsync == "on" && s.synchronousCommit != "off"
}

// readStorage counts the revocations whose source is an event of run and
// reads the durability settings, at dbURL.
func readStorage(ctx context.Context, dbURL, run string) (storageCheck, error) {
	var st storageCheck
	var n int64
	// The replica stores a FusionAuth event's revocations with source
	// "fusionauth:" + event.id, and this run's event ids start with run.
	if err := pgcluster.QueryRow(ctx, dbURL, "SELECT count(*) FROM tokengate_revocations WHERE starts_with(source, $1)",
		[]any{"fusionauth:" + run + "-"}, &n); err != nil {
		return st, fmt.Errorf("durability: count revocations: %w", err)
	}
	st.stored = uint64(n)
	if err := pgcluster.QueryRow(ctx, dbURL, "SELECT current_setting('fsync'), current_setting('synchronous_commit')", nil,
		&st.fsync, &st.synchronousCommit); err != nil {
		return st, fmt.Errorf("durability: read settings: %w", err)
	}
	return st, nil
}
