package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// replica is one tokengate replica's revocation state: its own store
// connections, index and follower.
type replica struct {
	store *postgres.Store
	index *storage.Index
	f     *storage.Follower
}

func startReplica(t *testing.T, url string, opts postgres.Options, poll time.Duration) *replica {
	t.Helper()
	s, err := postgres.Open(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := &replica{store: s, index: storage.NewIndex()}
	r.f = storage.NewFollower(s, r.index, storage.FollowerOptions{Poll: poll})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 10*time.Second, "replica loaded", r.f.Loaded)
	return r
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func revokeJTI(t *testing.T, r *replica, jti string) {
	t.Helper()
	res, err := r.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: jti, ExpiresAt: time.Now().Add(time.Hour), Source: "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.f.WaitFor(t.Context(), res.Seq); err != nil {
		t.Fatal(err)
	}
}

func (r *replica) revoked(jti string) bool {
	return r.index.Revoked(r.index.Keys("iss", jti, "", "", nil), time.Now(), time.Now())
}

// TestRevokeThroughAOtherReplicaDenies: a write through A is in A's index
// when the call returns, and reaches B through NOTIFY well before B's poll.
func TestRevokeThroughAOtherReplicaDenies(t *testing.T) {
	url := pgtest.URL(t)
	a := startReplica(t, url, postgres.Options{}, time.Hour) // no polling: only NOTIFY can deliver
	b := startReplica(t, url, postgres.Options{}, time.Hour)
	revokeJTI(t, a, "jti-1")
	if !a.revoked("jti-1") {
		t.Fatal("A does not deny its own write when the write returns")
	}
	d := waitFor(t, 5*time.Second, "B denies jti-1", func() bool { return b.revoked("jti-1") })
	t.Logf("propagated to B in %v", d)
}

// TestKilledListenConnectionPollStillDelivers: with B's LISTEN connection
// terminated (and not coming back for a minute), B's poll brings the change.
func TestKilledListenConnectionPollStillDelivers(t *testing.T) {
	url := pgtest.URL(t)
	a := startReplica(t, url, postgres.Options{}, time.Hour)
	b := startReplica(t, url, postgres.Options{ListenReconnectDelay: time.Minute}, 200*time.Millisecond)
	killListeners(t, url)
	revokeJTI(t, a, "jti-2")
	d := waitFor(t, 5*time.Second, "B denies jti-2 without LISTEN", func() bool { return b.revoked("jti-2") })
	t.Logf("delivered by B's poll in %v", d)
}

// killListeners terminates every tokengate LISTEN connection to the database.
func killListeners(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'tokengate-listen' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no LISTEN connection to terminate")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicasSurviveDatabaseRestart: while the database is down, replicas
// keep deciding from memory and report growing staleness; afterwards they
// catch up with writes made while they were still reconnecting, and after.
func TestReplicasSurviveDatabaseRestart(t *testing.T) {
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	url, err := cluster.CreateDatabase(t.Context(), "replicas")
	if err != nil {
		t.Fatal(err)
	}
	a := startReplica(t, url, postgres.Options{}, 100*time.Millisecond)
	b := startReplica(t, url, postgres.Options{}, 100*time.Millisecond)
	revokeJTI(t, a, "before")
	waitFor(t, 5*time.Second, "B has the first revocation", func() bool { return b.revoked("before") })

	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for name, r := range map[string]*replica{"A": a, "B": b} {
		if !r.revoked("before") || r.revoked("other") {
			t.Errorf("%s lost its in-memory view during the outage", name)
		}
		if s := r.f.Staleness(); s < 300*time.Millisecond {
			t.Errorf("%s staleness %v during the outage, want it growing", name, s)
		}
	}
	if _, err := a.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "lost", ExpiresAt: time.Now().Add(time.Hour)}}}); err == nil {
		t.Error("a write succeeded with the database down")
	}

	if err := cluster.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Written by a third party as soon as the database is back, while the
	// replicas may still be reconnecting…
	other, err := postgres.Open(url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "during", ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	// …and through A once it can write again.
	waitFor(t, 10*time.Second, "A can write again", func() bool {
		_, err := a.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
			Kind: storage.KindToken, Issuer: "iss", Key: "after", ExpiresAt: time.Now().Add(time.Hour)}}})
		return err == nil
	})
	for name, r := range map[string]*replica{"A": a, "B": b} {
		waitFor(t, 10*time.Second, name+" caught up", func() bool { return r.revoked("during") && r.revoked("after") })
		if s := r.f.Staleness(); s > 2*time.Second {
			t.Errorf("%s staleness %v after catching up", name, s)
		}
	}
}

// TestOneSweeperAtATime: while another replica sweeps (holds the sweep
// lock), a Sweep deletes nothing and returns at once.
func TestOneSweeperAtATime(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	if _, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "old", ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Hour)
	other, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	tx, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const sweepLock = 0x746f6b656e737770 // the backend's sweep lock key, "tokenswp"
	if _, err := tx.Exec(t.Context(), "SELECT pg_advisory_xact_lock($1)", int64(sweepLock)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(t.Context(), later, time.Hour); err != nil || n != 0 {
		t.Errorf("Sweep while another replica sweeps = %d, %v; want 0", n, err)
	}
	tx.Rollback(t.Context())
	if n, err := s.Sweep(t.Context(), later, time.Hour); err != nil || n != 1 {
		t.Errorf("Sweep after the other finished = %d, %v; want 1", n, err)
	}
}
