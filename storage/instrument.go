package storage

import (
	"context"
	"time"
)

// Instrument wraps a Store so that every call is observed: the operation
// name, how long it took, and its error.
func Instrument(s Store, observe func(op string, d time.Duration, err error)) Store {
	return &instrumented{Store: s, observe: observe}
}

type instrumented struct {
	Store
	observe func(string, time.Duration, error)
}

func (i *instrumented) Apply(ctx context.Context, w Write) (Result, error) {
	start := time.Now()
	r, err := i.Store.Apply(ctx, w)
	i.observe("apply", time.Since(start), err)
	return r, err
}

func (i *instrumented) Delete(ctx context.Context, id int64, source string) (Change, error) {
	start := time.Now()
	c, err := i.Store.Delete(ctx, id, source)
	i.observe("delete", time.Since(start), err)
	return c, err
}

func (i *instrumented) Snapshot(ctx context.Context, now time.Time, fn func(Revocation) error) (uint64, error) {
	start := time.Now()
	seq, err := i.Store.Snapshot(ctx, now, fn)
	i.observe("snapshot", time.Since(start), err)
	return seq, err
}

func (i *instrumented) Changes(ctx context.Context, after uint64, limit int) ([]Change, error) {
	start := time.Now()
	cs, err := i.Store.Changes(ctx, after, limit)
	i.observe("changes", time.Since(start), err)
	return cs, err
}

func (i *instrumented) Sweep(ctx context.Context, now time.Time, keep time.Duration) (int, error) {
	start := time.Now()
	n, err := i.Store.Sweep(ctx, now, keep)
	i.observe("sweep", time.Since(start), err)
	return n, err
}

// RunSweeper sweeps the store every interval until ctx ends, reporting how
// many entries each sweep deleted (and its error).
func RunSweeper(ctx context.Context, s Store, interval, keepChanges time.Duration, now func() time.Time, report func(int, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.Sweep(ctx, now(), keepChanges)
			if ctx.Err() != nil {
				return
			}
			report(n, err)
		}
	}
}
