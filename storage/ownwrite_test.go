package storage_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// ownWriteRig is a follower on a pushing store over bolt, loaded, whose
// feed reads are counted. commit writes through the store below, as a
// write through this replica would, and returns the result with the
// changes its transaction committed (what PostgreSQL reports in
// Result.Committed), read from the store below without counting.
type ownWriteRig struct {
	b *bolt.Store
	s *pushingStore
	x *storage.Index
	f *storage.Follower
}

func newOwnWriteRig(t *testing.T) *ownWriteRig {
	t.Helper()
	b := openBolt(t, "t.db")
	s := &pushingStore{Store: b, notify: make(chan struct{})}
	x := storage.NewIndex()
	f := runFollower(t, s, x, storage.FollowerOptions{Poll: time.Hour})
	return &ownWriteRig{b: b, s: s, x: x, f: f}
}

func (r *ownWriteRig) commit(t *testing.T, w storage.Write) storage.Result {
	t.Helper()
	res, err := r.b.Apply(t.Context(), w)
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq != 0 {
		first := res.Revocations[0].Seq
		for _, rv := range res.Revocations {
			first = min(first, rv.Seq)
		}
		cs, err := r.b.Changes(t.Context(), storage.Position{Feed: res.Position.Feed, Seq: first - 1}, 100)
		if err != nil {
			t.Fatal(err)
		}
		res.Committed = cs
	}
	return res
}

func (r *ownWriteRig) has(key string, now time.Time) bool {
	_, _, ok := r.x.Entry(storage.KindToken, "iss", key, "", now)
	return ok
}

// TestWaitForWriteAppliesItsOwnChanges: a write through this replica is
// in its index when WaitForWrite returns, without a read of the feed,
// when its changes continue the index; and it is read back, as WaitFor
// does, whenever the index cannot tell that they are the changes it is
// missing.
func TestWaitForWriteAppliesItsOwnChanges(t *testing.T) {
	now := time.Now()

	t.Run("continues the index: applied, no read", func(t *testing.T) {
		r := newOwnWriteRig(t)
		for i, key := range []string{"a", "b", "c"} {
			mark := r.f.Mark()
			res := r.commit(t, tokenWrite(now, key, ""))
			if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			if !r.has(key, now) {
				t.Fatalf("write %d is not in the index after WaitForWrite", i)
			}
		}
		if n := r.s.reads.Load(); n != 0 {
			t.Errorf("the feed was read %d times, want none: each write's own changes continued the index", n)
		}
	})

	t.Run("pushed first: no read", func(t *testing.T) {
		r := newOwnWriteRig(t)
		mark := r.f.Mark()
		res := r.commit(t, tokenWrite(now, "a", ""))
		r.s.push(res.Position.Feed, res.Committed) // the transaction's notification wins the race
		deadline := time.Now().Add(10 * time.Second)
		for r.x.Position().Seq < res.Seq {
			if time.Now().After(deadline) {
				t.Fatal("the pushed change never reached the index")
			}
			time.Sleep(time.Millisecond)
		}
		if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
			t.Fatal(err)
		}
		if n := r.s.reads.Load(); n != 0 {
			t.Errorf("the feed was read %d times, want none: the notification applied the write after the mark", n)
		}
	})

	t.Run("another write between: read", func(t *testing.T) {
		r := newOwnWriteRig(t)
		mark := r.f.Mark()
		r.commit(t, tokenWrite(now, "other", "")) // another replica's, not applied here
		res := r.commit(t, tokenWrite(now, "a", ""))
		if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
			t.Fatal(err)
		}
		if !r.has("a", now) || !r.has("other", now) {
			t.Fatal("the index lacks a write after WaitForWrite")
		}
		if n := r.s.reads.Load(); n == 0 {
			t.Error("no read: the write's changes were applied over a gap")
		}
	})

	t.Run("index past the changes at the mark: read", func(t *testing.T) {
		// Numbers the index had applied before the write was sent, taken
		// again by the write: the feed moved back. Only a read can tell.
		r := newOwnWriteRig(t)
		res := r.commit(t, tokenWrite(now, "a", ""))
		if err := r.f.CatchUp(t.Context()); err != nil {
			t.Fatal(err)
		}
		base := r.s.reads.Load()
		mark := r.f.Mark()
		if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
			t.Fatal(err)
		}
		if n := r.s.reads.Load() - base; n == 0 {
			t.Error("no read: an index already past the write's numbers when it was sent took them as the write's")
		}
	})

	t.Run("position outside its changes: read", func(t *testing.T) {
		r := newOwnWriteRig(t)
		first := r.commit(t, tokenWrite(now, "a", ""))
		if err := r.f.CatchUp(t.Context()); err != nil {
			t.Fatal(err)
		}
		// A write that moved nothing, batched with one that did: its
		// position is older than the transaction's changes.
		mark := r.f.Mark()
		other := r.commit(t, tokenWrite(now, "b", ""))
		res := first
		res.Committed = other.Committed
		base := r.s.reads.Load()
		if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
			t.Fatal(err)
		}
		if n := r.s.reads.Load() - base; n == 0 {
			t.Error("no read: a position outside the transaction's changes was taken as applied by them")
		}
	})
}

