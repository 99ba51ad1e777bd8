package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz/health"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
	"github.com/tokengate/tokengate/storage/postgres"
)

// revocations is the store, the in-memory index and the follower that keeps
// one from the other (and sweeps the store), with their health; their
// metrics are the storage package's, registered with the registry given.
type revocations struct {
	store    storage.Store
	index    *storage.Index
	follower *storage.Follower
	// prepare runs before the first load: migrations (or a schema check) on
	// PostgreSQL, nothing for the embedded store.
	prepare func(context.Context) error
	close   func() error
}

// openRevocations picks the backend: PostgreSQL when a URL is configured,
// else the embedded file. Only here does tokengate choose a backend.
func openRevocations(cfg Config, log *slog.Logger, reg prometheus.Registerer, h *health.Health) (*revocations, error) {
	rv := &revocations{index: storage.NewIndex()}
	h.Register("store", "revocations not loaded yet")
	var backend string
	switch {
	case cfg.Storage.PostgresURL != "":
		pg, err := postgres.Open(cfg.Storage.PostgresURL, postgres.Options{
			MaxConns: cfg.poolSize(), FollowURL: cfg.Storage.FollowURL, Logger: log})
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
	if backend == "postgres" {
		log.Info("revocation store", "backend", backend, "writes", cfg.writes(), "max_conns", cfg.poolSize(),
			"follows_standby", cfg.Storage.FollowURL != "")
	} else {
		log.Info("revocation store", "backend", backend)
	}
	// closed undoes the open when the wiring below fails.
	closed := func(err error) error {
		if cerr := rv.close(); cerr != nil {
			return errors.Join(err, fmt.Errorf("close revocation store: %w", cerr))
		}
		return err
	}
	// Writes arriving together share one transaction: one feed lock and
	// one durable flush for all of them (group commit).
	gc, err := storage.NewGroupCommit(rv.store, storage.GroupCommitOptions{Registerer: reg, Timeout: cfg.Storage.WriteTimeout})
	if err != nil {
		return nil, closed(err)
	}
	rv.store, rv.close = gc, gc.Close
	store, err := storage.Instrument(rv.store, reg)
	if err != nil {
		return nil, closed(err)
	}
	rv.store = store
	sweep := cfg.Revocation.SweepInterval
	if cfg.Storage.FollowURL != "" && !cfg.writes() {
		// It keeps no connection to the primary, which a sweep needs;
		// the writers sweep.
		sweep = 0
	}
	rv.follower, err = storage.NewFollower(rv.store, rv.index, storage.FollowerOptions{
		Poll:            cfg.Revocation.PollInterval,
		SweepInterval:   sweep,
		ChangeRetention: cfg.Revocation.ChangeRetention,
		SnapshotTimeout: cfg.Revocation.SnapshotTimeout,
		Logger:          log,
		Registerer:      reg,
		OnLoad:          func() { h.Set("store", true, "") },
		Prepare:         func(ctx context.Context) error { return rv.prepare(ctx) },
	})
	if err != nil {
		return nil, closed(err)
	}
	return rv, nil
}

// run follows the store's change feed (after preparing the store: the
// follower retries both with backoff while the store is unreachable) and
// sweeps it, until ctx ends.
func (rv *revocations) run(ctx context.Context) error { return rv.follower.Run(ctx) }
