package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
)

// A Cluster is a PostgreSQL server; see [pgcluster.Cluster].
type Cluster = pgcluster.Cluster

// Options configures a cluster started by [NewCluster] or [Start].
type Options = pgcluster.Options

var (
	// ErrUnavailable reports that no local cluster can run on this machine;
	// it is the only start error that may skip a test.
	ErrUnavailable = pgcluster.ErrUnavailable
	// ErrExternal reports a restart or start of the server of [EnvURL].
	ErrExternal = pgcluster.ErrExternal
	// ErrClosed reports an operation on a closed cluster.
	ErrClosed = pgcluster.ErrClosed
)

// Start starts a local cluster that is not tied to a test; see
// [pgcluster.Start]. A test uses [NewCluster] instead.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	return pgcluster.Start(ctx, opts)
}

// QueryRow runs one query on the database at url and scans its single row
// into dest; see [pgcluster.QueryRow].
func QueryRow(ctx context.Context, url, sql string, args []any, dest ...any) error {
	return pgcluster.QueryRow(ctx, url, sql, args, dest...)
}

// EnvURL names the environment variable that points the tests at an
// existing server instead of a throwaway cluster, for example
// postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable.
// Its database is used to create and drop the tests' databases.
const EnvURL = "TOKENGATE_TEST_POSTGRES_URL"

// shared is the cluster of URL and Shared, chosen once per test binary.
var shared struct {
	mu      sync.Mutex
	done    bool
	cluster *Cluster
	err     error
	local   bool // err is about the local cluster, so tests may skip
}

// Main runs the tests of a package and then stops the shared cluster, if
// URL or Shared started one. It returns the exit code for os.Exit: m.Run's,
// or 1 if the tests passed but the cluster could not be stopped.
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) (code int) {
	defer func() {
		if err := closeShared(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()
	return m.Run()
}

func closeShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgcluster.CloseTimeout)
	defer cancel()
	return shared.cluster.Close(ctx)
}

// URL returns the connection string of a new, empty database on the shared
// cluster, dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	name := dbName(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	u, err := c.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil && c.Running() {
			t.Errorf("pgtest: %v", err)
		}
	})
	return u
}

// Shared returns the cluster behind URL, starting it on first use: the
// server of TOKENGATE_TEST_POSTGRES_URL if set, else a throwaway local
// cluster that Main stops. The other tests of the binary use it too, so a
// test that calls Restart, Stop or Close on it breaks them; such a test
// starts its own with NewCluster.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.done {
		shared.done = true
		if s := os.Getenv(EnvURL); s != "" {
			shared.cluster, shared.err = pgcluster.External(s)
			if shared.err != nil {
				shared.err = fmt.Errorf("%s: %w", EnvURL, shared.err)
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), pgcluster.StartTimeout)
			defer cancel()
			shared.cluster, shared.err = pgcluster.Start(ctx, Options{})
			shared.local = true
		}
	}
	if shared.err != nil {
		if shared.local {
			noServer(t, shared.err)
		}
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.cluster
}

// NewCluster starts a local cluster for t alone, closed when t ends, even
// when TOKENGATE_TEST_POSTGRES_URL is set.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := pgcluster.Start(t.Context(), opts)
	if err != nil {
		noServer(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pgcluster.CloseTimeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// NewStandby starts an asynchronous streaming standby of primary, a local
// cluster, closed when t ends; see [pgcluster.Cluster.StartStandby].
func NewStandby(t testing.TB, primary *Cluster) *Cluster {
	t.Helper()
	c, err := primary.StartStandby(t.Context())
	if err != nil {
		noServer(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pgcluster.CloseTimeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// noServer ends t, which needs a local cluster that could not be started
// because of err. It skips t only when err is [ErrUnavailable] (this machine
// cannot run a cluster at all) and CI is not true; any other error, or any
// error under CI, fails t, so that a broken start is never mistaken for a
// missing server and CI never silently skips the PostgreSQL tests.
func noServer(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pgtest: start a local postgres cluster: %v", err)
	}
	msg := fmt.Sprintf("pgtest: no postgres server for this test: %v; "+
		"set %s to a server's URL, or install the PostgreSQL server binaries", err, EnvURL)
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + "; failing rather than skipping because CI is true")
	}
	t.Skip(msg)
}

// dbName returns a new database name, unique across test binaries sharing
// a server, recognizable by the test's name and at most 63 bytes long.
func dbName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("pgtest_")
	for _, r := range strings.ToLower(t.Name()) {
		if b.Len() == len("pgtest_")+32 {
			break
		}
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	random := make([]byte, 8)
	rand.Read(random) // never fails
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(random))
	return b.String()
}
