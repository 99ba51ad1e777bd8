package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// BenchmarkApplyConcurrent is the write path of one replica under 16
// concurrent writers, each write one event revoking one subject (as a
// FusionAuth user.delete does): Apply on its own, through a GroupCommit,
// and through a GroupCommit followed by the follower's WaitFor, as the
// intake does. The test cluster does not fsync: the durable figure is
// make bench-ingest's.
//
//	go test -run '^$' -bench ApplyConcurrent ./storage/postgres
func BenchmarkApplyConcurrent(b *testing.B) {
	for _, mode := range []string{"alone", "group", "group+wait"} {
		b.Run(mode, func(b *testing.B) {
			var s storage.Store = open(b, pgtest.URL(b))
			if mode != "alone" {
				g, err := storage.NewGroupCommit(s, storage.GroupCommitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				s = g
			}
			var f *storage.Follower
			if mode == "group+wait" {
				var err error
				if f, err = storage.NewFollower(s, storage.NewIndex(), storage.FollowerOptions{}); err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				wg.Go(func() { f.Run(ctx) })
				b.Cleanup(func() { cancel(); wg.Wait() })
				for !f.Loaded() {
					time.Sleep(time.Millisecond)
				}
			}
			const writers = 16
			now := time.Now()
			var n atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						w := storage.Write{
							Revocations: []storage.Revocation{{Kind: storage.KindSubject, Issuer: "acme.com", Key: fmt.Sprintf("user-%d", i),
								RevokedBefore: now, ExpiresAt: now.Add(time.Hour), Source: fmt.Sprintf("fusionauth:ev-%d", i)}},
							EventID: fmt.Sprintf("fusionauth:ev-%d", i), EventExpiresAt: now.Add(time.Hour),
						}
						res, err := s.Apply(context.Background(), w)
						if err != nil {
							b.Error(err)
							return
						}
						if f != nil {
							if err := f.WaitFor(context.Background(), res.Position); err != nil {
								b.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
