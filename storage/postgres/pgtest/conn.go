package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Connect opens a connection to url, closed when tb ends.
func Connect(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), url)
	if err != nil {
		tb.Fatalf("connect to %s: %v", url, err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// QueryInt runs sql, which must return one integer.
func QueryInt(tb testing.TB, conn *pgx.Conn, sql string) int {
	tb.Helper()
	var n int
	if err := conn.QueryRow(tb.Context(), sql).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Setting returns the server's current value of a setting.
func Setting(tb testing.TB, conn *pgx.Conn, setting string) string {
	tb.Helper()
	var v string
	if err := conn.QueryRow(tb.Context(), "SELECT current_setting($1)", setting).Scan(&v); err != nil {
		tb.Fatalf("current_setting(%s): %v", setting, err)
	}
	return v
}

// TableExists reports whether table exists in conn's database.
func TableExists(tb testing.TB, conn *pgx.Conn, table string) bool {
	tb.Helper()
	var exists bool
	if err := conn.QueryRow(tb.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		tb.Fatalf("to_regclass(%s): %v", table, err)
	}
	return exists
}
