package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

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
	reg   *prometheus.Registry
	log   *syncBuffer // the follower's log, JSON
}

func startReplica(t *testing.T, url string, opts postgres.Options, poll time.Duration) *replica {
	t.Helper()
	s, err := postgres.Open(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := &replica{store: s, index: storage.NewIndex(), reg: prometheus.NewRegistry(), log: &syncBuffer{}}
	if r.f, err = storage.NewFollower(s, r.index, storage.FollowerOptions{Poll: poll, Registerer: r.reg,
		Logger: slog.New(slog.NewJSONHandler(r.log, nil))}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.f.Run(ctx); err != nil {
			t.Errorf("follower: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "replica loaded", r.f.Loaded)
	return r
}

// waitFor waits until cond holds, and fails the test if it does not within
// a minute: long enough for a loaded machine, since what is waited for is
// that it happens, not how fast. Benchmarks measure how fast.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func revokeJTI(t *testing.T, r *replica, jti string) {
	t.Helper()
	res, err := r.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: jti, ExpiresAt: time.Now().Add(time.Hour), Source: "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.f.WaitFor(t.Context(), res.Position); err != nil {
		t.Fatal(err)
	}
}

func (r *replica) revoked(jti string) bool {
	return r.index.Revoked(r.index.Keys("iss", jti, "", "", nil), time.Now(), time.Now())
}

// counter is the value of the replica's counter name (0 when absent).
func (r *replica) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
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
	waitFor(t, "B denies jti-1", func() bool { return b.revoked("jti-1") })
}

// TestKilledListenConnectionPollStillDelivers: with the LISTEN connections
// terminated (and not coming back for an hour), B's poll brings the change:
// no NOTIFY can reach B.
func TestKilledListenConnectionPollStillDelivers(t *testing.T) {
	url := pgtest.URL(t)
	a := startReplica(t, url, postgres.Options{ListenReconnectDelay: time.Hour}, time.Hour)
	b := startReplica(t, url, postgres.Options{ListenReconnectDelay: time.Hour}, 200*time.Millisecond)
	// Both LISTEN connections must exist before they are killed: one made
	// after the kill would deliver the NOTIFY, and the test would pass
	// without the poll.
	killListeners(t, url, 2)
	revokeJTI(t, a, "jti-2")
	waitFor(t, "B denies jti-2 without LISTEN", func() bool { return b.revoked("jti-2") })
}

// killListeners waits until want tokengate LISTEN connections to the
// database exist, then terminates them all, and checks that none is left.
func killListeners(t *testing.T, url string, want int) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := conn.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	const listeners = `FROM pg_stat_activity WHERE application_name = 'tokengate-listen' AND datname = current_database()`
	count := func(sql string) int {
		var n int
		if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, fmt.Sprintf("%d LISTEN connections", want), func() bool { return count("SELECT count(*) "+listeners) == want })
	if n := count("SELECT count(pg_terminate_backend(pid)) " + listeners); n != want {
		t.Fatalf("terminated %d LISTEN connections, want %d", n, want)
	}
	// pg_terminate_backend only signals: wait until they are gone.
	waitFor(t, "the LISTEN connections gone", func() bool { return count("SELECT count(*) "+listeners) == 0 })
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
	waitFor(t, "B has the first revocation", func() bool { return b.revoked("before") })

	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*replica{"A": a, "B": b} {
		// Polled every 100ms, a replica that reads the store is never a
		// second stale; one that is has been failing for ten polls.
		waitFor(t, name+" goes stale", func() bool { return r.f.Staleness() > time.Second })
		if !r.revoked("before") || r.revoked("other") {
			t.Errorf("%s lost its in-memory view during the outage", name)
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
	t.Cleanup(func() {
		if err := other.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if _, err := other.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "during", ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	// …and through A once it can write again.
	waitFor(t, "A can write again", func() bool {
		_, err := a.store.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
			Kind: storage.KindToken, Issuer: "iss", Key: "after", ExpiresAt: time.Now().Add(time.Hour)}}})
		return err == nil
	})
	for name, r := range map[string]*replica{"A": a, "B": b} {
		waitFor(t, name+" caught up", func() bool { return r.revoked("during") && r.revoked("after") })
		// Fresh again: reading the store resets the staleness.
		waitFor(t, name+" fresh again", func() bool { return r.f.Staleness() < time.Second })
	}
}

// TestOneSweeperAtATime: while another replica sweeps (holds the sweep
// lock), a Sweep deletes nothing and returns at once.
func TestOneSweeperAtATime(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	// Expired by the database's clock, which sweeps go by, past the margin.
	if _, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "old", ExpiresAt: time.Now().Add(-time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	later := time.Now()
	other, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := other.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
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
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(t.Context(), later, time.Hour); err != nil || n != 1 {
		t.Errorf("Sweep after the other finished = %d, %v; want 1", n, err)
	}
}
