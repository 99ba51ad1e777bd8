package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
)

// testFeedIdentity: the feed has an identity, stable across reopening,
// distinct from another store's; Changes refuses a position of another feed,
// or one past the feed's last change, with ErrFeedReset.
func testFeedIdentity(t *testing.T, e env) {
	s := e.open(t)
	res := apply(t, s, revs(e.tokenRev("iss", "a"), e.tokenRev("iss", "b")))
	at := pos(t, s, res.Seq)
	if at.Feed == "" {
		t.Fatal("Snapshot reports no feed identity")
	}
	if cs, err := s.Changes(t.Context(), at, 10); err != nil || len(cs) != 0 {
		t.Errorf("Changes at the head = %v, %v; want none", cs, err)
	}
	for name, p := range map[string]storage.Position{
		"another feed":       {Feed: at.Feed + "-other", Seq: res.Seq},
		"another feed, at 0": {Feed: at.Feed + "-other"},
		"past the last":      {Feed: at.Feed, Seq: res.Seq + 1},
		"no feed":            {Seq: res.Seq},
	} {
		if cs, err := s.Changes(t.Context(), p, 10); !errors.Is(err, storage.ErrFeedReset) {
			t.Errorf("Changes(%s) = %v, %v; want ErrFeedReset", name, cs, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if again := feed(t, e.open(t)); again != at.Feed {
		t.Errorf("after reopening, the feed is %q, want %q as before", again, at.Feed)
	}
	if other := feed(t, e.another(t)(t)); other == at.Feed {
		t.Errorf("another store has the same feed identity %q", other)
	}
}

// swapStore is a Store whose backend can be replaced, as a database is by
// its restored or promoted successor behind the same URL. The follower's
// calls go to the current backend.
type swapStore struct {
	storage.Store // for the methods a follower does not call
	mu            sync.Mutex
	to            storage.Store
}

func (s *swapStore) set(to storage.Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.to = to
}

func (s *swapStore) get() storage.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.to
}

func (s *swapStore) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	return s.get().Snapshot(ctx, now, fn)
}

func (s *swapStore) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	return s.get().Changes(ctx, after, limit)
}

func (s *swapStore) Notify() <-chan struct{} { return s.get().Notify() }

// testFollowerReloadsAfterReset: a follower whose store is replaced by
// another feed (a restore, a promoted standby) reloads a snapshot, and
// WaitFor for a write to the new feed does not return before it has, even
// though the index is already past that write's sequence number (in the
// old feed): every revocation of the new feed is in the index, and what
// only the old feed had is gone.
func testFollowerReloadsAfterReset(t *testing.T, e env) {
	old := e.open(t)
	for i := range 6 {
		apply(t, old, revs(e.tokenRev("iss", fmt.Sprintf("old-%d", i))))
	}
	s := &swapStore{Store: old, to: old}
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	if err := x.Load(t.Context(), s, e.base); err != nil {
		t.Fatal(err)
	}
	if err := f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}

	successor := e.another(t)(t)
	var fresh []storage.Revocation
	for i := range 3 {
		fresh = append(fresh, e.tokenRev("iss", fmt.Sprintf("new-%d", i)))
	}
	res := apply(t, successor, revs(fresh...))
	if res.Seq >= x.Seq() {
		t.Fatalf("the successor's feed is at %d, want behind the old one's %d", res.Seq, x.Seq())
	}
	s.set(successor)
	if err := f.WaitFor(t.Context(), res.Position); err != nil {
		t.Fatalf("WaitFor after the reset: %v", err)
	}
	for _, r := range fresh {
		if !x.Revoked(x.Keys("iss", r.Key, "", "", nil), e.base, e.base) {
			t.Errorf("after the reset, %s (written to the new feed) is not revoked", r.Key)
		}
	}
	if x.Revoked(x.Keys("iss", "old-0", "", "", nil), e.base, e.base) {
		t.Error("after the reset, the index still holds what only the old feed had")
	}
	if got, want := x.Position(), pos(t, successor, res.Seq); got != want {
		t.Errorf("index at %+v, want %+v", got, want)
	}
}

