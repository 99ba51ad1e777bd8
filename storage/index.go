package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// Index is every live revocation in memory, for the check path: O(1)
// lookups, no I/O, safe for concurrent use. It is kept current by applying
// the store's change feed strictly in sequence order.
//
// Entries are keyed by a 128-bit keyed hash of their natural key, not by the
// strings themselves, which keeps a million entries well under 100 bytes
// each. The hash seeds are random per process, so keys cannot be chosen to
// collide; a collision would revoke (never allow) a token.
type Index struct {
	seeds [2]maphash.Seed

	mu      sync.RWMutex
	entries map[ident]slot
	feed    string
	seq     uint64
	counts  [KindCutoff + 1]int
}

// ident is an entry's hashed natural key.
type ident [2]uint64

// slot is what a lookup needs: times in Unix seconds.
type slot struct {
	before  int64 // floor(revoked_before); subject and cutoff only
	expires int64 // ceil(expires_at): an entry is live through its last fraction of a second
	kind    Kind
}

// NewIndex returns an empty index at sequence 0.
func NewIndex() *Index {
	return &Index{
		seeds:   [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		entries: map[ident]slot{},
	}
}

func (x *Index) ident(kind Kind, issuer, key, audience string) ident {
	var id ident
	var n [4]byte
	for i, seed := range x.seeds {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteByte(byte(kind))
		for _, s := range [3]string{issuer, key, audience} {
			binary.LittleEndian.PutUint32(n[:], uint32(len(s)))
			h.Write(n[:])
			h.WriteString(s)
		}
		id[i] = h.Sum64()
	}
	return id
}

// Keys are the lookups one token needs, computed once per verified token.
type Keys struct {
	token, session      ident
	hasToken, hasSesion bool
	levels              []ident // subject, issuer cutoff, and per audience
}

// Keys prepares the lookups for a token: its jti, its sid, and every cutoff
// level that applies (subject, subject and audience, audience, issuer).
func (x *Index) Keys(issuer, jti, sid, sub string, audiences []string) *Keys {
	k := &Keys{levels: make([]ident, 0, 2+2*len(audiences))}
	if jti != "" {
		k.token, k.hasToken = x.ident(KindToken, issuer, jti, ""), true
	}
	if sid != "" {
		k.session, k.hasSesion = x.ident(KindSession, issuer, sid, ""), true
	}
	k.levels = append(k.levels, x.ident(KindCutoff, issuer, "", ""))
	if sub != "" {
		k.levels = append(k.levels, x.ident(KindSubject, issuer, sub, ""))
	}
	for _, aud := range audiences {
		k.levels = append(k.levels, x.ident(KindCutoff, issuer, "", aud))
		if sub != "" {
			k.levels = append(k.levels, x.ident(KindSubject, issuer, sub, aud))
		}
	}
	return k
}

// Revoked reports whether a token with these keys, issued at iat, is revoked
// at now: its jti or sid is listed, or iat is at or before the latest
// cutoff of any level that applies to it.
func (x *Index) Revoked(k *Keys, iat, now time.Time) bool {
	nowS, iatS := now.Unix(), iat.Unix()
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(x.entries) == 0 {
		return false
	}
	if k.hasToken {
		if s, ok := x.entries[k.token]; ok && s.expires > nowS {
			return true
		}
	}
	if k.hasSesion {
		if s, ok := x.entries[k.session]; ok && s.expires > nowS {
			return true
		}
	}
	for _, id := range k.levels {
		if s, ok := x.entries[id]; ok && s.expires > nowS && iatS <= s.before {
			return true
		}
	}
	return false
}

// Entry returns the live entry at now for this key, as the index holds it
// (in whole seconds): its cutoff (subject and cutoff kinds; zero otherwise)
// and when it expires. It is for the write path, to skip writing what the
// index already holds; the check path uses Keys and Revoked.
func (x *Index) Entry(kind Kind, issuer, key, audience string, now time.Time) (before, expires time.Time, ok bool) {
	id := x.ident(kind, issuer, key, audience)
	x.mu.RLock()
	s, ok := x.entries[id]
	x.mu.RUnlock()
	if !ok || s.expires <= now.Unix() {
		return time.Time{}, time.Time{}, false
	}
	if kind == KindSubject || kind == KindCutoff {
		before = time.Unix(s.before, 0)
	}
	return before, time.Unix(s.expires, 0), true
}

// Seq is the last change applied.
func (x *Index) Seq() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.seq
}

