package storage_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokengate/tokengate/storage"
)

// stuckStore's batches never end on their own: a database that stopped
// answering on a connection that stays open (a half-open TCP connection,
// a lock nobody releases). They end with their context.
type stuckStore struct {
	storage.Store
	batches int
}

func (s *stuckStore) ApplyBatch(ctx context.Context, ws []storage.Write) []storage.Applied {
	s.batches++
	<-ctx.Done()
	out := make([]storage.Applied, len(ws))
	for i := range out {
		out[i].Err = ctx.Err()
	}
	return out
}

// TestGroupCommitBatchHasADeadline: a batch that does not end is given up
// after the write timeout, whatever its callers' contexts (a sender that
// waits forever), and each caller gets ErrUnavailable (a 503 the sender
// retries), not a batch that holds up every later write of the replica.
func TestGroupCommitBatchHasADeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &stuckStore{}
		gc, err := storage.NewGroupCommit(s, storage.GroupCommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = gc.Apply(context.Background(), tokenWrite(start, "stuck", ""))
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("a batch that never ends: %v, want ErrUnavailable", err)
		}
		if took, want := time.Since(start), storage.DefaultWriteTimeout; took != want {
			t.Errorf("given up after %s, want the default write timeout, %s", took, want)
		}
		// The next write is not held behind it.
		_, err = gc.Apply(context.Background(), tokenWrite(start, "next", ""))
		if !errors.Is(err, storage.ErrUnavailable) || s.batches != 2 {
			t.Errorf("the next write: %v after %d batches, want ErrUnavailable from its own", err, s.batches)
		}
	})
}
