package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configures a cluster started by [Start] or [NewCluster].
type Options struct {
	// Durable keeps PostgreSQL's default durability settings: fsync,
	// synchronous_commit and full_page_writes on. Benchmarks want it; tests
	// do not, as a throwaway cluster is much faster without, and data still
	// survives Restart and Stop/Start, which shut the server down cleanly.
	Durable bool
	// TLS, when set, makes the server accept TLS connections with this
	// certificate and key (PEM): clients can then connect with
	// sslmode=verify-full. Plain connections are still accepted.
	TLS *TLS
}

// TLS is a server certificate and its key, in PEM.
type TLS struct {
	CertPEM, KeyPEM []byte
}

var (
	// ErrUnavailable reports that no local cluster can be started on this
	// machine: the server binaries or the postgres system user are missing.
	ErrUnavailable = errors.New("postgres server binaries unavailable")
	// ErrExternal reports an operation that needs a cluster this package
	// started, attempted on an existing server ([External]).
	ErrExternal = errors.New("not a cluster started by pgcluster")
	// ErrClosed reports an operation on a closed cluster.
	ErrClosed = errors.New("postgres cluster closed")
)

// errPortInUse marks a start that failed because another process took the
// port between freePort and the server's bind.
var errPortInUse = errors.New("port in use")

const (
	// StartTimeout is long enough a deadline for [Start] on a slow machine:
	// initdb and every attempt at pg_ctl start.
	StartTimeout = initdbTimeout + startAttempts*pgctlTimeout
	// CloseTimeout is long enough a deadline for [Cluster.Close]: pg_ctl
	// stop, then the watchdog's immediate stop.
	CloseTimeout = 2 * pgctlTimeout

	startAttempts = 3
	// pgctlWait is pg_ctl's own wait (-t, in seconds) for start and stop;
	// pgctlTimeout bounds the pg_ctl process itself.
	pgctlWait     = 60
	pgctlTimeout  = 90 * time.Second
	initdbTimeout = 2 * time.Minute
)

type state int

const (
	stopped state = iota
	running
	closed
)

// A Cluster is a PostgreSQL server: one this package started in a temporary
// directory ([Start]), or an existing server ([External]), on which only URL,
// CreateDatabase and DropDatabase work. Its methods are safe for concurrent
// use.
type Cluster struct {
	base *url.URL // connection string, without a database for a local cluster
	// The rest is for local clusters only.
	bin      binaries
	dir      string // owned by the server's user; also the socket directory
	opts     Options
	port     int
	proc     procAttr
	watchdog *watchdog

	mu    sync.Mutex
	state state
}

// Start starts a new local cluster: initdb in a new temporary directory,
// then pg_ctl start on a free port of 127.0.0.1. ctx bounds the start only;
// the cluster runs until [Cluster.Close] or the end of the process. The
// error wraps [ErrUnavailable] when the machine lacks what a cluster needs.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	proc, err := serverUser()
	if err != nil {
		return nil, err
	}
	c, err := newLocal(bin, proc, opts)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := c.initdb(ctx); err != nil {
		return nil, errors.Join(err, c.Close(context.WithoutCancel(ctx)))
	}
	if err := c.writeTLS(); err != nil {
		return nil, errors.Join(err, c.Close(context.WithoutCancel(ctx)))
	}
	if err := c.startOnFreePort(ctx); err != nil {
		return nil, errors.Join(err, c.Close(context.WithoutCancel(ctx)))
	}
	return c, nil
}

// newLocal makes the directory of a new local cluster and starts its
// watchdog. The watchdog comes first so that the directory goes away even
// if this process dies while the cluster is being made.
func newLocal(bin binaries, proc procAttr, opts Options) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return nil, err
	}
	if err := proc.chown(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir, opts: opts, proc: proc}
	if c.watchdog, err = startWatchdog(c); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// startOnFreePort starts the server on a free port of 127.0.0.1, trying
