package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultWriteBatchMax is GroupCommitOptions.MaxBatch's default.
const DefaultWriteBatchMax = 64

// DefaultWriteTimeout is GroupCommitOptions.Timeout's default.
const DefaultWriteTimeout = 10 * time.Second

// GroupCommitOptions configure GroupCommit.
type GroupCommitOptions struct {
	// MaxBatch bounds how many writes one transaction carries (default
	// DefaultWriteBatchMax). 1 commits every write on its own. A batch
	// never waits to fill: it takes what queued while the one before was
	// committing, so that a lone write pays no wait, and writes that keep
	// coming make batches as large as the commit is long.
	MaxBatch int
	// Timeout bounds one batch, its transaction included (default
	// DefaultWriteTimeout): a batch that has not ended by then (a database
	// that stopped answering on a connection that stays open, a lock held
	// elsewhere) is given up, and each of its callers gets ErrUnavailable,
	// whatever their own contexts, so that it does not hold up the
	// replica's later writes.
	Timeout time.Duration
	// Registerer, when set, gets tokengate_store_write_batch_size.
	Registerer prometheus.Registerer
}

// GroupCommit is a Store whose Apply coalesces concurrent writes: one
// ApplyBatch of the store below, one transaction, one feed lock and one
// durable flush for every write that queued while the batch before was
// committing. A write that arrives while none is committing goes at once,
// alone. Each caller is answered with its own write's Result once the batch
// has committed, or its own error; the rest of the Store passes through.
type GroupCommit struct {
	Store
	opts  GroupCommitOptions
	sizes prometheus.Histogram

	mu      sync.Mutex
	queue   []*queued
	running bool // a flush goroutine is taking batches from the queue
	closed  bool // Close was called: no write is queued any more
	flushes sync.WaitGroup
}

// queued is one Apply waiting for its batch.
type queued struct {
	ctx  context.Context
	w    Write
	done chan Applied // buffered: the flush never waits for the caller
}

// NewGroupCommit puts a GroupCommit in front of s. It fails only if
// opts.Registerer refuses its series.
func NewGroupCommit(s Store, opts GroupCommitOptions) (*GroupCommit, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultWriteBatchMax
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultWriteTimeout
	}
	sizes := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tokengate_store_write_batch_size",
		Help:    "Writes committed together in one store transaction (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(sizes); err != nil {
			return nil, fmt.Errorf("register group commit metrics: %w", err)
		}
	}
	return &GroupCommit{Store: s, opts: opts, sizes: sizes}, nil
}

// Apply queues w for the next batch and returns once that batch has
// committed (or failed), or when ctx ends first. A write whose caller has
// gone before its batch was taken is dropped, never written.
func (g *GroupCommit) Apply(ctx context.Context, w Write) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	q := &queued{ctx: ctx, w: w, done: make(chan Applied, 1)}
	g.mu.Lock()
	if g.closed {
		// Shutting down (a handler outliving the server's drain): the
		// store below is closing, and the sender retries elsewhere.
		g.mu.Unlock()
		return Result{}, fmt.Errorf("apply: group commit closed: %w", ErrUnavailable)
	}
	g.queue = append(g.queue, q)
	if !g.running {
		g.running = true
		g.flushes.Add(1)
		go g.flush()
	}
	g.mu.Unlock()
	select {
	case a := <-q.done:
		return a.Result, a.Err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("apply: %w", ctx.Err())
	}
}

// flush commits batches until the queue is empty. One runs at a time, so
// that writes arriving during a commit make up the next batch.
func (g *GroupCommit) flush() {
	defer g.flushes.Done()
	for {
		batch := g.take()
		if len(batch) == 0 {
			return
		}
		g.commit(batch)
	}
}

// take returns the next batch: up to MaxBatch of the writes queued, in
// their order, skipping those whose callers have gone. None when the queue
// is empty: the flush then ends.
func (g *GroupCommit) take() []*queued {
	g.mu.Lock()
	defer g.mu.Unlock()
	var batch []*queued
	n := 0
	for _, q := range g.queue {
		switch {
		case len(batch) == g.opts.MaxBatch:
			g.queue[n] = q
			n++
		case q.ctx.Err() != nil:
			// Its caller has gone: not written, nobody to answer.
		default:
			batch = append(batch, q)
		}
	}
	clear(g.queue[n:])
	g.queue = g.queue[:n]
	if len(batch) == 0 {
		g.running = false
	}
	return batch
}

// commit applies one batch and answers each caller. The transaction runs
// under a context of its own, cancelled once every caller of the batch has
// gone (one caller giving up does not fail the others' writes) or once
// the batch has taken Timeout.
func (g *GroupCommit) commit(batch []*queued) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), g.opts.Timeout, errBatchTimeout)
	defer cancel()
	var waiting atomic.Int64
	waiting.Store(int64(len(batch)))
	ws := make([]Write, len(batch))
	for i, q := range batch {
		ws[i] = q.w
		stop := context.AfterFunc(q.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	g.sizes.Observe(float64(len(batch)))
	out := g.Store.ApplyBatch(ctx, ws)
	timedOut := context.Cause(ctx) == errBatchTimeout
	for i, q := range batch {
		if a := out[i]; a.Err != nil && timedOut && !errors.Is(a.Err, ErrUnavailable) {
			out[i].Err = fmt.Errorf("the write's batch took over %s: %w (%w)", g.opts.Timeout, ErrUnavailable, a.Err)
		}
		q.done <- out[i]
	}
}

// errBatchTimeout is the cause of a batch's context that ended at Timeout.
var errBatchTimeout = errors.New("write batch timed out")

// Close refuses new writes, waits for the batches of those queued, then
// closes the store below.
func (g *GroupCommit) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.flushes.Wait()
	return g.Store.Close()
}

// Pushed forwards to the store below when it is a Pusher: batching the
// writes changes nothing of the feed's notifications.
func (g *GroupCommit) Pushed() Push {
	if p, ok := g.Store.(Pusher); ok {
		return p.Pushed()
	}
	return Push{}
}

// ForgetPushed forwards to the store below when it is a Pusher.
func (g *GroupCommit) ForgetPushed() {
	if p, ok := g.Store.(Pusher); ok {
		p.ForgetPushed()
	}
}
