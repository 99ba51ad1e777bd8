package storagetest

import (
	"fmt"
	"time"

	"github.com/tokengate/tokengate/storage"
)

// Mixed returns n live revocations of mixed kinds for issuer, as the changes
// 1..n of a feed: 60% tokens, 20% sessions, 19% subjects (half of them
// narrowed to an audience) and 1% audience cutoffs, with realistic key
// lengths. Benchmarks use it to fill an index or a store.
func Mixed(n int, issuer string, expires time.Time) []storage.Change {
	changes := make([]storage.Change, n)
	before := expires.Add(-time.Hour)
	for i := range changes {
		r := storage.Revocation{Issuer: issuer, ExpiresAt: expires}
		switch m := i % 100; {
		case m < 60:
			r.Kind, r.Key = storage.KindToken, fmt.Sprintf("jti-%08d-6c1f-4b5e-9d2a-3f0e8c7b", i)
		case m < 80:
			r.Kind, r.Key = storage.KindSession, fmt.Sprintf("sid-%08d-0c41-4a7b-b1e2-5d9f", i)
		case m < 99:
			r.Kind, r.Key, r.RevokedBefore = storage.KindSubject, fmt.Sprintf("user-%08d-2b7e-4f0a", i), before
			if i%2 == 0 {
				r.Audience = "3c219e58-ed0e-4b18-ad48-f4f92793ae32"
			}
		default:
			r.Kind, r.Audience, r.RevokedBefore = storage.KindCutoff, fmt.Sprintf("app-%08d", i), before
		}
		changes[i] = storage.Change{Seq: uint64(i + 1), Op: storage.OpPut, Revocation: r}
	}
	return changes
}