// testWritePosition: Apply and Unrevoke report the position of the write in
// the feed its transaction wrote to: the feed's identity, with the change
// that makes the write's entries visible there. A write that changed
// nothing, or a duplicate event, still reports the feed, and the change
// that last wrote the stored entries.
func testWritePosition(t *testing.T, e env) {
	s := e.open(t)
	id := feed(t, s)
	w := revs(e.tokenRev("iss", "a"), e.tokenRev("iss", "b"))
	w.EventID, w.EventExpiresAt = "event-1", e.base.Add(time.Hour)
	first := apply(t, s, w)
	if want := (storage.Position{Feed: id, Seq: first.Seq}); first.Position != want || first.Seq == 0 {
		t.Errorf("a write's position = %+v (seq %d), want %+v", first.Position, first.Seq, want)
	}
	apply(t, s, revs(e.tokenRev("iss", "later")))
	again := apply(t, s, revs(e.tokenRev("iss", "a")))
	if want := (storage.Position{Feed: id, Seq: first.Revocations[0].Seq}); again.Seq != 0 || again.Position != want {
		t.Errorf("a write that changed nothing: seq %d, position %+v; want 0 and %+v (the stored entries')", again.Seq, again.Position, want)
	}
	dup := apply(t, s, w)
	if want := (storage.Position{Feed: id, Seq: first.Seq}); !dup.Duplicate || dup.Position != want {
		t.Errorf("a duplicate: %+v, want a duplicate at %+v (the stored entries')", dup, want)
	}
	u, err := s.Unrevoke(t.Context(), first.Revocations[0].ID, storage.AllSources)
	if err != nil {
		t.Fatal(err)
	}
	if want := (storage.Position{Feed: id, Seq: u.Change.Seq}); u.Position != want {
		t.Errorf("an unrevoke's position = %+v, want %+v", u.Position, want)
	}
	if _, err := s.Unrevoke(t.Context(), first.Revocations[1].ID, storage.AllSources); err != nil {
		t.Fatal(err)
	}
	gone := apply(t, s, w)
	if want := (storage.Position{Feed: id}); !gone.Duplicate || gone.Position != want {
		t.Errorf("a duplicate whose entries are unrevoked: %+v, want a duplicate at %+v", gone, want)
	}
	other := e.another(t)(t)
	if res := apply(t, other, revs(e.tokenRev("iss", "a"))); res.Position.Feed == id || res.Position.Feed != feed(t, other) {
		t.Errorf("a write to another store reports feed %q, want that store's %q (not %q)", res.Position.Feed, feed(t, other), id)
	}
}

// testWaitForRefusesReplacedFeed: a write committed to a feed that is
// replaced before the follower applies it (the old primary fails over with
// it unreplicated, and the promoted standby moves past its sequence) is
// never acknowledged: WaitFor fails with ErrWriteFeedReplaced, however far
// the new feed has gone.
func testWaitForRefusesReplacedFeed(t *testing.T, e env) {
	old := e.open(t)
	s := &swapStore{Store: old, to: old}
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	if err := f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	res := apply(t, old, revs(e.tokenRev("iss", "victim")))
	successor := e.another(t)(t)
	for i := range 3 {
		apply(t, successor, revs(e.tokenRev("iss", fmt.Sprintf("other-%d", i))))
	}
	s.set(successor)
	err := f.WaitFor(t.Context(), res.Position)
	if !errors.Is(err, storage.ErrWriteFeedReplaced) || !errors.Is(err, storage.ErrFeedReset) {
		t.Fatalf("WaitFor for a write of the replaced feed: %v, want ErrWriteFeedReplaced", err)
	}
	if x.Position().Feed != feed(t, successor) || x.Seq() < res.Seq {
		t.Fatalf("index at %+v, want on the successor's feed past %d: the test shows nothing", x.Position(), res.Seq)
	}
	if x.Revoked(x.Keys("iss", "victim", "", "", nil), e.base, e.base) {
		t.Error("the victim is revoked: the test shows nothing")
	}
	// A write to the new feed is acknowledged.
	now := apply(t, s.get(), revs(e.tokenRev("iss", "victim")))
	if err := f.WaitFor(t.Context(), now.Position); err != nil {
		t.Fatalf("WaitFor for the retried write: %v", err)
	}
	if !x.Revoked(x.Keys("iss", "victim", "", "", nil), e.base, e.base) {
		t.Error("the retried revocation is not in the index")
	}
}
