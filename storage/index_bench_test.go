package storage_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/storagetest"
)

const issuer = "https://idp.example.com/tenant-1"

func fill(n int) []storage.Change { return storagetest.Mixed(n, issuer, time.Now().Add(time.Hour)) }

// BenchmarkIndexMemory reports the heap an index of 1,000,000 mixed
// revocations holds, per entry (target: at most 160 bytes).
//
//	go test -run '^$' -bench IndexMemory -benchtime 1x ./storage
func BenchmarkIndexMemory(b *testing.B) {
	const n = 1_000_000
	changes := fill(n)
	measureIndexMemory(b, changes)
}

// BenchmarkRevoked is one lookup of a token (jti, sid, subject, one
// audience) against an empty index and a full one.
func BenchmarkRevoked(b *testing.B) {
	for _, n := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			x := storage.NewIndex()
			if _, err := x.Apply(fill(n)); err != nil {
				b.Fatal(err)
			}
			k := x.Keys(issuer, "jti-live", "sid-live", "user-live", []string{"3c219e58-ed0e-4b18-ad48-f4f92793ae32"})
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if x.Revoked(k, now, now) {
					b.Fatal("revoked")
				}
			}
		})
	}
}

// BenchmarkIndexMemorySessions reports the heap an index of 1,000,000
// session revocations holds, per entry: sessions are kept for the issuer's
// session lifetime (30 days by default), so they are the entries that pile
// up.
//
//	go test -run '^$' -bench IndexMemorySessions -benchtime 1x ./storage
func BenchmarkIndexMemorySessions(b *testing.B) {
	const n = 1_000_000
	expires := time.Now().Add(30 * 24 * time.Hour)
	changes := make([]storage.Change, n)
	for i := range changes {
		// A FusionAuth refresh token id: a UUID.
		changes[i] = storage.Change{Seq: uint64(i + 1), Op: storage.OpPut, Revocation: storage.Revocation{
			Kind: storage.KindSession, Issuer: issuer, Key: fmt.Sprintf("%08x-0c41-4a7b-b1e2-5d9f3a6c8e21", i), ExpiresAt: expires}}
	}
	measureIndexMemory(b, changes)
}

// measureIndexMemory loads changes into a new index and reports the heap it
// holds, per entry and in all.
func measureIndexMemory(b *testing.B, changes []storage.Change) {
	n := len(changes)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := storage.NewIndex()
		if _, err := x.Apply(changes); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if x.Len() != n {
			b.Fatalf("index has %d entries, want %d", x.Len(), n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/entry")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		runtime.KeepAlive(x)
	}
}
