package postgres_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestDatabaseClock: without Options.Now (production), the store stamps
// entries and changes, and decides whether an event id is remembered, by the
// database server's clock, one clock for every replica, not by the process's.
// The server's now() and clock_timestamp() are shifted 2h ahead for the
// store's sessions (functions of the same names earlier on the search_path),
// so that the two clocks can be told apart.
func TestDatabaseClock(t *testing.T) {
	raw := pgtest.URL(t)
	open(t, raw) // migrated, in public
	conn := pgtest.Connect(t, raw)
	if _, err := conn.Exec(t.Context(), `
		CREATE SCHEMA shifted;
		CREATE FUNCTION shifted.now() RETURNS timestamptz LANGUAGE sql STABLE
			AS $$ SELECT pg_catalog.now() + interval '2 hours' $$;
		CREATE FUNCTION shifted.clock_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE
			AS $$ SELECT pg_catalog.clock_timestamp() + interval '2 hours' $$;`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery += "&options=" + strings.ReplaceAll(url.QueryEscape("-c search_path=shifted,pg_catalog,public"), "+", "%20") // pgx reads + literally
	s := openWith(t, u.String(), postgres.Options{})

	now := time.Now()
	near := func(got, want time.Time) bool { return got.Sub(want).Abs() < 10*time.Minute }
	w := storage.Write{
		Revocations: []storage.Revocation{{Kind: storage.KindToken, Issuer: "iss", Key: "jti-clock",
			ExpiresAt: now.Add(90 * time.Minute), Source: "test"}},
		EventID: "ev-clock", EventExpiresAt: now.Add(time.Hour),
	}
	res, err := s.Apply(t.Context(), w)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Revocations[0].CreatedAt; !near(got, now.Add(2*time.Hour)) {
		t.Errorf("created_at = %v, want the database's clock, about %v", got, now.Add(2*time.Hour))
	}
	pos, err := s.Snapshot(t.Context(), now, func(storage.Revocation) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	cs, err := s.Changes(t.Context(), storage.Position{Feed: pos.Feed}, 10)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Changes = %v, %v; want one change", cs, err)
	}
	if !near(cs[0].At, now.Add(2*time.Hour)) {
		t.Errorf("change committed at %v, want the database's clock, about %v", cs[0].At, now.Add(2*time.Hour))
	}
	// The event id is kept until now+90m on the process's clock, which is
	// already past on the database's: a redelivery is applied again.
	again, err := s.Apply(t.Context(), w)
	if err != nil {
		t.Fatal(err)
	}
	if again.Duplicate {
		t.Error("the redelivery is a duplicate: the event id's expiry was judged by the process's clock, not the database's")
	}
}

// TestSweepByTheDatabaseClock: a replica whose clock runs two hours ahead
// sweeps the shared store; revocations live by the database's clock (and
// every other replica's) stay, so a replica that loads a snapshot afterwards
// has them all. An entry expired by the database's clock, past the margin,
// is still swept.
func TestSweepByTheDatabaseClock(t *testing.T) {
	url := pgtest.URL(t)
	writer := openWith(t, url, postgres.Options{}) // no injected clock: the database's
	now := time.Now()
	live := []string{"live-1", "live-2", "live-3"}
	var revs []storage.Revocation
	for _, jti := range live {
		revs = append(revs, storage.Revocation{Kind: storage.KindToken, Issuer: "iss", Key: jti,
			ExpiresAt: now.Add(time.Hour), Source: "test"})
	}
	revs = append(revs, storage.Revocation{Kind: storage.KindToken, Issuer: "iss", Key: "long-gone",
		ExpiresAt: now.Add(-time.Hour), Source: "test"})
	if _, err := writer.Apply(t.Context(), storage.Write{Revocations: revs}); err != nil {
		t.Fatal(err)
	}

	// The sweeper runs two hours ahead: it is what a Follower with that
	// clock passes to Sweep.
	ahead := openWith(t, url, postgres.Options{})
	n, err := ahead.Sweep(t.Context(), now.Add(2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("the sweep deleted %d entries, want 1 (only the one expired by the database's clock)", n)
	}

	fresh := startReplica(t, url, postgres.Options{}, time.Hour)
	for _, jti := range live {
		if !fresh.revoked(jti) {
			t.Errorf("a replica loaded after the sweep allows %s: a sweeper whose clock runs ahead deleted a live revocation", jti)
		}
	}
}
