package postgres_test

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

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
