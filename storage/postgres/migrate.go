package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokengate/tokengate/migrations"
)

// migrationLock is the advisory lock key that serialises migrations, so that
// many replicas starting at once apply each file exactly once.
const migrationLock = 0x746f6b656e676174 // "tokengat"

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, f := range files {
		num, _, ok := strings.Cut(f, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", f)
		}
		b, err := migrations.FS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: f, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return out, nil
}

// Migrate applies every pending migration, each in its own transaction,
// under a session advisory lock. It returns the names it applied.
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	all, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable("migrate", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return nil, unavailable("migrate: lock", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrationLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS tokengate_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tokengate_schema_migrations").Scan(&current); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if current > len(all) {
		return nil, fmt.Errorf("migrate: database schema %d is newer than this binary's %d", current, len(all))
	}
	var applied []string
	for _, m := range all[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO tokengate_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
	}
	return applied, nil
}

// CheckSchema returns an error unless every migration has been applied.
func (s *Store) CheckSchema(ctx context.Context) error {
	all, err := loadMigrations()
	if err != nil {
		return err
	}
	var current int
	err = s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tokengate_schema_migrations").Scan(&current)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("database schema is at 0, this binary needs %d: run `tokengate migrate`", len(all))
	}
	if err != nil {
		return unavailable("check schema (run `tokengate migrate`)", err)
	}
	if current != len(all) {
		return fmt.Errorf("database schema is at %d, this binary needs %d: run `tokengate migrate`", current, len(all))
	}
	return nil
}
