package postgres_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

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
	var ws []storage.Write
	for i := range 3 {
		ws = append(ws, storage.Write{
			Revocations: []storage.Revocation{{Kind: storage.KindToken, Issuer: "iss", Key: fmt.Sprintf("jti-%d", i),
				ExpiresAt: now.Add(time.Hour), Source: "test"}},
			EventID: fmt.Sprintf("ev-%d", i), EventExpiresAt: now.Add(time.Hour),
		})
	}
	for i, a := range s.ApplyBatch(t.Context(), ws) {
		if !errors.Is(a.Err, storage.ErrUnavailable) {
			t.Errorf("write %d: %+v, %v; want ErrUnavailable", i, a.Result, a.Err)
		}
	}
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
	for i, a := range s.ApplyBatch(t.Context(), ws) {
		if a.Err != nil || a.Result.Duplicate || a.Result.Seq == 0 {
			t.Errorf("retry of write %d: %+v, %v; want it applied", i, a.Result, a.Err)
		}
	}
}
