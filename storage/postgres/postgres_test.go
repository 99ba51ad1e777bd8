package postgres_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/migrations"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
	"github.com/tokengate/tokengate/storage/storagetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// open opens a migrated store on url, closed with the test.
func open(t testing.TB, url string) *postgres.Store {
	t.Helper()
	return openWith(t, url, postgres.Options{MaxConns: 20})
}

// openWith is open with options.
func openWith(t testing.TB, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) { storagetest.Run(t, newStore) }

// TestConformanceGroupCommit: the contract holds through a GroupCommit,
// which is how tokengate writes.
func TestConformanceGroupCommit(t *testing.T) {
	storagetest.Run(t, storagetest.GroupCommitted(newStore))
}

// newStore opens the suite's stores: one database per test, reopened as is.
func newStore(t *testing.T, opts storagetest.Options) storagetest.Opener {
	url := pgtest.URL(t)
	return func(t *testing.T) storage.Store {
		s := openWith(t, url, postgres.Options{MaxConns: 20, Now: opts.Now})
		postgres.SetBeforeCommit(s, opts.BeforeCommit)
		postgres.SetAfterCommit(s, opts.AfterCommit)
		return s
	}
}

// TestMigrateConcurrently: replicas starting at once each run Migrate; the
// advisory lock makes exactly one apply each file.
func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.URL(t)
	const replicas = 5
	results := make(chan []string, replicas)
	errs := make(chan error, replicas)
	for range replicas {
		go func() {
			s, err := postgres.Open(url, postgres.Options{})
			if err != nil {
				errs <- err
				return
			}
			applied, err := s.Migrate(t.Context())
			errs <- errors.Join(err, s.Close())
			results <- applied
		}()
	}
	total := 0
	for range replicas {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += len(<-results)
	}
	s := open(t, url)
	if err := s.CheckSchema(t.Context()); err != nil {
		t.Fatal(err)
	}
	applied, err := s.Migrate(t.Context())
	if err != nil || len(applied) != 0 {
		t.Errorf("a second migrate applied %v, %v; want nothing", applied, err)
	}
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if total != len(files) {
		t.Errorf("%d migrations applied across %d replicas, want exactly %d (each file, applied once)", total, replicas, len(files))
	}
}

// TestSchemaOneRowsAreOneContribution: a row written before schema 2 has no
// contributions; it counts as one, of its own source's class, so that
// unrevoking another source leaves it standing.
func TestSchemaOneRowsAreOneContribution(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	now := time.Now().UTC().Truncate(time.Second)
	old := storage.Revocation{Kind: storage.KindSubject, Issuer: "iss", Key: "alice", RevokedBefore: now,
		ExpiresAt: now.Add(time.Hour), Source: "fusionauth:ev-old"}
	res, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{old}})
	if err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(t.Context(), "UPDATE tokengate_revocations SET contributions = '[]'"); err != nil {
		t.Fatal(err)
	}
	admin := old
	admin.Source, admin.RevokedBefore, admin.ExpiresAt = "admin", now.Add(time.Minute), now.Add(2*time.Hour)
	if _, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{admin}}); err != nil {
		t.Fatal(err)
	}
	u, err := s.Unrevoke(t.Context(), res.Revocations[0].ID, "admin")
	if err != nil {
		t.Fatalf("Unrevoke(admin): %v", err)
	}
	got := u.Change.Revocation
	if u.Change.Op != storage.OpPut || !got.RevokedBefore.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Hour)) || got.Source != old.Source {
		t.Errorf("after Unrevoke(admin): %v %+v, want the schema-1 value standing", u.Change.Op, got)
	}
}

// TestCheckSchemaOfAnUnmigratedDatabase: a database never migrated is a
// plain "run tokengate migrate", not the store being unavailable.
func TestCheckSchemaOfAnUnmigratedDatabase(t *testing.T) {
	s, err := postgres.Open(pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	err = s.CheckSchema(t.Context())
	if err == nil || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "run `tokengate migrate`") {
		t.Errorf("CheckSchema of an unmigrated database: %v; want a plain error saying to migrate", err)
	}
}
