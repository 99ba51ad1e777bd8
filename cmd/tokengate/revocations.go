package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tokengate/tokengate/extauthz/health"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
	"github.com/tokengate/tokengate/storage/postgres"
)

// revocations is the store, the in-memory index and the follower that keeps
// one from the other, with their metrics and health.
type revocations struct {
	store    storage.Store
	index    *storage.Index
	follower *storage.Follower
	// prepare runs before the first load: migrations (or a schema check) on
	// PostgreSQL, nothing for the embedded store.
	prepare func(context.Context) error
	cfg     RevocationConfig
	log     *slog.Logger
	swept   *prometheus.CounterVec
	close   func() error
}

// openRevocations picks the backend: PostgreSQL when a URL is configured,
// else the embedded file. Only here does tokengate choose a backend.
func openRevocations(cfg Config, log *slog.Logger, reg prometheus.Registerer, h *health.Health) (*revocations, error) {
	opDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokengate_store_operation_duration_seconds",
		Help:    "Revocation store calls by operation and result.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
	}, []string{"op", "result"})
	syncLag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tokengate_revocation_sync_lag_seconds",
		Help:    "Time from a change's commit to its application in this replica's index.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	swept := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_revocations_swept_total",
		Help: "Expired revocations deleted, from the store (sweep) or dropped from this replica's index.",
	}, []string{"where"})
	reg.MustRegister(opDuration, syncLag, swept)

	rv := &revocations{index: storage.NewIndex(), cfg: cfg.Revocation, log: log, swept: swept}
	h.Register("store", "revocations not loaded yet")
	var backend string
	switch {
	case cfg.Storage.PostgresURL != "":
		pg, err := postgres.Open(cfg.Storage.PostgresURL, postgres.Options{MaxConns: cfg.Storage.MaxConns, Logger: log})
		if err != nil {
			return nil, err
		}
		rv.store, rv.close, backend = pg, pg.Close, "postgres"
		rv.prepare = func(ctx context.Context) error {
			if !cfg.Storage.AutoMigrate {
				return pg.CheckSchema(ctx)
			}
			applied, err := pg.Migrate(ctx)
			for _, name := range applied {
				log.Info("migration applied", "migration", name)
			}
			return err
		}
	default:
		b, err := bolt.Open(cfg.Storage.Path, bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("storage.path: %w", err)
		}
		rv.store, rv.close, backend = b, b.Close, "embedded"
		rv.prepare = func(context.Context) error { return nil }
	}
	log.Info("revocation store", "backend", backend)
	rv.store = storage.Instrument(rv.store, func(op string, d time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		opDuration.WithLabelValues(op, result).Observe(d.Seconds())
	})
	rv.follower = storage.NewFollower(rv.store, rv.index, storage.FollowerOptions{
		Poll:   cfg.Revocation.PollInterval,
		Logger: log,
		OnApply: func(cs []storage.Change) {
			now := time.Now()
			for _, c := range cs {
				syncLag.Observe(max(now.Sub(c.At), 0).Seconds())
			}
		},
		OnExpire: func(n int) { swept.WithLabelValues("index").Add(float64(n)) },
		OnLoad:   func() { h.Set("store", true, "") },
		Prepare:  func(ctx context.Context) error { return rv.prepare(ctx) },
	})
	for kind := storage.KindToken; kind <= storage.KindCutoff; kind++ {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tokengate_revocations",
			Help:        "Live revocations in this replica's index, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind.String()},
		}, func() float64 { return float64(rv.index.Counts()[kind]) }))
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tokengate_revocation_last_applied_seq",
			Help: "The last change-feed sequence number applied to this replica's index.",
		}, func() float64 { return float64(rv.index.Seq()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tokengate_revocation_staleness_seconds",
			Help: "Time since this replica last read the revocation store successfully.",
		}, func() float64 { return min(rv.follower.Staleness().Seconds(), 1e9) }),
	)
	return rv, nil
}

// run follows the store's change feed (after preparing the store: the
// follower retries both with backoff while the store is unreachable) and
// sweeps it, until ctx ends.
func (rv *revocations) run(ctx context.Context) error {
	var g errgroup.Group
	g.Go(func() error {
		storage.RunSweeper(ctx, rv.store, rv.cfg.SweepInterval, rv.cfg.ChangeRetention, time.Now, func(n int, err error) {
			if err != nil && !errors.Is(err, context.Canceled) {
				rv.log.Warn("sweep failed", "err", err)
				return
			}
			rv.swept.WithLabelValues("store").Add(float64(n))
		})
		return nil
	})
	g.Go(func() error { return rv.follower.Run(ctx) })
	return g.Wait()
}
