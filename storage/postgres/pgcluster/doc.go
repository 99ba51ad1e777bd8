// Package pgcluster runs throwaway PostgreSQL servers: it starts a cluster
// from the local server binaries (initdb and pg_ctl), stops, restarts and
// closes it, and creates and drops its databases. tokengate-bench runs its
// PostgreSQL modes on one; tests get theirs through pgtest, which wraps this
// package for testing.
//
// [Start] finds initdb and pg_ctl on PATH, else the highest version under
// /usr/lib/postgresql/*/bin, initializes a cluster in a new temporary
// directory and starts it on a free port of 127.0.0.1, by default without
// durability (fsync, synchronous_commit and full_page_writes off;
// [Options.Durable] keeps them on). When running as root it runs the server
// as the postgres system user, because initdb refuses to run as root. Its
// error wraps [ErrUnavailable] only when the machine lacks what a cluster
// needs (the binaries, or the postgres user when running as root); any other
// error is a failure to start one that could have started.
//
// [Cluster.StartStandby] copies a running cluster with pg_basebackup -R
// and starts the copy as its asynchronous streaming standby, and
// [Cluster.Promote] makes a standby a primary: enough for a test to fail a
// database over (stop the primary, promote the standby) behind a multi-host
// URL. Every cluster is started ready to be a primary (wal_level=replica,
// max_wal_senders; initdb's pg_hba.conf lets 127.0.0.1 replicate).
//
// [External] wraps an existing server instead, on which databases can be
// created and dropped but which cannot be stopped or restarted.
//
// A cluster lives no longer than the process that started it: alongside the
// server runs a small watchdog process that, when that process exits in any
// way (a panic, a timeout, a kill, a forgotten [Cluster.Close]), stops the
// server and removes its directory.
//
// The package imports nothing made for tests, so commands can use it.
package pgcluster
