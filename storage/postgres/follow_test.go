package postgres_test

import (
	"context"
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
//     acknowledged (WaitForWrite returns, as for a write through intake)
//     only once the standby has replayed it and C's index has applied it,
//     however long the replay takes: not from the changes the primary
//     reports committed.
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

	// C is caught up: its next write's changes continue its index.
	waitFor(t, "C, polling the standby, denies first", func() bool { return c.revoked("first") })
	// The standby stops replaying: C's write commits on the primary, but
	// C cannot apply it yet, and must not acknowledge it, not even from
	// what the primary answered (the index follows the standby, which
	// does not have the write yet).
	if _, err := onStandby.Exec(t.Context(), "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	mark := c.f.Mark()
	res, err := c.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "second", ExpiresAt: time.Now().Add(time.Hour), Source: "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pgtest.QueryInt(t, onStandby, "SELECT count(*) FROM tokengate_revocations WHERE key = 'second'"); got != 0 {
		t.Fatalf("the paused standby has second (%d rows)", got)
	}
	// Whatever the wait, it cannot end well while the standby is paused.
	paused, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err = c.f.WaitForWrite(paused, mark, res)
	cancel()
	if err == nil {
		t.Fatal("WaitForWrite returned before the standby replayed the write")
	}
	if c.revoked("second") {
		t.Error("C's index has second before the standby it follows does")
	}
	if _, err := onStandby.Exec(t.Context(), "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	if err := c.f.WaitForWrite(t.Context(), mark, res); err != nil {
		t.Fatalf("WaitForWrite after the standby replayed the write: %v", err)
	}
	if !c.revoked("second") {
		t.Error("C acknowledged second without applying it")
	}
	if n := c.counter(t, "tokengate_revocation_feed_resets_total"); n != 0 {
		t.Errorf("C reset its feed %v times, want never: its index was put past the standby's feed", n)
	}
	waitFor(t, "A denies second", func() bool { return a.revoked("second") })
	waitFor(t, "B denies second", func() bool { return b.revoked("second") })
}
