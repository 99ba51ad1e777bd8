package postgres_test

import (
	"fmt"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestFailoverToAnAsyncStandby runs tokengate replicas on a primary and an
// asynchronous streaming standby behind one multi-host URL, as an HA
// PostgreSQL (Patroni, CloudNativePG, a managed service) presents itself:
//
//  1. the standby is cut off from the primary, which then takes
//     revocations that never reach it (the unreplicated tail);
//  2. the primary stops: the replicas keep deciding from memory;
//  3. the standby is promoted: the replicas reconnect to it and LISTEN
//     again, find the feed reset (a new timeline), and reload its snapshot;
//  4. revocations written after the promotion, which take the sequence
//     numbers the lost tail had, are denied on every replica;
//  5. the tail's revocations are gone from every replica, and reported:
//     an error log, the reset counter and the count of lost entries.
func TestFailoverToAnAsyncStandby(t *testing.T) {
	primary := pgtest.NewCluster(t, pgtest.Options{})
	if _, err := primary.CreateDatabase(t.Context(), "failover"); err != nil {
		t.Fatal(err)
	}
	open(t, primary.URL("failover")) // migrated before the standby copies it
	standby := pgtest.NewStandby(t, primary)
	url := fmt.Sprintf("postgres://postgres@%s,%s/failover?sslmode=disable&target_session_attrs=read-write&connect_timeout=2",
		host(t, primary.URL("failover")), host(t, standby.URL("failover")))

	opts := postgres.Options{ListenReconnectDelay: 100 * time.Millisecond}
	a := startReplica(t, url, opts, 200*time.Millisecond)
	b := startReplica(t, url, opts, 200*time.Millisecond)
	revokeMany(t, a, "before")
	waitFor(t, "B denies before", func() bool { return b.revoked("before") })
	onStandby := pgtest.Connect(t, standby.URL("failover"))
	waitFor(t, "the standby has replayed before", func() bool {
		return pgtest.QueryInt(t, onStandby, "SELECT count(*) FROM tokengate_revocations WHERE key = 'before'") == 1
	})

	// 1. Cut the standby off: its WAL receiver stops, and what the primary
	// writes from now on stays on the primary. (Pausing replay would not
	// do: a standby replays all the WAL it received before it promotes.)
	for _, sql := range []string{"ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"} {
		if _, err := onStandby.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	onPrimary := pgtest.Connect(t, primary.URL("failover"))
	waitFor(t, "the standby cut off", func() bool {
		return pgtest.QueryInt(t, onPrimary, "SELECT count(*) FROM pg_stat_replication") == 0 &&
			pgtest.QueryInt(t, onStandby, "SELECT count(*) FROM pg_stat_wal_receiver") == 0
	})
	lost := []string{"lost-1", "lost-2", "lost-3"}
	revokeMany(t, a, lost...)
	waitFor(t, "B denies the tail", func() bool { return b.revoked("lost-3") })

	// 2. The primary goes: decisions come from memory.
	if err := primary.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*replica{"A": a, "B": b} {
		waitFor(t, name+" goes stale", func() bool { return r.f.Staleness() > time.Second })
		for _, jti := range append([]string{"before"}, lost...) {
			if !r.revoked(jti) {
				t.Errorf("%s allows %s while the database is down", name, jti)
			}
		}
	}

	// 3. The standby is promoted; the replicas find it through the URL.
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both replicas LISTEN on the new primary", func() bool {
		return pgtest.QueryInt(t, onStandby,
			"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tokengate-listen' AND datname = current_database()") == 2
	})

	// 4. New revocations, through B as soon as it can write.
	after := []string{"after-1", "after-2", "after-3", "after-4", "after-5"}
	var revs []storage.Revocation
	for _, jti := range after {
		revs = append(revs, storage.Revocation{Kind: storage.KindToken, Issuer: "iss", Key: jti,
			ExpiresAt: time.Now().Add(time.Hour), Source: "test"})
	}
	waitFor(t, "B writes to the promoted standby", func() bool {
		res, err := b.store.Apply(t.Context(), storage.Write{Revocations: revs, EventID: "after-failover"})
		return err == nil && b.f.WaitFor(t.Context(), res.Position) == nil
	})
	for name, r := range map[string]*replica{"A": a, "B": b} {
		for _, jti := range append([]string{"before"}, after...) {
			waitFor(t, name+" denies "+jti, func() bool { return r.revoked(jti) })
		}
		waitFor(t, name+" fresh again", func() bool { return r.f.Staleness() < time.Second })

		// 5. The tail is gone, and said to be.
		for _, jti := range lost {
			if r.revoked(jti) {
				t.Errorf("%s still denies %s, which the promoted standby never had", name, jti)
			}
		}
		if got := r.counter(t, "tokengate_revocation_feed_resets_total"); got != 1 {
			t.Errorf("%s: feed resets = %v, want 1", name, got)
		}
		if got := r.counter(t, "tokengate_revocations_lost_total"); got != float64(len(lost)) {
			t.Errorf("%s: lost revocations = %v, want %d", name, got, len(lost))
		}
		if log := r.log.String(); !strings.Contains(log, `"level":"ERROR","msg":"revocation feed reset`) ||
			!strings.Contains(log, fmt.Sprintf(`"lost_entries":%d`, len(lost))) {
			t.Errorf("%s logged no error with the lost entries:\n%s", name, log)
		}
	}
}

// host is the host:port of a URL.
func host(t *testing.T, url string) string {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
