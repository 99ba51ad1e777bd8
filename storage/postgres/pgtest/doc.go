// Package pgtest provides the PostgreSQL servers that tokengate's tests and
// benchmarks run against.
//
// In a test, call [URL] for a connection string to a fresh, empty database
// that is dropped when the test ends, and run the package's tests through
// [Main] so the server is stopped afterwards:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
//		…
//	}
//
// The server behind [URL] and [Shared] is chosen once per test binary:
//
//   - if the environment variable TOKENGATE_TEST_POSTGRES_URL ([EnvURL]) is
//     set, the server it points to; each test gets its own database there;
//   - otherwise a throwaway cluster started from the local server binaries
//     (initdb and pg_ctl on PATH, else the highest version under
//     /usr/lib/postgresql/*/bin), in a temporary directory, on a free port of
//     127.0.0.1, without durability (fsync, synchronous_commit and
//     full_page_writes off). When running as root it runs as the postgres
//     system user, because initdb refuses to run as root.
//
// When neither is possible the test is skipped with a message saying what is
// missing, except when the environment variable CI is true: there the test
// fails, so that CI never silently skips the PostgreSQL suite.
//
// A test that needs to restart or stop the server must not do it on the
// shared cluster, which the other tests of the binary are using: it starts
// its own with [NewCluster]. Outside tests, a benchmark command calls
// [Start], usually with [Options.Durable] set, and [Cluster.Close] when done.
//
// A cluster lives no longer than the process that started it: alongside the
// server runs a small watchdog process that, when that process exits in any
// way (a panicking test, a test timeout, a kill, a TestMain that does not use
// Main), stops the server and removes its directory.
package pgtest
