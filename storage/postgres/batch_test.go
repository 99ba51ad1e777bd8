package postgres_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestBatchLostConnectionFailsEveryWrite: a batch whose connection is lost
// before its commit fails every write with ErrUnavailable (a 503, which
// the senders retry), commits none, and is not retried write by write: the
// database is the problem, not a write.
func TestBatchLostConnectionFailsEveryWrite(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	admin := pgtest.Connect(t, url)
	calls := 0
	postgres.SetBeforeCommit(s, func(storage.Result) error {
		calls++
		if calls > 1 {
			return nil
		}
		// The batch's own backend is the one idle inside a transaction.
		_, err := admin.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle in transaction'`)
		return err
	})
	now := time.Now()
	ws := eventWrites(3, now)
	wantUnavailable(t, s.ApplyBatch(t.Context(), ws))
	if calls != 3 {
		t.Errorf("the batch reached its commit %d times for 3 writes, want once (3 calls): no retry write by write", calls)
	}
	postgres.SetBeforeCommit(s, nil)
	pos, err := s.Snapshot(t.Context(), now, func(r storage.Revocation) error {
		t.Errorf("the failed batch left %s %s", r.Kind, r.Key)
		return nil
	})
	if err != nil || pos.Seq != 0 {
		t.Errorf("after the failed batch the feed is at %d (%v), want 0", pos.Seq, err)
	}
	// The senders retry: applied now, none a duplicate.
	wantApplied(t, "retry of write", s.ApplyBatch(t.Context(), ws))
}

