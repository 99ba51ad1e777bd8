// Package pgtest provides the PostgreSQL servers that tokengate's tests run
// against, on top of pgcluster.
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
//   - otherwise a throwaway cluster started by [pgcluster.Start] from the
//     local server binaries, without durability.
//
// A test is skipped only when no cluster can run on this machine at all:
// the server binaries are missing, or, running as root, the postgres system
// user ([ErrUnavailable]); the skip message says what is missing. Any other
// failure to start a cluster (initdb or pg_ctl failing, a directory the
// server cannot reach) fails the test, since it is a fault to fix rather
// than a machine to excuse. When the environment variable CI is true nothing
// is skipped: a missing server fails the test too, so that CI never silently
// skips the PostgreSQL suite.
//
// A test that needs to restart or stop the server must not do it on the
// shared cluster, which the other tests of the binary are using: it starts
// its own with [NewCluster]. Commands use pgcluster directly.
package pgtest
