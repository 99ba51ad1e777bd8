package postgres_test

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// rewind simulates, in SQL, what a failover to an asynchronous standby or a
// point-in-time restore leaves behind: the feed's last `back` changes and
// the entries they wrote are gone, and last_seq is back where the standby
// stopped. With newIdentity the feed's identity changes too, as a promoted
// standby's does (a new WAL timeline), here through its feed id.
func rewind(t *testing.T, url string, back int, newIdentity bool) {
	t.Helper()
	conn := pgtest.Connect(t, url)
	sql := fmt.Sprintf(`
		DELETE FROM tokengate_revocations WHERE seq > (SELECT last_seq - %[1]d FROM tokengate_feed);
		DELETE FROM tokengate_changes WHERE seq > (SELECT last_seq - %[1]d FROM tokengate_feed);
		UPDATE tokengate_feed SET last_seq = last_seq - %[1]d;`, back)
	if newIdentity {
		sql += `UPDATE tokengate_feed SET feed_id = 'promoted';`
	}
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

// revokeMany revokes the jtis in one write through r.
func revokeMany(t *testing.T, r *replica, jtis ...string) {
	t.Helper()
	var revs []storage.Revocation
	for _, jti := range jtis {
		revs = append(revs, storage.Revocation{Kind: storage.KindToken, Issuer: "iss", Key: jti,
			ExpiresAt: time.Now().Add(time.Hour), Source: "test"})
	}
	res, err := r.store.Apply(t.Context(), storage.Write{Revocations: revs})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.f.WaitFor(t.Context(), res.Position); err != nil {
		t.Fatal(err)
	}
}

// TestFeedMovedBackIsNotIgnored: replicas applied the feed up to some
// sequence; then the feed moves back (its tail lost) and sequence numbers
// are handed out again for new revocations. Every replica must deny those,
// whether it reads the feed before the new writes (it finds last_seq below
// its own) or only after them (it finds another feed identity). The lost
// entries are reported: an error log, the reset counter, and the count of
// live entries that vanished.
func TestFeedMovedBackIsNotIgnored(t *testing.T) {
	for name, tc := range map[string]struct {
		newIdentity bool
		readBetween bool // every replica reads the feed between the rewind and the new writes
		oneByOne    bool // the new writes one change each, each pushed to the replicas
	}{
		"read before the new writes":               {readBetween: true},
		"no read, pushed one by one":               {oneByOne: true},
		"new identity, read after the new writes":  {newIdentity: true},
		"new identity, read before the new writes": {newIdentity: true, readBetween: true},
	} {
		t.Run(name, func(t *testing.T) {
			url := pgtest.URL(t)
			// No polling: only NOTIFY and the writes' own catch-up read.
			a := startReplica(t, url, postgres.Options{}, time.Hour)
			b := startReplica(t, url, postgres.Options{}, time.Hour)
			revokeMany(t, a, "kept-1", "kept-2")
			revokeMany(t, a, "lost-1", "lost-2", "lost-3")
			waitFor(t, "B has every revocation", func() bool { return b.revoked("kept-1") && b.revoked("lost-3") })

			rewind(t, url, 3, tc.newIdentity)
			if tc.readBetween {
				for _, r := range []*replica{a, b} {
					if err := r.f.CatchUp(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
			}
			// One write takes the numbers the lost changes had, and more.
			fresh := []string{"new-1", "new-2", "new-3", "new-4", "new-5"}
			if tc.oneByOne {
				for _, jti := range fresh {
					revokeMany(t, a, jti)
				}
			} else {
				revokeMany(t, a, fresh...)
			}
			for name, r := range map[string]*replica{"A": a, "B": b} {
				for _, jti := range append([]string{"kept-1", "kept-2"}, fresh...) {
					waitFor(t, name+" denies "+jti, func() bool { return r.revoked(jti) })
				}
				if got := r.counter(t, "tokengate_revocation_feed_resets_total"); got != 1 {
					t.Errorf("%s: feed resets = %v, want 1", name, got)
				}
				if got := r.counter(t, "tokengate_revocations_lost_total"); got != 3 {
					t.Errorf("%s: lost revocations = %v, want 3", name, got)
				}
				if log := r.log.String(); !strings.Contains(log, `"level":"ERROR","msg":"revocation feed reset`) ||
					!strings.Contains(log, `"lost_entries":3`) {
					t.Errorf("%s logged no error with the lost entries:\n%s", name, log)
				}
			}
		})
	}
}

// TestFeedIdentityNeedsNoPrivileges: the feed's identity reads the control
// file and the WAL position, which an ordinary role may do: tokengate need
// not connect as a superuser.
func TestFeedIdentityNeedsNoPrivileges(t *testing.T) {
	url := pgtest.URL(t)
	open(t, url) // migrated
	conn := pgtest.Connect(t, url)
	role := fmt.Sprintf("tokengate_reader_%d", time.Now().UnixNano())
	if _, err := conn.Exec(t.Context(), fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'reader'; GRANT SELECT ON tokengate_feed TO %[1]s`, role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %s; DROP ROLE %[1]s", role))
	})
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(role, "reader")
	as := u.String()
	var id string
	if err := pgtest.QueryRow(t.Context(), as, "SELECT tokengate_feed_identity(feed_id) FROM tokengate_feed", nil, &id); err != nil {
		t.Fatalf("the feed identity as an ordinary role: %v", err)
	}
	if parts := strings.Split(id, "/"); len(parts) != 4 || len(parts[3]) != 8 {
		t.Errorf("feed identity %q, want feed id/system id/database oid/timeline", id)
	}
}
