package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestURLGivesFreshDatabases(t *testing.T) {
	t.Parallel()
	urlA, urlB := pgtest.URL(t), pgtest.URL(t)
	if urlA == urlB {
		t.Fatalf("URL returned %s twice", urlA)
	}
	a, b := connect(t, urlA), connect(t, urlB)
	for name, conn := range map[string]*pgx.Conn{"a": a, "b": b} {
		if got := queryInt(t, conn, "SELECT 1"); got != 1 {
			t.Errorf("database %s: SELECT 1 = %d, want 1", name, got)
		}
		if got := queryInt(t, conn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); got != 0 {
			t.Errorf("database %s has %d tables, want none", name, got)
		}
	}
	if _, err := a.Exec(t.Context(), "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, a, "only_in_a") {
		t.Error("table only_in_a missing from database a, where it was created")
	}
	if tableExists(t, b, "only_in_a") {
		t.Error("table only_in_a, created in database a, exists in database b")
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func show(t *testing.T, conn *pgx.Conn, setting string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", setting).Scan(&v); err != nil {
		t.Fatalf("current_setting(%s): %v", setting, err)
	}
	return v
}

func tableExists(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}
