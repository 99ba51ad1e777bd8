package storage_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// TestMovedBackResetRetried: a feed that moved back owes the replica a
// reload; when the reload fails (the database restarting), it is owed
// still, and the next catch-up (a notification or a poll) tries again,
// rather than skipping reused numbers as applied for good.
func TestMovedBackResetRetried(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := &pushingStore{Store: b, notify: make(chan struct{})}
	x := storage.NewIndex()
	runFollower(t, s, x, storage.FollowerOptions{Poll: 20 * time.Millisecond})
	feed := x.Position().Feed
	base := s.snapshots.Load()

	// A notification at or below one seen: moved back. The reload fails once.
	s.failSnap.Store(true)
	s.mu.Lock()
	s.feed, s.movedBack = feed, true
	s.mu.Unlock()
	s.notify <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for s.snapshots.Load() == base && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	s.failSnap.Store(false)
	// The store is back: later notifications and polls.
	for range 3 {
		s.notify <- struct{}{}
	}
	// Polls come every 20ms: wait for a second attempt, up to a deadline.
	deadline = time.Now().Add(10 * time.Second)
	for s.snapshots.Load()-base < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := s.snapshots.Load() - base; n < 2 {
		t.Errorf("snapshot attempts after the move-back: %d; the failed reset was never retried: the index keeps the old history's entries under reused numbers", n)
	}
}
