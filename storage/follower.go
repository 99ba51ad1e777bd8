package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultSnapshotTimeout is FollowerOptions.SnapshotTimeout's default.
const DefaultSnapshotTimeout = 5 * time.Minute

// FollowerOptions configure a Follower.
type FollowerOptions struct {
	// Poll is how often the feed is read without a notification (default 1s):
	// it covers lost notifications.
	Poll time.Duration
	// Expire is how often the index drops expired entries (default 10s).
	Expire time.Duration
	// BatchSize is how many changes one read returns at most (default 1000).
	BatchSize int
	// ReadTimeout bounds every Changes read the follower makes (default
	// 10s). A read on a half-open connection would otherwise hang until
	// the kernel gives up on it, minutes or hours later, and the replica
	// with it.
	ReadTimeout time.Duration
	// SnapshotTimeout bounds one snapshot load (default 5m): it reads
	// every live entry, millions of them with long-lived sessions, which
	// can take far longer than one Changes read. A load that cannot finish
	// within it fails, and is retried, forever: keep it well above the
	// time a full load takes.
	SnapshotTimeout time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
	// SweepInterval, when positive, is how often Run sweeps the store:
	// expired revocations and events are deleted, and changes older than
	// ChangeRetention are pruned from the feed (Store.Sweep).
	SweepInterval   time.Duration
	ChangeRetention time.Duration
	// Registerer, when set, gets the follower's series: sync lag, the
	// index's entries by kind, its last applied sequence, staleness, and
	// what the sweeps removed (store and index). NewFollower returns an
	// error if those names are taken.
	Registerer prometheus.Registerer
	// OnLoad is called once the first snapshot has loaded.
	OnLoad func()
	// Prepare, when set, runs before the first load, retried with it until
	// both succeed (PostgreSQL migrations, or a schema check).
	Prepare func(context.Context) error
}

// Follower keeps an Index current from a Store: it loads a snapshot at start
// (retrying with backoff), then applies the change feed in order, woken by
// the store's notifications and by a periodic poll. A gap or a truncated
// feed makes it reload; so does a reset feed (a promoted standby, a
// restore, a re-created database), which it logs as an error and counts,
// with the entries the reload lost. It records when it last heard from the store, so the
// check path can tell how stale its view may be. When asked, it also sweeps
// the store of expired entries.
type Follower struct {
	store Store
	index *Index
	opts  FollowerOptions

	metrics *followerMetrics

	turn chan struct{} // one catch-up at a time: hold it to read and apply
	// reads numbers the reads of the feed as they begin; readDone, under
	// the turn, is the number of the last one that ended without error.
	// WaitFor shares a read begun after it was called instead of making
	// its own: many writes through one replica wait on one read.
	reads    atomic.Uint64
	readDone uint64
	// resetOwed, under the turn: the feed moved back (a notification said
	// so) and no reload has succeeded since. Until one does, every
	// catch-up reloads: the numbers the index holds are reused.
	resetOwed bool
	loaded    atomic.Bool
	lastSync  atomic.Int64 // Unix nanoseconds of the last successful read
	// loads moves as a snapshot load (a reload, a reset) begins and as it
	// ends: a Mark taken before one knows nothing of the history the
	// index follows after it.
	loads atomic.Uint64
}

