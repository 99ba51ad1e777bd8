package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
)

func put(seq uint64, r storage.Revocation) storage.Change {
	return storage.Change{Seq: seq, Op: storage.OpPut, Revocation: r}
}

// bases are the clocks the index tests run at: far in the past and far in
// the future of the real one, so that none of them depends on the date.
func bases() map[string]time.Time {
	now := time.Now()
	return map[string]time.Time{"Past": now.Add(-400 * 24 * time.Hour), "Future": now.Add(400 * 24 * time.Hour)}
}

func TestIndexAppliesInOrderOnly(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testIndexAppliesInOrderOnly(t, base) })
	}
}

func testIndexAppliesInOrderOnly(t *testing.T, now time.Time) {
	x := storage.NewIndex()
	exp := now.Add(time.Hour)
	a := storage.Revocation{Kind: storage.KindToken, Issuer: "i", Key: "a", ExpiresAt: exp}
	b := storage.Revocation{Kind: storage.KindSession, Issuer: "i", Key: "b", ExpiresAt: exp}
	if n, err := x.Apply([]storage.Change{put(1, a), put(2, b)}); n != 2 || err != nil {
		t.Fatalf("Apply 1,2 = %d, %v", n, err)
	}
	if n, err := x.Apply([]storage.Change{put(2, b), put(4, a)}); err == nil || n != 0 || x.Seq() != 2 {
		t.Errorf("Apply over a gap = %d, %v at %d; want an error and nothing applied", n, err, x.Seq())
	}
	if n, err := x.Apply([]storage.Change{{Seq: 3, Op: storage.OpDelete, Revocation: a}}); n != 1 || err != nil {
		t.Fatalf("delete: %d, %v", n, err)
	}
	if got := x.Counts(); got[storage.KindToken] != 0 || got[storage.KindSession] != 1 {
		t.Errorf("counts = %v, want 0 tokens and 1 session", got)
	}
	k := x.Keys("i", "a", "b", "", nil)
	if !x.Revoked(k, now, now) {
		t.Error("the session is not revoked")
	}
	if x.Revoked(k, now, exp.Add(time.Second)) {
		t.Error("an expired entry still revokes")
	}
	if n := x.Expire(exp.Add(time.Second)); n != 1 || x.Len() != 0 {
		t.Errorf("Expire dropped %d, %d left; want 1, 0", n, x.Len())
	}
}

func TestMergeNeverMovesBack(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testMergeNeverMovesBack(t, base) })
	}
}

func testMergeNeverMovesBack(t *testing.T, t0 time.Time) {
	stored := storage.Revocation{Kind: storage.KindSubject, RevokedBefore: t0, ExpiresAt: t0.Add(time.Hour), Source: "a"}
	if m, changed := storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(-time.Second), ExpiresAt: t0, Source: "b"}); changed || m != stored {
		t.Errorf("an earlier write changed the entry: %+v", m)
	}
	m, changed := storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(time.Second), ExpiresAt: t0, Source: "c"})
	if !changed || !m.RevokedBefore.Equal(t0.Add(time.Second)) || !m.ExpiresAt.Equal(t0.Add(time.Hour)) || m.Source != "c" {
		t.Errorf("a later cutoff: %+v, changed %v", m, changed)
	}
}

// gapStore serves a change feed with a gap and cannot give a snapshot: the
// follower can neither apply nor reload.
type gapStore struct{ storage.Store }

func (gapStore) Changes(context.Context, storage.Position, int) ([]storage.Change, error) {
	return []storage.Change{{Seq: 5, Op: storage.OpPut}}, nil
}

func (gapStore) Snapshot(context.Context, time.Time, func(storage.Revocation) error) (storage.Position, error) {
	return storage.Position{}, errors.New("snapshot timed out")
}

// TestFollowerStuckOnAGapGoesStale: reading the feed is not enough to count
// as fresh; a follower that cannot apply what it read must go stale.
func TestFollowerStuckOnAGapGoesStale(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testFollowerStuckOnAGapGoesStale(t, base) })
	}
}

func testFollowerStuckOnAGapGoesStale(t *testing.T, now time.Time) {
	clock := now
	f, err := storage.NewFollower(gapStore{}, storage.NewIndex(), storage.FollowerOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(time.Minute)
	if err := f.CatchUp(t.Context()); err == nil {
		t.Fatal("CatchUp over a gap without a snapshot succeeded")
	}
	if s := f.Staleness(); s < time.Minute {
		t.Errorf("staleness %v after a failed catch-up, want it to keep growing", s)
	}
}