// TestBatchFailingWithItsCommitCommitsNothing: the COMMIT rides with a
// batch's last statements; when one of them fails (here a trigger on the
// feed refuses one write's change), the COMMIT is skipped, the transaction
// rolled back, and each write applied alone: the faulty one fails and
// leaves nothing (not even its event id), the others commit, and the feed
// has no hole.
func TestBatchFailingWithItsCommitCommitsNothing(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	admin := pgtest.Connect(t, url)
	if _, err := admin.Exec(t.Context(), `
		CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.revocation->>'key' = 'poison' THEN RAISE EXCEPTION 'poison'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT ON tokengate_changes FOR EACH ROW EXECUTE FUNCTION refuse_poison()`); err != nil {
		t.Fatal(err)
	}
	ws := eventWrites(3, time.Now())
	for i, key := range []string{"a", "poison", "b"} {
		ws[i].Revocations[0].Key = key
	}
	out := s.ApplyBatch(t.Context(), ws)
	if out[1].Err == nil {
		t.Errorf("the refused write: %+v, want an error", out[1].Result)
	}
	var seqs []uint64
	for _, i := range []int{0, 2} {
		if out[i].Err != nil || out[i].Result.Seq == 0 {
			t.Fatalf("write %d: %+v, %v; want it applied", i, out[i].Result, out[i].Err)
		}
		seqs = append(seqs, out[i].Result.Seq)
	}
	changes, err := s.Changes(t.Context(), storage.Position{Feed: out[0].Result.Position.Feed}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, c := range changes {
		if c.Seq != uint64(i+1) {
			t.Errorf("change %d has number %d: the feed has a hole", i, c.Seq)
		}
		got = append(got, c.Revocation.Key)
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("the feed holds %q, want [a b]", got)
	}
	// Once the trigger is gone, the refused write applies: its event id
	// was not kept.
	if _, err := admin.Exec(t.Context(), `DROP TRIGGER refuse_poison ON tokengate_changes`); err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(t.Context(), ws[1])
	if err != nil || res.Duplicate || res.Seq != 3 {
		t.Errorf("the refused write again: %+v, %v; want it applied as change 3", res, err)
	}
}

// countAttempts makes the database count the transactions that try to
// record event ids (each batch's first statement), in a sequence: unlike
// the transactions, nextval is not rolled back.
func countAttempts(t *testing.T, admin *pgx.Conn) func() int64 {
	t.Helper()
	if _, err := admin.Exec(t.Context(), `
		CREATE SEQUENCE attempts;
		CREATE FUNCTION count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM nextval('attempts'); RETURN NULL; END $$;
		CREATE TRIGGER count_attempt BEFORE INSERT ON tokengate_events FOR EACH STATEMENT EXECUTE FUNCTION count_attempt()`); err != nil {
		t.Fatal(err)
	}
	return func() int64 {
		var n int64
		if err := admin.QueryRow(t.Context(), `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM attempts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// eventWrites are n writes of one token each, each for an event of its own.
func eventWrites(n int, now time.Time) []storage.Write {
	var ws []storage.Write
	for i := range n {
		ws = append(ws, storage.Write{
			Revocations: []storage.Revocation{{Kind: storage.KindToken, Issuer: "iss", Key: fmt.Sprintf("jti-%d", i),
				ExpiresAt: now.Add(time.Hour), Source: "test"}},
			EventID: fmt.Sprintf("ev-%d", i), EventExpiresAt: now.Add(time.Hour),
		})
	}
	return ws
}

// TestBatchTimeoutFailsEveryWriteAtOnce: a batch that the database gives up
// for itself, not for one of its writes (here its lock_timeout, the feed's
// row held elsewhere), answers every write ErrUnavailable (a 503 the
// senders retry) at once: it is not retried write by write, which would
// wait out the timeout again for each of them.
func TestBatchTimeoutFailsEveryWriteAtOnce(t *testing.T) {
	url := pgtest.URL(t)
	admin := pgtest.Connect(t, url)
	if _, err := admin.Exec(t.Context(), `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET lock_timeout = ''200ms''', current_database()); END $$`); err != nil {
		t.Fatal(err)
	}
	s := open(t, url)
	attempts := countAttempts(t, admin)
	holder := pgtest.Connect(t, url)
	tx, err := holder.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT * FROM tokengate_feed FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ws := eventWrites(3, time.Now())
	wantUnavailable(t, s.ApplyBatch(t.Context(), ws))
	if n := attempts(); n != 1 {
		t.Errorf("%d transactions for a batch the database timed out, want 1: retried write by write", n)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantApplied(t, "retry of write", s.ApplyBatch(t.Context(), ws))
}

// TestBatchDeadlockRetriedWhole: a batch that the database aborts to break
// a deadlock (or a serialization failure) is retried whole: every write
// commits, in one more transaction, not one a write.
func TestBatchDeadlockRetriedWhole(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	admin := pgtest.Connect(t, url)
	attempts := countAttempts(t, admin)
	if _, err := admin.Exec(t.Context(), `
		CREATE SEQUENCE aborts;
		CREATE FUNCTION abort_once() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('aborts') = 1 THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER abort_once BEFORE INSERT ON tokengate_changes FOR EACH STATEMENT EXECUTE FUNCTION abort_once()`); err != nil {
		t.Fatal(err)
	}
	wantApplied(t, "write", s.ApplyBatch(t.Context(), eventWrites(3, time.Now())))
	if n := attempts(); n != 2 {
		t.Errorf("%d transactions for a batch aborted once by a deadlock, want 2: the batch again, whole", n)
	}
}

// TestBatchRefusedForTheServersStateFailsAtOnce: errors that say nothing
// of the writes, only of the server, fail the whole batch with
// ErrUnavailable at once, not write by write: a full NOTIFY queue, which
// PostgreSQL reports at COMMIT with a "program limit" code, and a server
// that takes no writes (a demoted primary, a standby behind a multi-host
// URL).
func TestBatchRefusedForTheServersStateFailsAtOnce(t *testing.T) {
	t.Run("notify queue full at commit", func(t *testing.T) {
		url := pgtest.URL(t)
		s := open(t, url)
		admin := pgtest.Connect(t, url)
		attempts := countAttempts(t, admin)
		if _, err := admin.Exec(t.Context(), `
			CREATE FUNCTION queue_full() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000'; END $$;
			CREATE CONSTRAINT TRIGGER queue_full AFTER INSERT ON tokengate_changes
				DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION queue_full()`); err != nil {
			t.Fatal(err)
		}
		wantUnavailable(t, s.ApplyBatch(t.Context(), eventWrites(3, time.Now())))
		if n := attempts(); n != 1 {
			t.Errorf("%d transactions for a batch refused at its commit, want 1: retried write by write", n)
		}
	})
	t.Run("read-only server", func(t *testing.T) {
		url := pgtest.URL(t)
		s := open(t, url)
		admin := pgtest.Connect(t, url)
		if _, err := admin.Exec(t.Context(), `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$`); err != nil {
			t.Fatal(err)
		}
		s.Close()
		ro, err := postgres.Open(url, postgres.Options{}) // new connections, read-only; migrated above
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ro.Close() })
		wantUnavailable(t, ro.ApplyBatch(t.Context(), eventWrites(3, time.Now())))
	})
}

// wantApplied fails the test unless every write of out was applied, none
// as a duplicate.
func wantApplied(t *testing.T, what string, out []storage.Applied) {
	t.Helper()
	for i, a := range out {
		if a.Err != nil || a.Result.Duplicate || a.Result.Seq == 0 {
			t.Errorf("%s %d: %+v, %v; want it applied", what, i, a.Result, a.Err)
		}
	}
}

// wantUnavailable fails the test unless every write of out failed with
// ErrUnavailable.
func wantUnavailable(t *testing.T, out []storage.Applied) {
	t.Helper()
	for i, a := range out {
		if !errors.Is(a.Err, storage.ErrUnavailable) {
			t.Errorf("write %d: %+v, %v; want ErrUnavailable", i, a.Result, a.Err)
		}
	}
}
