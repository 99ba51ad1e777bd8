// Command tokengate-bench measures what tokengate costs on Envoy's ext_authz
// path. It starts tokengate (`tokengate dev`) and a do-nothing ext_authz
// server as child processes on loopback, drives both with the same closed-loop
// gRPC Check load, and compares throughput and p50/p99 latency.
//
// The two targets run alternately, round after round (baseline first in odd
// rounds, tokengate first in even ones, so a slow drift of a shared, noisy
// machine weighs on both alike), each warmed up before it is measured. Every
// figure reported is the median over the rounds, and each ratio is the median
// of per-round ratios: tokengate against the baseline measured right next to
// it.
//
// Each target gets its own client connection(s) (-conns, default 1): Envoy
// multiplexes ext_authz calls over one HTTP/2 connection per worker thread,
// so one connection carrying all streams is what a single Envoy worker sends.
// The load client runs on the same cores as the server it drives; both
// targets pay that alike.
//
// Usage:
//
//	tokengate-bench -tokengate bin/tokengate [-concurrency 32] [-duration 10s]
//	    [-warmup 2s] [-rounds 3] [-conns 1] [-json]
//
// With -json, stdout carries one JSON document and the table goes to stderr.
//
// # Propagation
//
//	tokengate-bench propagation [-tokengate bin/tokengate] [-replicas 3]
//	    [-revocations 200] [-postgres-url URL] [-json]
//
// measures how fast a revocation reaches every replica. It starts the
// replicas (`tokengate serve`) on one PostgreSQL database — a throwaway
// durable cluster unless -postgres-url names one — and an issuer serving its
// JWKS on loopback, checks that every replica allows each of the minted
// tokens (which also caches them as verified), then revokes them one after
// another through replica 1's admin API. After each POST it calls Check on
// every replica in a tight loop until each denies the token as
// token_revoked. A revocation's propagation time runs from just before its
// POST to the slowest replica's first denial; the report gives its p50, p99
// and max, the same for the POST's round trip, and each replica's figures,
// against the target of p99 ≤ 50ms.
//
// # Ingest
//
//	tokengate-bench ingest [-tokengate bin/tokengate] [-senders 16]
//	    [-duration 10s] [-warmup 2s] [-postgres-url URL] [-json]
//
// measures webhook ingest with durable commits. It starts one replica
// (`tokengate serve`) on a PostgreSQL database — a throwaway durable
// cluster unless -postgres-url names one — with a FusionAuth issuer (its
// JWKS served on loopback) and the FusionAuth webhook receiver, which checks
// each body's HMAC signature. Each sender posts distinct user.delete events,
// signed as FusionAuth signs them, in a closed loop over kept-alive
// connections; every answer must be 200 with "result":"applied". After a
// warm-up, it reports the events applied per second of the measured window
// and their latency (p50, p99, max), against the target of at least
// 5000 events/s at 16 senders. Then it counts, on a connection of its own,
// the revocations the run's events stored: one per applied event, or the run
// fails. With fsync and synchronous_commit on, which the report shows, each
// 200 was a commit flushed to disk.
//
// # Soak
//
//	tokengate-bench soak [-tokengate bin/tokengate] [-duration 60s]
//	    [-checkers 8] [-rate 100] [-tokens 20000] [-cache-bytes 8388608]
//	    [-bound 1s] [-postgres-url URL] [-json]
//
// checks that under a long mixed load no revoked token is ever allowed, no
// Check fails and memory stays within its bound. It starts 2 replicas on
// one PostgreSQL database with a small cache.max_bytes and mints a pool of
// distinct tokens larger than the cache holds. Checkers call Check on
// either replica with pool tokens, tokens the revoker took, and junk
// (malformed, wrong signature, unknown kid, expired: each must be denied
// with its reason); a revoker sends -rate revocations a second (by jti,
// subject and session in turn) through either replica's admin API, checks
// the replica that answered 2xx denies the token at once, and polls the
// other until it does (the propagation time). An allow is a violation on
// the replica that answered 2xx once the 2xx was read, and on the other one
// from -bound after it. Each replica's VmRSS and heap in use (/metrics) are
// sampled every second; the heap must stay within 2 × (25 MiB +
// cache.max_bytes + 100 B per live revocation). A violation, a denial for
// the wrong reason, a gRPC error or a heap over its bound fails the run
// (exit status 1), after the report.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokengate-bench:", err)
		stop()
		os.Exit(1)
	}
}