// another if the one found is taken before the server binds it.
func (c *Cluster) startOnFreePort(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		var err error
		if c.port, err = freePort(); err != nil {
			return fmt.Errorf("start postgres: %w", err)
		}
		err = c.pgctl(ctx, "start")
		if err == nil {
			break
		}
		if !errors.Is(err, errPortInUse) || attempt == startAttempts {
			return err
		}
	}
	c.base = &url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/",
		RawQuery: "sslmode=disable",
	}
	c.state = running
	return nil
}

// StartStandby starts an asynchronous streaming standby of c, a running
// local cluster: pg_basebackup -R (as the server's user) copies c into a
// new directory, and the copy starts on a free port of 127.0.0.1, streaming
// c's WAL from then on and answering read-only queries. It is a Cluster of
// its own, with c's options: Close it like one. [Cluster.Promote] makes it
// a primary. ctx bounds the start only.
func (c *Cluster) StartStandby(ctx context.Context) (*Cluster, error) {
	if c.isExternal() {
		return nil, fmt.Errorf("start a standby: %w", ErrExternal)
	}
	c.mu.Lock()
	st, port := c.state, c.port
	c.mu.Unlock()
	if st != running {
		return nil, fmt.Errorf("start a standby: the primary is not running")
	}
	basebackup, err := c.bin.basebackup()
	if err != nil {
		return nil, fmt.Errorf("start a standby: %w", err)
	}
	s, err := newLocal(c.bin, c.proc, c.opts)
	if err != nil {
		return nil, fmt.Errorf("start a standby: %w", err)
	}
	err = s.run(ctx, initdbTimeout, basebackup, "-D", s.dataDir(), "-R", "-X", "stream",
		"-c", "fast", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "--no-sync")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pg_basebackup: %w", err), s.Close(context.WithoutCancel(ctx)))
	}
	if err := s.startOnFreePort(ctx); err != nil {
		return nil, errors.Join(err, s.Close(context.WithoutCancel(ctx)))
	}
	return s, nil
}

// Promote promotes a standby (pg_ctl promote) and returns once it accepts
// writes: it leaves recovery and starts a new WAL timeline.
func (c *Cluster) Promote(ctx context.Context) error {
	if c.isExternal() {
		return fmt.Errorf("promote postgres: %w", ErrExternal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != running {
		return fmt.Errorf("promote postgres: not running")
	}
	return c.pgctl(ctx, "promote")
}

// External returns the Cluster for an existing server at connString, a
// postgres:// URL whose database is used to create and drop the others. It
// does not connect.
func External(connString string) (*Cluster, error) {
	u, err := url.Parse(connString)
	if err != nil {
		return nil, fmt.Errorf("parse postgres URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("postgres URL %s: want scheme postgres:// or postgresql://", u.Redacted())
	}
	return &Cluster{base: u, state: running}, nil
}

func (c *Cluster) isExternal() bool { return c.dir == "" }

// URL returns the connection string of database dbname on c:
// postgres://postgres@127.0.0.1:PORT/DBNAME?sslmode=disable for a local
// cluster.
func (c *Cluster) URL(dbname string) string {
	u := *c.base
	u.Path = "/" + dbname
	u.RawPath = ""
	return u.String()
}

// CreateDatabase creates database name and returns its connection string.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	if err := c.admin(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %q: %w", name, err)
	}
	return c.URL(name), nil
}

// DropDatabase drops database name if it exists, closing its connections.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if err := c.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	return nil
}