// NewFollower returns a Follower; Run starts it. It fails only if
// opts.Registerer refuses the follower's series.
func NewFollower(s Store, x *Index, opts FollowerOptions) (*Follower, error) {
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Expire <= 0 {
		opts.Expire = 10 * time.Second
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.SnapshotTimeout <= 0 {
		opts.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OnLoad == nil {
		opts.OnLoad = func() {}
	}
	f := &Follower{store: s, index: x, opts: opts, turn: make(chan struct{}, 1)}
	m, err := newFollowerMetrics(f, opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register follower metrics: %w", err)
	}
	f.metrics = m
	return f, nil
}

// Loaded reports whether the first snapshot has loaded.
func (f *Follower) Loaded() bool { return f.loaded.Load() }

// Index is the index the follower keeps current.
func (f *Follower) Index() *Index { return f.index }

// Staleness is how long since the follower last read the store
// successfully; before the first load it is effectively infinite.
func (f *Follower) Staleness() time.Duration {
	last := f.lastSync.Load()
	if last == 0 {
		return time.Duration(1<<63 - 1)
	}
	return f.opts.Now().Sub(time.Unix(0, last))
}

// Run loads the snapshot, then follows the feed until ctx ends. It sweeps
// the store meanwhile when SweepInterval is set.
func (f *Follower) Run(ctx context.Context) error {
	if f.opts.SweepInterval > 0 {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { f.sweep(ctx) })
	}
	backoff := 100 * time.Millisecond
	prepared := f.opts.Prepare == nil
	for attempt := 1; ; attempt++ {
		var err error
		if !prepared {
			if err = f.opts.Prepare(ctx); err == nil {
				prepared = true
			}
		}
		if prepared {
			if err = f.reload(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		f.opts.Logger.Warn("revocation store not ready; retrying",
			"attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	f.loaded.Store(true)
	f.opts.OnLoad()
	f.opts.Logger.Info("revocations loaded", "entries", f.index.Len(), "seq", f.index.Seq())

	poll := time.NewTicker(f.opts.Poll)
	defer poll.Stop()
	expire := time.NewTicker(f.opts.Expire)
	defer expire.Stop()
	failing := false
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-expire.C:
			f.metrics.swept.index.Add(float64(f.index.Expire(f.opts.Now())))
			continue
		case <-f.store.Notify():
			err = f.catchUpNotified(ctx)
		case <-poll.C:
			err = f.CatchUp(ctx)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			failing = true
			f.opts.Logger.Warn("revocation store lost; deciding from memory", "seq", f.index.Seq(), "err", err)
		case err == nil && failing:
			failing = false
			f.opts.Logger.Info("revocation store back; caught up", "seq", f.index.Seq())
		}
	}
}

// lock takes the follower's turn, or gives up when ctx ends: a caller with
// a deadline (a write waiting for its change) is never held past it by
// another catch-up.
func (f *Follower) lock(ctx context.Context) error {
	select {
	case f.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the follower: %w", ctx.Err())
	}
}

func (f *Follower) unlock() { <-f.turn }

// changes is one Changes read after at, bounded by ReadTimeout.
func (f *Follower) changes(ctx context.Context, at Position) ([]Change, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.ReadTimeout)
	defer cancel()
	return f.store.Changes(ctx, at, f.opts.BatchSize)
}

// CatchUp reads and applies every change after the index's sequence. Each
// Changes read is bounded by ReadTimeout, a snapshot reload by
// SnapshotTimeout.
func (f *Follower) CatchUp(ctx context.Context) error {
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()
	return f.catchUpLocked(ctx)
}

// catchUpNotified runs on a notification. When the store pushed the
// changes (Pusher), every notification since the last one carried its
// change, and those past the index's position continue it without a gap in
// the index's feed, it applies them and reads nothing; otherwise it reads
// (CatchUp). Changes already applied are skipped: a read that ran
// meanwhile returned them. So a notification whose change an earlier read
// already applied costs nothing, and one change costs each replica one
// notification rather than a notification and a read.
func (f *Follower) catchUpNotified(ctx context.Context) error {
	p, ok := f.store.(Pusher)
	if !ok {
		return f.CatchUp(ctx)
	}
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()
	push := p.Pushed()
	at := f.index.Position()
	if push.MovedBack || f.resetOwed {
		// The feed's numbers are reused: what this replica applied under
		// them is not what the feed now holds.
		f.resetOwed = true
		return f.owedResetLocked(ctx)
	}
	changes := push.Changes
	if !push.Complete || push.Feed != at.Feed {
		return f.catchUpLocked(ctx)
	}
	for len(changes) > 0 && changes[0].Seq <= at.Seq {
		changes = changes[1:]
	}
	for i, c := range changes {
		if c.Seq != at.Seq+uint64(i)+1 {
			return f.catchUpLocked(ctx)
		}
	}
	if len(changes) == 0 {
		return nil
	}
	if _, err := f.index.Apply(changes); err != nil {
		return f.catchUpLocked(ctx)
	}
	f.synced()
	f.metrics.observeApplied(changes, f.opts.Now())
	f.metrics.pushed.Add(float64(len(changes)))
	return nil
}

// catchUpLocked is CatchUp, its caller holding the turn.
func (f *Follower) catchUpLocked(ctx context.Context) error {
	n := f.reads.Add(1)
	if err := f.readLocked(ctx); err != nil {
		return err
	}
	f.readDone = n
	return nil
}

// catchUpSince catches up unless a read begun after read number since
// has ended without error meanwhile: what it read was committed before
// the caller's call, and is applied.
func (f *Follower) catchUpSince(ctx context.Context, since uint64) error {
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()
	if f.readDone > since {
		return nil
	}
	return f.catchUpLocked(ctx)
}

// owedResetLocked reloads, the feed having moved back; the debt is paid
// only by a reload that succeeds (resetLocked).
func (f *Follower) owedResetLocked(ctx context.Context) error {
	return f.resetLocked(ctx, f.index.Position())
}

// readLocked reads and applies the feed to its end, or reloads.
func (f *Follower) readLocked(ctx context.Context) error {
	if f.resetOwed {
		return f.owedResetLocked(ctx)
	}
	for {
		at := f.index.Position()
		changes, err := f.changes(ctx, at)
		if errors.Is(err, ErrFeedReset) {
			return f.resetLocked(ctx, at)
		}
		if errors.Is(err, ErrTruncated) {
			f.opts.Logger.Warn("change feed truncated past this replica's position; reloading", "seq", f.index.Seq())
			return f.reloadLocked(ctx)
		}
		if err != nil {
			return err
		}
		if _, err := f.index.Apply(changes); err != nil {
			f.opts.Logger.Error("change feed gap; reloading", "err", err)
			return f.reloadLocked(ctx)
		}
		// Fresh only once applied: a replica stuck on a gap must go stale.
		f.synced()
		f.metrics.observeApplied(changes, f.opts.Now())
		f.metrics.read.Add(float64(len(changes)))
		if len(changes) < f.opts.BatchSize {
			return nil
		}
	}
}

// WaitFor returns once the index has applied the write at pos
// (read-your-writes: a write made through this replica is in its index
// before the write call returns), or with an error when ctx ends first,
// even while another catch-up is under way. It always reads the feed first,
// or shares a read that began after it was called (and so after the write
// committed): an index already past pos.Seq may be past it in a feed that
// has since been reset, where pos.Seq names another change. When the index,
// caught up, follows another feed than pos.Feed, the write's feed was
// replaced (a failover, a restore) before this replica applied the write,
// which the new feed may lack: WaitFor returns ErrWriteFeedReplaced, never
// nil, whatever the new feed's sequence, and counts it. A feed read from a
// standby may not have replayed the write yet: WaitFor reads it again,
// backing off up to Poll, until it has.
func (f *Follower) WaitFor(ctx context.Context, pos Position) error {
	for wait := time.Millisecond; ; wait = min(2*wait, f.opts.Poll) {
		if err := f.catchUpSince(ctx, f.reads.Load()); err != nil {
			return err
		}
		got := f.index.Position()
		if got.Feed != pos.Feed {
			f.metrics.replaced.Inc()
			f.opts.Logger.Error("a write's feed was replaced before this replica applied it; refusing to acknowledge it",
				"write_feed", pos.Feed, "write_seq", pos.Seq, "feed", got.Feed, "seq", got.Seq)
			return fmt.Errorf("%w (write at %d of feed %s, index at %d of feed %s)", ErrWriteFeedReplaced, pos.Seq, pos.Feed, got.Seq, got.Feed)
		}
		if got.Seq >= pos.Seq {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("index at %d after catching up, want %d: %w", got.Seq, pos.Seq, ctx.Err())
		case <-t.C:
		}
	}
}

// Mark is where a follower's index stood before a write was sent, for
// WaitForWrite.
type Mark struct {
	pos   Position
	loads uint64
}

// Mark returns where the index stands now. Take it before sending a write.
func (f *Follower) Mark() Mark {
	loads := f.loads.Load() // first: a load ending after it moves it again
	return Mark{pos: f.index.Position(), loads: loads}
}

// WaitForWrite is WaitFor(ctx, res.Position) for a write sent after mark
// was taken, which spares the read of the feed when it can. The store
// reports the changes the write's transaction committed
// (res.Committed). When they continue the index from where it stood at
// the mark, with no snapshot load since and on the same feed, they are the
// changes the index is missing, and it applies them. Notifications of the
// same transaction may have applied them first: that is as good.
//
// Otherwise it reads, as WaitFor does: a write whose position lies outside
// its transaction's changes (a duplicate, a write that moved nothing), an
// index already past them at the mark (numbers reused: the feed moved
// back), one behind them (another writer's changes between), a load since
// the mark, or a move-back still owed.
//
// Without a read after the commit, a failover between the commit and the
// answer goes unnoticed here unless the index has already moved to the new
// feed: the write is acknowledged like one committed just before a
// failover, which an asynchronous standby may lose.
func (f *Follower) WaitForWrite(ctx context.Context, mark Mark, res Result) error {
	if f.appliedCommitted(ctx, mark, res) {
		return nil
	}
	return f.WaitFor(ctx, res.Position)
}

// appliedCommitted applies res.Committed when WaitForWrite can, and
// reports whether the index now has the write.
func (f *Follower) appliedCommitted(ctx context.Context, mark Mark, res Result) bool {
	cs, pos := res.Committed, res.Position
	if len(cs) == 0 || pos.Feed == "" || mark.pos.Feed != pos.Feed {
		return false
	}
	first, last := cs[0].Seq, cs[len(cs)-1].Seq
	if mark.pos.Seq >= first || pos.Seq < first || pos.Seq > last || last-first+1 != uint64(len(cs)) {
		return false
	}
	if f.lock(ctx) != nil {
		return false
	}
	defer f.unlock()
	at := f.index.Position()
	if f.resetOwed || f.loads.Load() != mark.loads || at.Feed != pos.Feed || at.Seq+1 < first {
		return false
	}
	if at.Seq >= last {
		// Applied since the mark, by the transaction's own notifications
		// or a read: the numbers first..last are this transaction's.
		return true
	}
	n, err := f.index.Apply(cs)
	if err != nil {
		return false
	}
	f.synced()
	// Not in the sync lag: applied as the commit was answered here, they
	// would hide how long other writers' changes take to arrive.
	f.metrics.written.Add(float64(n))
	return true
}

func (f *Follower) reload(ctx context.Context) error {
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()
	return f.reloadLocked(ctx)
}

// reloadLocked loads a snapshot, bounded by SnapshotTimeout.
func (f *Follower) reloadLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, f.opts.SnapshotTimeout)
	defer cancel()
	f.loads.Add(1)
	defer f.loads.Add(1)
	if err := f.index.Load(ctx, f.store, f.opts.Now()); err != nil {
		return err
	}
	f.synced()
	return nil
}