// Position is the feed the index follows and the last change applied.
func (x *Index) Position() Position {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return Position{Feed: x.feed, Seq: x.seq}
}

// Counts returns the number of entries by kind.
func (x *Index) Counts() map[Kind]int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	m := make(map[Kind]int, 4)
	for k := KindToken; k <= KindCutoff; k++ {
		m[k] = x.counts[k]
	}
	return m
}

// Len is the number of entries.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.entries)
}

// Load replaces the index with a snapshot of the store: afterwards it holds
// exactly the snapshot's entries, at the snapshot's position. Lookups keep
// using the old entries until the new ones are complete.
func (x *Index) Load(ctx context.Context, s Store, now time.Time) error {
	_, err := x.load(ctx, s, now)
	return err
}

// load is Load; it also returns how many entries live at now the snapshot
// lost: entries the index held that the snapshot lacks, or holds with an
// earlier expiry or cutoff.
func (x *Index) load(ctx context.Context, s Store, now time.Time) (lost int, err error) {
	m := make(map[ident]slot, x.Len())
	var counts [KindCutoff + 1]int
	pos, err := s.Snapshot(ctx, now, func(r Revocation) error {
		id := x.ident(r.Kind, r.Issuer, r.Key, r.Audience)
		if _, dup := m[id]; !dup && r.Kind <= KindCutoff {
			counts[r.Kind]++
		}
		m[id] = slotOf(r)
		return nil
	})
	if err != nil {
		return 0, err
	}
	nowS := now.Unix()
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, old := range x.entries {
		if old.expires <= nowS {
			continue
		}
		if got, ok := m[id]; !ok || got.expires < old.expires || got.before < old.before {
			lost++
		}
	}
	x.entries, x.feed, x.seq, x.counts = m, pos.Feed, pos.Seq, counts
	return lost, nil
}

// Apply applies changes in order. Each must be the next sequence number;
// changes at or below the current sequence are skipped (already applied). A
// gap is an error and nothing after it is applied: the caller must reload.
func (x *Index) Apply(changes []Change) (applied int, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range changes {
		if c.Seq <= x.seq {
			continue
		}
		if c.Seq != x.seq+1 {
			return applied, fmt.Errorf("change feed gap: at %d, next change is %d", x.seq, c.Seq)
		}
		r := c.Revocation
		id := x.ident(r.Kind, r.Issuer, r.Key, r.Audience)
		old, had := x.entries[id]
		switch c.Op {
		case OpPut:
			x.entries[id] = slotOf(r)
			if !had {
				x.counts[r.Kind]++
			}
		case OpDelete:
			if had {
				delete(x.entries, id)
				x.counts[old.kind]--
			}
		}
		x.seq = c.Seq
		applied++
	}
	return applied, nil
}

// Expire drops entries expired at now and returns how many.
func (x *Index) Expire(now time.Time) int {
	nowS := now.Unix()
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for id, s := range x.entries {
		if s.expires <= nowS {
			delete(x.entries, id)
			x.counts[s.kind]--
			n++
		}
	}
	return n
}

func slotOf(r Revocation) slot {
	s := slot{expires: ceilUnix(r.ExpiresAt), kind: r.Kind}
	if r.Kind == KindSubject || r.Kind == KindCutoff {
		s.before = r.RevokedBefore.Unix() // floor to the second: iat has one-second precision
	}
	return s
}

// ceilUnix is t in Unix seconds, rounded up: an entry kept until T+0.5s must
// still revoke at T+0.2s, when now.Unix() is T. Rounding down would let a
// revoked token through during the last fraction of a second; rounding up
// keeps the entry at most one second longer, which only ever denies.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
