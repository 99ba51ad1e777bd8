package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// hangingStore is a real embedded store behind a connection that can go
// half-open: while it hangs, Changes and Snapshot block until their context
// ends, as a read on a dead TCP connection does; a read already in flight
// keeps blocking after the connection is back.
type hangingStore struct {
	*bolt.Store
	mu      sync.Mutex
	hanging bool
	blocked int // reads blocked now
	// slowSnapshot, when set, is how long a snapshot takes: a load of
	// millions of entries.
	slowSnapshot time.Duration
}

func (s *hangingStore) hang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hanging = on
}

func (s *hangingStore) Blocked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked
}

func (s *hangingStore) block(ctx context.Context) error {
	s.mu.Lock()
	if !s.hanging {
		s.mu.Unlock()
		return nil
	}
	s.blocked++
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.blocked--
	s.mu.Unlock()
	return ctx.Err()
}

func (s *hangingStore) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	if err := s.block(ctx); err != nil {
		return nil, err
	}
	return s.Store.Changes(ctx, after, limit)
}

func (s *hangingStore) Snapshot(ctx context.Context, now time.Time, fn func(storage.Revocation) error) (storage.Position, error) {
	if err := s.block(ctx); err != nil {
		return storage.Position{}, err
	}
	select {
	case <-ctx.Done():
		return storage.Position{}, ctx.Err()
	case <-time.After(s.slowSnapshot):
	}
	return s.Store.Snapshot(ctx, now, fn)
}

func newHangingStore(t *testing.T) *hangingStore {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &hangingStore{Store: b}
}

func revokeIn(t *testing.T, s storage.Store, key string) storage.Position {
	t.Helper()
	res, err := s.Apply(context.Background(), storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "i", Key: key, ExpiresAt: time.Now().Add(time.Hour)}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Position
}

// TestFollowerReadsTimeOut: a catch-up or a reload on a store that never
// answers ends after ReadTimeout, even when its caller's context never does.
func TestFollowerReadsTimeOut(t *testing.T) {
	for name, tc := range map[string]struct {
		opt, want time.Duration
	}{
		"the option":  {5 * time.Second, 5 * time.Second},
		"the default": {0, 10 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newHangingStore(t)
				f, err := storage.NewFollower(s, storage.NewIndex(), storage.FollowerOptions{ReadTimeout: tc.opt})
				if err != nil {
					t.Fatal(err)
				}
				s.hang(true)
				start := time.Now()
				if err := f.CatchUp(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("CatchUp on a hanging store: %v, want a deadline error", err)
				}
				if got := time.Since(start); got != tc.want {
					t.Errorf("CatchUp gave up after %v, want the read timeout, %v", got, tc.want)
				}
			})
		})
	}
}

// TestWaitForHonoursItsContext: a write's WaitFor returns when its context
// ends, even while another catch-up holds the follower, stuck on the store.
func TestWaitForHonoursItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHangingStore(t)
		f, err := storage.NewFollower(s, storage.NewIndex(), storage.FollowerOptions{ReadTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		at := revokeIn(t, s, "a")
		s.hang(true)
		bg, stop := context.WithCancel(context.Background())
		held := make(chan struct{})
		go func() { f.CatchUp(bg); close(held) }() // holds the follower for up to an hour
		defer func() { stop(); <-held }()
		synctest.Wait()
		if s.Blocked() != 1 {
			t.Fatalf("%d reads blocked, want the catch-up's", s.Blocked())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if err := f.WaitFor(ctx, at); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitFor: %v, want its context's deadline", err)
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("WaitFor returned after %v, want its context's 1s", got)
		}
	})
}

