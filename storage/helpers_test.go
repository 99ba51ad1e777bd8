package storage_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// runFollower runs a follower of s into x with opts until the test ends,
// and returns it once its first snapshot has loaded.
func runFollower(t *testing.T, s storage.Store, x *storage.Index, opts storage.FollowerOptions) *storage.Follower {
	t.Helper()
	loaded := make(chan struct{})
	opts.OnLoad = func() { close(loaded) }
	f, err := storage.NewFollower(s, x, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { f.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-loaded
	return f
}

// failoverRig is a follower, caught up, on a store that can be swapped
// from a to b: a failover to a database with another feed.
type failoverRig struct {
	a, b *bolt.Store
	s    *swappableStore
	x    *storage.Index
	f    *storage.Follower
}

func newFailoverRig(t *testing.T) failoverRig {
	t.Helper()
	r := failoverRig{a: openBolt(t, "a.db"), b: openBolt(t, "b.db"), x: storage.NewIndex()}
	r.s = &swappableStore{cur: r.a}
	f, err := storage.NewFollower(r.s, r.x, storage.FollowerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.f = f
	return r
}
