package token

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"

	"github.com/maypok86/otter/v2"
)

// DefaultCacheMaxBytes is the verified-token cache's weight bound when
// Options.CacheMaxBytes is 0.
const DefaultCacheMaxBytes = 64 << 20

// entryOverhead is what every cached token costs besides its entry and
// the strings and answer it holds: otter's node (key, value, expiry, links),
// its hash table slot and its frequency sketch, as BenchmarkCacheEntryBytes
// in extauthz measures them.
const entryOverhead = 160

// newCache bounds the verified-token cache by weight (bytes, as size counts
// them) and by entries at once. otter takes one bound or the other, not
// both, so both are made one: every entry weighs at least
// maxBytes/maxEntries. Then the weights summing to at most maxBytes means at
// most maxEntries entries, and at most maxBytes bytes. When entries are
// larger than that quota, bytes bind; when smaller, entries do.
func newCache(maxEntries, maxBytes int, now func() time.Time) (*otter.Cache[[sha256.Size]byte, *entry], error) {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheMaxBytes
	}
	quota := uint32(min((maxBytes+maxEntries-1)/maxEntries, math.MaxUint32))
	return otter.New(&otter.Options[[sha256.Size]byte, *entry]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(_ [sha256.Size]byte, e *entry) uint32 {
			return max(e.weight, quota)
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[[sha256.Size]byte, *entry]) time.Duration {
			return e.Value.id.ExpiresAt.Sub(now())
		}),
	})
}

// size is the bytes a cached entry holds: the counted overhead, the entry,
// the strings of its identity that are its own, and what Derive made of it.
// It is an estimate, computed (never measured) so that weights are the same
// on every run; BenchmarkCacheEntryBytes compares it with the heap.
func (e *entry) size() uint32 {
	n := entryOverhead + heapBytes(int(unsafe.Sizeof(*e)))
	n += heapBytes(len(e.id.Subject)) + heapBytes(len(e.id.TokenID)) + heapBytes(len(e.id.SessionID))
	if !e.iss.sharedAudience(e.id.Audience) {
		n += heapBytes(len(e.id.Audience) * int(unsafe.Sizeof("")))
		for _, a := range e.id.Audience {
			n += heapBytes(len(a))
		}
	}
	if s, ok := e.id.Derived.(interface{ Size() int }); ok {
		n += s.Size()
	}
	return uint32(min(n, math.MaxUint32))
}

// heapBytes is roughly what the allocator hands out for an object of n
// bytes: Go's size classes step by 16 bytes up to 256, and by more above.
func heapBytes(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 8:
		return 8
	case n <= 256:
		return (n + 15) &^ 15
	default:
		return (n + 63) &^ 63
	}
}

// HeapBytes is heapBytes for a Derive result's Size.
func HeapBytes(n int) int { return heapBytes(n) }

// audience returns aud, or, when it is exactly one of the issuer's
// configured audiences (the common case), a one-element slice of the
// configuration: shared by every token of that audience, so not held per
// entry.
func (iss *issuer) audience(aud []string) []string {
	if len(aud) == 1 {
		for i, a := range iss.cfg.Audiences {
			if a == aud[0] {
				return iss.cfg.Audiences[i : i+1 : i+1]
			}
		}
	}
	return aud
}

// sharedAudience reports whether aud is one that audience shared.
func (iss *issuer) sharedAudience(aud []string) bool {
	if len(aud) != 1 {
		return false
	}
	for i := range iss.cfg.Audiences {
		if &aud[0] == &iss.cfg.Audiences[i] {
			return true
		}
	}
	return false
}

// CacheStats describe the verified-token cache.
type CacheStats struct {
	// Entries is the number of cached tokens.
	Entries int
	// Weight is the bytes the entries hold, as the weigher counts them;
	// never more than MaxWeight.
	Weight uint64
	// MaxWeight is the bound on Weight (cache.max_bytes).
	MaxWeight uint64
}

// CacheStats returns the cache's size after its pending maintenance
// (evictions included) has run. A Verifier without a cache has none.
func (v *Verifier) CacheStats() CacheStats {
	if v.cache == nil {
		return CacheStats{}
	}
	v.cache.CleanUp()
	return CacheStats{Entries: v.cache.EstimatedSize(), Weight: v.cache.WeightedSize(), MaxWeight: v.cache.GetMaximum()}
}

// Introspect verifies raw as Verify does and also returns all its claims,
// decoded again from its payload: the cache keeps none of them. It is for
// token introspection, not for the check path.
func (v *Verifier) Introspect(ctx context.Context, raw string) (*Identity, map[string]any, error) {
	id, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, nil, err
	}
	// raw verified, so it is three segments and its payload is JSON.
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, nil, ErrMalformed
	}
	payload, err := v.parser.DecodeSegment(parts[1])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return id, claims, nil
}
