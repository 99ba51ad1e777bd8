package pgtest_test

import (
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
	a, b := pgtest.Connect(t, urlA), pgtest.Connect(t, urlB)
	for name, conn := range map[string]*pgx.Conn{"a": a, "b": b} {
		if got := pgtest.QueryInt(t, conn, "SELECT 1"); got != 1 {
			t.Errorf("database %s: SELECT 1 = %d, want 1", name, got)
		}
		if got := pgtest.QueryInt(t, conn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); got != 0 {
			t.Errorf("database %s has %d tables, want none", name, got)
		}
	}
	if _, err := a.Exec(t.Context(), "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	if !pgtest.TableExists(t, a, "only_in_a") {
		t.Error("table only_in_a missing from database a, where it was created")
	}
	if pgtest.TableExists(t, b, "only_in_a") {
		t.Error("table only_in_a, created in database a, exists in database b")
	}
}
