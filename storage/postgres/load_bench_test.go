package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
	"github.com/tokengate/tokengate/storage/storagetest"
)

// BenchmarkLoad1M is a replica's start: loading 1,000,000 live revocations
// of mixed kinds from PostgreSQL into a fresh index (target: at most 5 s).
//
//	go test -run '^$' -bench Load1M -benchtime 3x ./storage/postgres
func BenchmarkLoad1M(b *testing.B) {
	const n = 1_000_000
	url := pgtest.URL(b)
	s := open(b, url)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	changes := storagetest.Mixed(n, "https://idp.example.com/tenant-1", time.Now().Add(time.Hour))
	now := time.Now()
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"tokengate_revocations"},
		[]string{"seq", "kind", "issuer", "key", "audience", "revoked_before", "expires_at", "source", "created_at"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			r := changes[i].Revocation
			var before *time.Time
			if !r.RevokedBefore.IsZero() {
				before = &r.RevokedBefore
			}
			return []any{int64(i + 1), int16(r.Kind), r.Issuer, r.Key, r.Audience, before, r.ExpiresAt, "bench", now}, nil
		}))
	if err != nil || copied != n {
		b.Fatalf("copy: %d rows, %v", copied, err)
	}
	if _, err := conn.Exec(ctx, "UPDATE tokengate_feed SET last_seq = $1", n); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		x := storage.NewIndex()
		start := time.Now()
		if err := x.Load(ctx, s, time.Now()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/load")
		if x.Len() != n || x.Seq() != n {
			b.Fatalf("loaded %d entries at %d, want %d", x.Len(), x.Seq(), n)
		}
	}
}
