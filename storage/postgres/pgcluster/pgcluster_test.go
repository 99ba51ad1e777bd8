package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// The clusters of these tests come from pgtest, which wraps this package
// for tests, so that they skip and fail by its rule.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestExternal(t *testing.T) {
	c, err := pgcluster.External(pgtest.Shared(t).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	url, err := c.CreateDatabase(t.Context(), "pgcluster_external")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "/pgcluster_external?") {
		t.Errorf("CreateDatabase returned %s, want a URL of database pgcluster_external", url)
	}
	if err := c.DropDatabase(t.Context(), "pgcluster_external"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(t.Context()); !errors.Is(err, pgcluster.ErrExternal) {
		t.Errorf("Restart of an external server: %v, want ErrExternal", err)
	}
	if pid, err := c.PID(); err == nil {
		t.Errorf("PID of an external server: %d, want an error", pid)
	}
}

// TestPID: a local cluster's PID is its postmaster's, the process its
// backends are children of.
func TestPID(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t, pgcluster.Options{})
	url, err := c.CreateDatabase(t.Context(), "pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := c.PID()
	if err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := pgtest.Connect(t, url).QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
	if err != nil {
		t.Fatal(err)
	}
	// The backend's stat: "pid (postgres) S ppid …".
	_, rest, _ := strings.Cut(string(stat), ") ")
	if f := strings.Fields(rest); len(f) < 2 || f[1] != fmt.Sprint(pid) {
		t.Errorf("PID %d; the backend %d's stat says its parent is %q", pid, backend, f)
	}
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t, pgcluster.Options{})
	url := writeRow(t, c)
	before := pgtest.Connect(t, url)
	if got := pgtest.Setting(t, before, "fsync"); got != "off" {
		t.Errorf("non-durable cluster: fsync = %s, want off", got)
	}

	if err := c.Restart(t.Context()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if _, err := before.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Error("a connection made before Restart still works")
	}
	checkRow(t, url)
}

func TestStopThenStart(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t, pgcluster.Options{Durable: true})
	url := writeRow(t, c)
	if got := pgtest.Setting(t, pgtest.Connect(t, url), "fsync"); got != "on" {
		t.Errorf("durable cluster: fsync = %s, want on", got)
	}

	for range 2 { // Stop is idempotent
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped cluster")
	}

	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	checkRow(t, url)
}

// writeRow creates a database on c holding one row, and returns its URL.
func writeRow(t *testing.T, c *pgcluster.Cluster) string {
	t.Helper()
	url, err := c.CreateDatabase(t.Context(), "kept")
	if err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	return url
}

func checkRow(t *testing.T, url string) {
	t.Helper()
	if got := pgtest.QueryInt(t, pgtest.Connect(t, url), "SELECT n FROM kept"); got != 42 {
		t.Errorf("SELECT n FROM kept = %d, want 42", got)
	}
}

// TestStandbyStreamsThenPromotes: a standby follows the primary's writes
// and refuses its own; once the primary stops and the standby is promoted,
// it takes writes, on a new timeline.
func TestStandbyStreamsThenPromotes(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewCluster(t, pgcluster.Options{})
	url := writeRow(t, primary)
	standby := pgtest.NewStandby(t, primary)
	if _, err := pgtest.Connect(t, url).Exec(t.Context(), "INSERT INTO kept VALUES (43)"); err != nil {
		t.Fatal(err)
	}
	onStandby := pgtest.Connect(t, standby.URL("kept"))
	deadline := time.Now().Add(time.Minute)
	for pgtest.QueryInt(t, onStandby, "SELECT count(*) FROM kept") != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the standby did not receive the primary's write within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := onStandby.Exec(t.Context(), "INSERT INTO kept VALUES (44)"); err == nil {
		t.Error("a standby took a write")
	}
	timeline := func(conn *pgx.Conn) string {
		var tl string
		if err := conn.QueryRow(t.Context(), "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").Scan(&tl); err != nil {
			t.Fatal(err)
		}
		return tl
	}
	before := timeline(pgtest.Connect(t, url))

	if err := primary.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	if _, err := onStandby.Exec(t.Context(), "INSERT INTO kept VALUES (44)"); err != nil {
		t.Errorf("the promoted standby refuses a write: %v", err)
	}
	if after := timeline(onStandby); after == before {
		t.Errorf("the promoted standby is on timeline %s, as the primary was", after)
	}
}