// admin runs sql in the maintenance database: postgres for a local cluster,
// the one in the URL for an external server.
func (c *Cluster) admin(ctx context.Context, sql string) error {
	connString := c.base.String()
	if !c.isExternal() {
		connString = c.URL("postgres")
	}
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", c.base.Redacted(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// Restart restarts the server (pg_ctl restart -m fast), on the same port
// and with the same data, and returns once it accepts connections again.
// Connections open before it fail. It also starts a stopped cluster.
func (c *Cluster) Restart(ctx context.Context) error {
	if c.isExternal() {
		return fmt.Errorf("restart postgres: %w", ErrExternal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == closed {
		return fmt.Errorf("restart postgres: %w", ErrClosed)
	}
	if err := c.pgctl(ctx, "restart"); err != nil {
		c.state = c.status(ctx)
		return err
	}
	c.state = running
	return nil
}

// Stop stops the server (pg_ctl stop -m fast), keeping its data for Start.
// Stopping a stopped cluster, a closed one or an external server does
// nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.isExternal() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop(ctx)
}

func (c *Cluster) stop(ctx context.Context) error {
	if c.state != running {
		return nil
	}
	if err := c.pgctl(ctx, "stop"); err != nil {
		if c.state = c.status(ctx); c.state == running {
			return err
		}
		return nil // it had already exited
	}
	c.state = stopped
	return nil
}

// Start starts a stopped cluster again, on the same port and with the same
// data. Starting a running cluster does nothing.
func (c *Cluster) Start(ctx context.Context) error {
	if c.isExternal() {
		return fmt.Errorf("start postgres: %w", ErrExternal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case closed:
		return fmt.Errorf("start postgres: %w", ErrClosed)
	case running:
		return nil
	}
	if err := c.pgctl(ctx, "start"); err != nil {
		c.state = c.status(ctx)
		return err
	}
	c.state = running
	return nil
}

// Close stops the server and removes its directory; the cluster cannot be
// used afterwards. Closing a closed cluster or an external server does
// nothing.
func (c *Cluster) Close(ctx context.Context) error {
	if c.isExternal() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == closed {
		return nil
	}
	errs := []error{c.stop(ctx)}
	c.state = closed
	// Whatever the fast stop left running, the watchdog stops immediately.
	errs = append(errs, c.watchdog.release(pgctlTimeout), os.RemoveAll(c.dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close postgres cluster %s: %w", c.dir, err)
	}
	return nil
}

// Running reports whether the server is running, as far as c knows: it was
// started and not stopped or closed since. An external server always is.
func (c *Cluster) Running() bool {
	if c.isExternal() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == running
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// PID is the process id of a running local cluster's postmaster, from its
// postmaster.pid; an error for an external cluster or one not running.
func (c *Cluster) PID() (int, error) {
	if c.isExternal() {
		return 0, errors.New("an external cluster: no local process")
	}
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster pid: %q is not a process id", line)
	}
	return pid, nil
}
func (c *Cluster) logPath() string { return filepath.Join(c.dir, "postgres.log") }

// serverOptions are the postgres command-line options, for pg_ctl -o, which
// passes them through a shell.
func (c *Cluster) serverOptions() string {
	opts := []string{
		"-p", strconv.Itoa(c.port),
		"-k", shellQuote(c.dir),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
		// Ready to be a primary of a streaming standby (StartStandby);
		// initdb's pg_hba.conf lets 127.0.0.1 replicate.
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=10",
	}
	if c.opts.TLS != nil {
		opts = append(opts, "-c", "ssl=on",
			"-c", "ssl_cert_file="+shellQuote(filepath.Join(c.dir, "server.crt")),
			"-c", "ssl_key_file="+shellQuote(filepath.Join(c.dir, "server.key")))
	}
	if !c.opts.Durable {
		opts = append(opts,
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
		)
	}
	return strings.Join(opts, " ")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QueryRow runs one query on the database at url and scans its single row
// into dest: for tests and benchmarks that check what a server stored,
// without importing a driver themselves.
func QueryRow(ctx context.Context, url, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// writeTLS writes the server's certificate and key, when it has them, into
// the cluster's directory, owned by the server's user (PostgreSQL refuses a
// key others can read).
func (c *Cluster) writeTLS() error {
	if c.opts.TLS == nil {
		return nil
	}
	for name, data := range map[string][]byte{"server.crt": c.opts.TLS.CertPEM, "server.key": c.opts.TLS.KeyPEM} {
		path := filepath.Join(c.dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		if err := c.proc.chown(path); err != nil {
			return err
		}
	}
	return nil
}
