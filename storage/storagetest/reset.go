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
	if err := f.WaitFor(t.Context(), res.Seq); err != nil {
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
