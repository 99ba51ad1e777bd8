package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// swappableStore is whichever real store is current: swap replaces it, as a
// failover replaces the primary behind one address.
type swappableStore struct {
	mu  sync.Mutex
	cur storage.Store
}

func (s *swappableStore) store() storage.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *swappableStore) swap(to storage.Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = to
}

func (s *swappableStore) Apply(ctx context.Context, w storage.Write) (storage.Result, error) {
	return s.store().Apply(ctx, w)
}

func (s *swappableStore) ApplyBatch(ctx context.Context, ws []storage.Write) []storage.Applied {
	return s.store().ApplyBatch(ctx, ws)
}

func (s *swappableStore) Unrevoke(ctx context.Context, id int64, source string) (storage.Unrevoked, error) {
	return s.store().Unrevoke(ctx, id, source)
}

func (s *swappableStore) Get(ctx context.Context, id int64) (storage.Revocation, error) {
	return s.store().Get(ctx, id)
}

func (s *swappableStore) List(ctx context.Context, opts storage.ListOptions) ([]storage.Revocation, error) {
	return s.store().List(ctx, opts)
}

func (s *swappableStore) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	return s.store().Snapshot(ctx, now, fn)
}

func (s *swappableStore) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	return s.store().Changes(ctx, after, limit)
}

func (s *swappableStore) Notify() <-chan struct{} { return s.store().Notify() }

func (s *swappableStore) Sweep(ctx context.Context, now time.Time, keep time.Duration) (int, error) {
	return s.store().Sweep(ctx, now, keep)
}

func (s *swappableStore) Close() error { return nil }

func openBolt(t *testing.T, name string) *bolt.Store {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), name), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestWaitForRefusesAWriteOfAReplacedFeed is the failover a security review
// found: the old primary commits a revocation at seq N and fails over
// before this replica reads it; the promoted standby never had it, and
// others have written to it past N. This replica, reloading onto the new
// feed, finds its seq ≥ N; it must not acknowledge the write, which is in
// neither the database nor its index.
func TestWaitForRefusesAWriteOfAReplacedFeed(t *testing.T) {
	r := newFailoverRig(t)
	b, s, x, f := r.b, r.s, r.x, r.f
	res, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "i", Key: "victim", ExpiresAt: time.Now().Add(time.Hour)}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"other-1", "other-2", "other-3"} {
		revokeIn(t, b, key) // the promoted standby moves past the write's seq
	}
	s.swap(b)
	err = f.WaitFor(t.Context(), res.Position)
	if err == nil {
		t.Fatal("WaitFor acknowledged a write its replica never applied, on a feed that never had it")
	}
	if !errors.Is(err, storage.ErrWriteFeedReplaced) || !errors.Is(err, storage.ErrFeedReset) {
		t.Errorf("WaitFor: %v, want ErrWriteFeedReplaced, an ErrFeedReset", err)
	}
	if x.Revoked(x.Keys("i", "victim", "", "", nil), time.Now().Add(-time.Minute), time.Now()) {
		t.Error("the victim is in the index: the test set-up is wrong")
	}
}
