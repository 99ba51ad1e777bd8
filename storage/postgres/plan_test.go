package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestWritesFindRowsByIndexAsTheTableGrows: a write keeps finding the rows
// it updates through their index after the table has grown from empty, with
// no ANALYZE in between. A plan chosen once for the connection's life (a
// generic plan) while the table was small scanned the whole table for each
// batch from then on: ingest slowed down as it filled the table.
func TestWritesFindRowsByIndexAsTheTableGrows(t *testing.T) {
	url := pgtest.URL(t)
	s := openWith(t, url, postgres.Options{MaxConns: 1}) // one connection: its plans are the ones reused
	admin := pgtest.Connect(t, url)
	now := time.Now()
	write := func(key string) {
		t.Helper()
		if _, err := s.Apply(t.Context(), storage.Write{Revocations: []storage.Revocation{{Kind: storage.KindToken,
			Issuer: "iss", Key: key, ExpiresAt: now.Add(time.Hour), Source: "test"}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // past the executions after which PostgreSQL settles on a generic plan
		write(fmt.Sprintf("small-%d", i))
	}
	if _, err := admin.Exec(t.Context(), `INSERT INTO tokengate_revocations (seq, kind, issuer, key, expires_at, source)
		SELECT 0, 1, 'iss', 'bulk-' || i, now() + interval '1 hour', 'test' FROM generate_series(1, 50000) i`); err != nil {
		t.Fatal(err)
	}
	scans := func() (seq, idx int) {
		t.Helper()
		if err := admin.QueryRow(t.Context(), `SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables
			WHERE relname = 'tokengate_revocations'`).Scan(&seq, &idx); err != nil {
			t.Fatal(err)
		}
		return seq, idx
	}
	// A backend sends its statistics at the end of a transaction at most
	// once a second (or when idle for a while): a write more than a second
	// after the others sends theirs and its own.
	time.Sleep(1100 * time.Millisecond)
	write("flush")
	seq0, idx0 := scans()
	time.Sleep(1100 * time.Millisecond)
	write("large")
	deadline := time.Now().Add(30 * time.Second)
	for {
		seq, idx := scans()
		if seq != seq0 || idx != idx0 {
			if seq != seq0 {
				t.Errorf("a write on a table grown to 50,000 rows scanned it whole %d time(s) (index scans %d): its plan was made for the empty table", seq-seq0, idx-idx0)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the write's scans never showed in pg_stat_user_tables")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