// TestFollowerRecoversFromAHalfOpenConnection: the store's connection goes
// half-open (a read hangs and never returns on its own); once the database
// answers again, the replica catches up without a restart.
func TestFollowerRecoversFromAHalfOpenConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHangingStore(t)
		x := storage.NewIndex()
		f, err := storage.NewFollower(s, x, storage.FollowerOptions{Poll: time.Second, ReadTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { f.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		for !f.Loaded() {
			time.Sleep(10 * time.Millisecond)
		}
		s.hang(true)
		time.Sleep(1500 * time.Millisecond) // a poll's catch-up is now stuck on the dead connection
		synctest.Wait()
		if s.Blocked() == 0 {
			t.Fatal("no read is stuck on the half-open connection")
		}
		s.hang(false) // the database answers again, on new reads
		seq := revokeIn(t, s.Store, "after").Seq
		for deadline := time.Now().Add(time.Minute); x.Seq() < seq; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) { // a minute of the bubble's clock
				t.Fatalf("a minute after the database came back, the index is at %d, want %d (%d reads stuck)", x.Seq(), seq, s.Blocked())
			}
		}
		if st := f.Staleness(); st > 5*time.Second {
			t.Errorf("staleness %v after recovering", st)
		}
	})
}

// TestSnapshotLoadsOutlastTheReadTimeout: a snapshot load (every live
// entry) may take longer than one Changes read: it is bounded by
// SnapshotTimeout, not ReadTimeout, or a large index could never reload.
func TestSnapshotLoadsOutlastTheReadTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHangingStore(t)
		s.slowSnapshot = time.Minute // six read timeouts
		revokeIn(t, s.Store, "a")
		x := storage.NewIndex()
		f, err := storage.NewFollower(s, x, storage.FollowerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := f.CatchUp(context.Background()); err != nil { // a new index: it loads a snapshot
			t.Fatalf("a one-minute snapshot load: %v", err)
		}
		if got := time.Since(start); got != time.Minute || x.Len() != 1 {
			t.Errorf("loaded %d entries in %v, want 1 in the snapshot's minute", x.Len(), got)
		}
	})
}

// TestSnapshotTimeoutBoundsALoad: a snapshot load longer than
// SnapshotTimeout gives up at it.
func TestSnapshotTimeoutBoundsALoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHangingStore(t)
		s.slowSnapshot = time.Minute
		f, err := storage.NewFollower(s, storage.NewIndex(), storage.FollowerOptions{SnapshotTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := f.CatchUp(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a one-minute load with a 20s SnapshotTimeout: %v, want a deadline error", err)
		}
		if got := time.Since(start); got != 20*time.Second {
			t.Errorf("gave up after %v, want the snapshot timeout, 20s", got)
		}
	})
}

// gatedReads counts the feed's reads, and holds each until gate is closed.
type gatedReads struct {
	*bolt.Store
	gate  chan struct{}
	reads atomic.Int32
}

func (s *gatedReads) Changes(ctx context.Context, after storage.Position, limit int) ([]storage.Change, error) {
	s.reads.Add(1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Changes(ctx, after, limit)
}

// TestWritesShareARead: writes through one replica that wait for their
// changes while a read is under way (begun before they committed, so it
// may lack them) share the next read instead of making one each.
func TestWritesShareARead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		s := &gatedReads{Store: b, gate: make(chan struct{})}
		x := storage.NewIndex()
		if err := x.Load(t.Context(), b, time.Now()); err != nil {
			t.Fatal(err)
		}
		f, err := storage.NewFollower(s, x, storage.FollowerOptions{ReadTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error)
		first := revokeIn(t, b, "first")
		go func() { errs <- f.WaitFor(t.Context(), first) }()
		synctest.Wait() // its read is held
		const writes = 10
		for i := range writes {
			pos := revokeIn(t, b, fmt.Sprint("later-", i))
			go func() { errs <- f.WaitFor(t.Context(), pos) }()
		}
		synctest.Wait() // they wait for the follower
		close(s.gate)
		for range writes + 1 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if got := s.reads.Load(); got != 2 {
			t.Errorf("%d reads for %d writes, want 2: the first write's, and one for the %d made while it ran", got, writes+1, writes)
		}
	})
}
