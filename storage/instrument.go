package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instrument wraps a Store so that the calls of the check path's supply
// line and of the writers — Apply, Unrevoke, Snapshot, Changes and Sweep —
// are timed, by operation and result, in
// tokengate_store_operation_duration_seconds registered with reg (nil: not
// registered). Get, List, Notify and Close pass through unobserved. It
// returns an error if reg refuses the series (its name is taken).
func Instrument(s Store, reg prometheus.Registerer) (Store, error) {
	d := newOpDuration()
	if reg != nil {
		if err := reg.Register(d); err != nil {
			return nil, fmt.Errorf("register store metrics: %w", err)
		}
	}
	return &instrumented{Store: s, duration: d}, nil
}

type instrumented struct {
	Store
	duration *prometheus.HistogramVec
}

func (i *instrumented) observe(op string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	i.duration.WithLabelValues(op, result).Observe(d.Seconds())
}

func (i *instrumented) Apply(ctx context.Context, w Write) (Result, error) {
	start := time.Now()
	r, err := i.Store.Apply(ctx, w)
	i.observe("apply", time.Since(start), err)
	return r, err
}

func (i *instrumented) Unrevoke(ctx context.Context, id int64, source string) (Unrevoked, error) {
	start := time.Now()
	u, err := i.Store.Unrevoke(ctx, id, source)
	i.observe("unrevoke", time.Since(start), err)
	return u, err
}

func (i *instrumented) Snapshot(ctx context.Context, now time.Time, fn func(Revocation) error) (Position, error) {
	start := time.Now()
	pos, err := i.Store.Snapshot(ctx, now, fn)
	i.observe("snapshot", time.Since(start), err)
	return pos, err
}

func (i *instrumented) Changes(ctx context.Context, after Position, limit int) ([]Change, error) {
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

// Pushed forwards to the store when it is a Pusher; otherwise nothing was
// pushed, and the follower reads.
func (i *instrumented) Pushed() Push {
	if p, ok := i.Store.(Pusher); ok {
		return p.Pushed()
	}
	return Push{}
}

// ForgetPushed forwards to the store when it is a Pusher.
func (i *instrumented) ForgetPushed() {
	if p, ok := i.Store.(Pusher); ok {
		p.ForgetPushed()
	}
}