// resetLocked reloads after the feed at `at` was reset, and reports it: the
// sequence numbers it applied mean nothing in the new feed, and whatever
// the old one held that the new one lacks (changes lost with a failed
// primary's unreplicated tail, for example) is gone from the index too.
func (f *Follower) resetLocked(ctx context.Context, at Position) error {
	ctx, cancel := context.WithTimeout(ctx, f.opts.SnapshotTimeout)
	defer cancel()
	f.loads.Add(1)
	defer f.loads.Add(1)
	lost, err := f.index.load(ctx, f.store, f.opts.Now())
	if err != nil {
		return err
	}
	f.resetOwed = false
	if p, ok := f.store.(Pusher); ok {
		// What was notified is of the feed before the reload (a change
		// notified late is in the snapshot, and skipped as applied), and
		// so are the numbers seen: a later one at or below them is no
		// sign of another move.
		p.ForgetPushed()
	}
	f.synced()
	f.metrics.resets.Inc()
	f.metrics.lost.Add(float64(lost))
	now := f.index.Position()
	f.opts.Logger.Error("revocation feed reset (failover, restore or new database); reloaded the snapshot",
		"old_feed", at.Feed, "old_seq", at.Seq, "feed", now.Feed, "seq", now.Seq, "lost_entries", lost)
	return nil
}

func (f *Follower) synced() { f.lastSync.Store(f.opts.Now().UnixNano()) }

// sweep sweeps the store every SweepInterval until ctx ends.
func (f *Follower) sweep(ctx context.Context) {
	t := time.NewTicker(f.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := f.store.Sweep(ctx, f.opts.Now(), f.opts.ChangeRetention)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				f.opts.Logger.Warn("sweep failed", "err", err)
				continue
			}
			f.metrics.swept.store.Add(float64(n))
		}
	}
}