// TestWaitForWriteAfterAReloadReads: a reload between the mark and the
// write's answer (a feed that moved back, say) leaves the index on a
// history the mark knows nothing of: the write is read back, not applied
// from what its transaction reported.
func TestWaitForWriteAfterAReloadReads(t *testing.T) {
	now := time.Now()
	r := newOwnWriteRig(t)
	mark := r.f.Mark()
	snaps := r.s.snapshots.Load()
	r.s.mu.Lock()
	r.s.feed, r.s.movedBack = r.x.Position().Feed, true
	r.s.mu.Unlock()
	r.s.notify <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for r.s.snapshots.Load() == snaps {
		if time.Now().After(deadline) {
			t.Fatal("the move-back never made the follower reload")
		}
		time.Sleep(time.Millisecond)
	}
	// The reload is done once the follower takes its turn again.
	if err := r.f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := r.s.reads.Load()
	res := r.commit(t, tokenWrite(now, "a", ""))
	if err := r.f.WaitForWrite(t.Context(), mark, res); err != nil {
		t.Fatal(err)
	}
	if n := r.s.reads.Load() - base; n == 0 {
		t.Error("no read: a write was applied from its transaction's report across a reload since its mark")
	}
}

// TestWaitForWriteRefusesAWriteOfAReplacedFeed: once the index has moved
// to a new feed (a failover it noticed between the write's commit and its
// answer), the write's reported changes are not applied: it is refused,
// as WaitFor refuses it, for the sender to retry on the new feed.
func TestWaitForWriteRefusesAWriteOfAReplacedFeed(t *testing.T) {
	r := newFailoverRig(t)
	a, b, s, f := r.a, r.b, r.s, r.f
	mark := f.Mark()
	res, err := s.Apply(t.Context(), tokenWrite(time.Now(), "victim", ""))
	if err != nil {
		t.Fatal(err)
	}
	// What PostgreSQL reports: the transaction's changes.
	if res.Committed, err = a.Changes(t.Context(), storage.Position{Feed: res.Position.Feed, Seq: res.Seq - 1}, 10); err != nil {
		t.Fatal(err)
	}
	revokeIn(t, b, "other")
	s.swap(b)
	if err := f.CatchUp(t.Context()); err != nil { // the index reloads onto b's feed
		t.Fatal(err)
	}
	if err := f.WaitForWrite(t.Context(), mark, res); !errors.Is(err, storage.ErrWriteFeedReplaced) {
		t.Errorf("WaitForWrite for a write of the replaced feed: %v, want ErrWriteFeedReplaced", err)
	}
}
