package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// pushingStore is a real store whose notifications carry the changes (a
// Pusher, as PostgreSQL's are): the test pushes them and wakes the
// follower; its reads of the feed and its snapshots are counted, and
// snapshots can be made to fail.
type pushingStore struct {
	storage.Store
	notify    chan struct{}
	reads     atomic.Int64
	snapshots atomic.Int64
	failSnap  atomic.Bool

	mu        sync.Mutex
	feed      string
	changes   []storage.Change
	movedBack bool
}

func (s *pushingStore) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	s.snapshots.Add(1)
	if s.failSnap.Load() {
		return storage.Position{}, errors.New("snapshot: connection refused (server restarting)")
	}
	return s.Store.Snapshot(ctx, now, fn)
}

func (s *pushingStore) Notify() <-chan struct{} { return s.notify }

func (s *pushingStore) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	s.reads.Add(1)
	return s.Store.Changes(ctx, after, limit)
}

func (s *pushingStore) Pushed() storage.Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := storage.Push{Feed: s.feed, Changes: s.changes, Complete: true, MovedBack: s.movedBack}
	s.changes, s.movedBack = nil, false
	return p
}

func (s *pushingStore) ForgetPushed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes = nil
}

func (s *pushingStore) push(feed string, changes []storage.Change) {
	s.mu.Lock()
	s.feed, s.changes = feed, append(s.changes, changes...)
	s.mu.Unlock()
	s.notify <- struct{}{}
}

// TestPushedThroughTheWriteStack: a follower on the store as tokengate
// wires it (instrumented, behind a group commit) applies the changes its
// notifications carry without reading the feed. The group commit hid the
// store's Pushed: every notification cost a read.
func TestPushedThroughTheWriteStack(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := &pushingStore{Store: b, notify: make(chan struct{})}
	gc, err := storage.NewGroupCommit(p, storage.GroupCommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	s, err := storage.Instrument(gc, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := storage.NewIndex()
	runFollower(t, s, x, storage.FollowerOptions{Poll: time.Hour})

	before := x.Position()
	now := time.Now()
	if _, err := b.Apply(t.Context(), tokenWrite(now, "pushed", "")); err != nil {
		t.Fatal(err)
	}
	changes, err := b.Changes(t.Context(), before, 10)
	if err != nil || len(changes) != 1 {
		t.Fatalf("the write's change: %v, %v", changes, err)
	}
	p.push(before.Feed, changes)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ok := x.Entry(storage.KindToken, "iss", "pushed", "", now); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pushed change never reached the index")
		}
		time.Sleep(time.Millisecond)
	}
	if n := p.reads.Load(); n != 0 {
		t.Errorf("the follower read the feed %d times, want none: the notification carried the change", n)
	}
}
