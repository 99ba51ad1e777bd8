package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tokengate/tokengate/extauthz/token/devissuer"
	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
)

// What the modes on PostgreSQL (propagation, ingest) set up around the
// tokengate replicas they measure: the database, an issuer serving its JWKS,
// and the replicas' configuration files.

// benchDatabase is the database created on the throwaway cluster.
const benchDatabase = "tokengate_bench"

// replicaBase starts every replica's configuration: loopback listeners on
// free ports, JSON logs at level info (for the "serving" line) and no drain
// delay on shutdown.
const replicaBase = `listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
log: {level: info, format: json}
shutdown: {drain_delay: 0s, timeout: 5s}
`

// database is the PostgreSQL database the replicas share.
type database struct {
	url     string
	desc    string             // for the report: where it is
	cluster *pgcluster.Cluster // the throwaway cluster; nil for -postgres-url
}

// openDatabase returns the database at url or, when url is empty, a new
// database on a throwaway durable cluster, which close removes. Progress
// goes to w.
func openDatabase(ctx context.Context, url string, w io.Writer) (*database, error) {
	if url != "" {
		return &database{url: url, desc: "the server of -postgres-url"}, nil
	}
	fmt.Fprintln(w, "starting a throwaway PostgreSQL cluster (durable: fsync and synchronous_commit on)")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true})
	if err != nil {
		return nil, fmt.Errorf("start postgres (or give -postgres-url): %w", err)
	}
	db := &database{desc: "a throwaway durable cluster", cluster: cluster}
	if db.url, err = cluster.CreateDatabase(ctx, benchDatabase); err != nil {
		return nil, errors.Join(fmt.Errorf("create database: %w", err), db.close())
	}
	return db, nil
}

// close stops and removes the throwaway cluster, if there is one.
func (db *database) close() error {
	if db.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := db.cluster.Close(ctx); err != nil {
		return fmt.Errorf("close postgres: %w", err)
	}
	return nil
}

// benchEnv is what every benchmark on PostgreSQL starts from: the database
// and an issuer serving its keys on loopback.
type benchEnv struct {
	db        *database
	iss       *devissuer.Issuer
	issuerURL string
}

// setUp opens the database (see openDatabase) and serves an issuer (see
// serveIssuer); tearDown stops the issuer and closes the database.
func setUp(ctx context.Context, postgresURL, issuerName, audience string, w io.Writer) (env benchEnv, tearDown func() error, err error) {
	if env.db, err = openDatabase(ctx, postgresURL, w); err != nil {
		return env, nil, err
	}
	iss, url, stopIssuer, err := serveIssuer(issuerName, audience)
	if err != nil {
		return env, nil, errors.Join(err, env.db.close())
	}
	env.iss, env.issuerURL = iss, url
	return env, func() error { stopIssuer(); return env.db.close() }, nil
}

// serveIssuer serves a new issuer's JWKS (at url+"/jwks.json") and discovery
// document on loopback until stop is called. The issuer's iss is name or,
// when name is empty, url, for discovery.
func serveIssuer(name, audience string) (iss *devissuer.Issuer, url string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, fmt.Errorf("issuer: %w", err)
	}
	url = "http://" + lis.Addr().String()
	if name == "" {
		name = url
	}
	iss, err = devissuer.New(name, audience)
	if err != nil {
		lis.Close()
		return nil, "", nil, fmt.Errorf("issuer: %w", err)
	}
	srv := devissuer.Serve(lis, iss)
	return iss, url, func() { srv.Close() }, nil
}

// startReplicas writes each configuration to a file in dir, starts a
// `tokengate serve` child on it, and returns once each serves and is ready.
// On error, the replicas returned so far must still be stopped.
func startReplicas(ctx context.Context, path, dir string, configs []string) ([]*replica, error) {
	var replicas []*replica
	for i, config := range configs {
		name := fmt.Sprintf("replica %d", i+1)
		file := filepath.Join(dir, fmt.Sprintf("replica-%d.yaml", i+1))
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			return replicas, err
		}
		proc, err := startChild(ctx, name, path, "serve", "--config", file)
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
