package intake

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tokengate/tokengate/storage"
)

// sharedWaits makes concurrent writes share the follower's reads of the
// feed. Only a read that began after a write committed shows whether this
// replica has it; one such read shows it for every write committed before
// it began. So the writes that arrive while a wait is under way queue, and
// the next wait serves them all: one WaitFor per feed, up to the highest
// position queued. A burst of writes committed together (a group commit)
// costs one read of the feed, not one each, one after another.
type sharedWaits struct {
	f Follower

	mu      sync.Mutex
	queue   []*waiter
	running bool // a goroutine is taking waits from the queue
}

// waiter is one WaitFor queued for the next shared wait.
type waiter struct {
	ctx  context.Context
	pos  storage.Position
	done chan error // buffered: the shared wait never waits for the caller
}

// WaitFor queues pos for the next shared wait and returns its answer for
// pos's feed, or ctx's error when ctx ends first.
func (s *sharedWaits) WaitFor(ctx context.Context, pos storage.Position) error {
	w := &waiter{ctx: ctx, pos: pos, done: make(chan error, 1)}
	s.mu.Lock()
	s.queue = append(s.queue, w)
	if !s.running {
		s.running = true
		go s.run()
	}
	s.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for the follower: %w", ctx.Err())
	}
}

// run makes shared waits until the queue is empty.
func (s *sharedWaits) run() {
	for {
		s.mu.Lock()
		ws := s.queue
		s.queue = nil
		if len(ws) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.wait(ws)
	}
}

// wait waits once for each feed of ws, up to its highest position, under a
// context cancelled once every caller has gone, and answers each.
func (s *sharedWaits) wait(ws []*waiter) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waiting atomic.Int64
	waiting.Store(int64(len(ws)))
	byFeed := map[string]storage.Position{}
	var feeds []string // in the order first queued
	for _, w := range ws {
		stop := context.AfterFunc(w.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
		p, ok := byFeed[w.pos.Feed]
		if !ok {
			feeds = append(feeds, w.pos.Feed)
		}
		byFeed[w.pos.Feed] = storage.Position{Feed: w.pos.Feed, Seq: max(p.Seq, w.pos.Seq)}
	}
	for _, feed := range feeds {
		err := s.f.WaitFor(ctx, byFeed[feed])
		for _, w := range ws {
			if w.pos.Feed == feed {
				w.done <- err
			}
		}
	}
}
