package postgres_test

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestFollowAStandby runs replicas that read the feed from an asynchronous
// streaming standby (Options.FollowURL) while writes go to the primary:
//
//   - B only reads: it holds one connection to the standby and no LISTEN
//     connection anywhere, and learns of a revocation made through A by
//     polling, once the standby has replayed it;
//   - C writes through the primary and reads from the standby: its write is
//     acknowledged (WaitFor returns) only once the standby has replayed it
//     and C's index has applied it, however long the replay takes.
func TestFollowAStandby(t *testing.T) {
	primary := pgtest.NewCluster(t, pgtest.Options{})
	if _, err := primary.CreateDatabase(t.Context(), "follow"); err != nil {
		t.Fatal(err)
	}
	open(t, primary.URL("follow")) // migrated before the standby copies it
	standby := pgtest.NewStandby(t, primary)
	named := func(url, name string) string { return url + "&application_name=" + name }

	a := startReplica(t, named(primary.URL("follow"), "a"), postgres.Options{}, time.Second)
	b := startReplica(t, named(primary.URL("follow"), "b"),
		postgres.Options{MaxConns: 1, FollowURL: named(standby.URL("follow"), "b")}, 50*time.Millisecond)
	c := startReplica(t, named(primary.URL("follow"), "c"),
		postgres.Options{FollowURL: named(standby.URL("follow"), "c")}, time.Second)

	revokeJTI(t, a, "first")
	waitFor(t, "B, polling the standby, denies first", func() bool { return b.revoked("first") })

	onPrimary := pgtest.Connect(t, primary.URL("follow"))
	onStandby := pgtest.Connect(t, standby.URL("follow"))
	const byName = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = "
	for sql, want := range map[string]int{
		byName + "'b-follow'": 1, // on the standby
		byName + "'b-listen'": 0,
		byName + "'c-follow'": 1,
		byName + "'c-listen'": 0,
	} {
		if got := pgtest.QueryInt(t, onStandby, sql); got != want {
			t.Errorf("on the standby, %s: %d, want %d", sql, got, want)
		}
	}
	for _, name := range []string{"b-listen", "c-listen", "b-follow", "c-follow"} {
		if got := pgtest.QueryInt(t, onPrimary, byName+"'"+name+"'"); got != 0 {
			t.Errorf("on the primary, %s connections: %d, want 0", name, got)
		}
	}
	select {
	case <-b.store.Notify():
		t.Error("a store following a standby was notified: it has no LISTEN connection")
	default:
	}

	// The standby stops replaying: C's write commits on the primary, but
	// C cannot apply it yet, and must not acknowledge it.
	if _, err := onStandby.Exec(t.Context(), "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	res, err := c.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "second", ExpiresAt: time.Now().Add(time.Hour), Source: "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.f.WaitFor(t.Context(), res.Position) }()
	if got := pgtest.QueryInt(t, onStandby, "SELECT count(*) FROM tokengate_revocations WHERE key = 'second'"); got != 0 {
		t.Fatalf("the paused standby has second (%d rows)", got)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitFor returned before the standby replayed the write: %v", err)
	default:
	}
	if _, err := onStandby.Exec(t.Context(), "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitFor after the standby replayed the write: %v", err)
	}
	if !c.revoked("second") {
		t.Error("C acknowledged second without applying it")
	}
	waitFor(t, "A denies second", func() bool { return a.revoked("second") })
	waitFor(t, "B denies second", func() bool { return b.revoked("second") })
}
