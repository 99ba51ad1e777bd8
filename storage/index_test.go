package storage_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage"
)

func put(seq uint64, r storage.Revocation) storage.Change {
	return storage.Change{Seq: seq, Op: storage.OpPut, Revocation: r}
}

// bases are the clocks the index tests run at: far in the past and far in
// the future of the real one, so that none of them depends on the date.
func bases() map[string]time.Time {
	now := time.Now()
	return map[string]time.Time{"Past": now.Add(-400 * 24 * time.Hour), "Future": now.Add(400 * 24 * time.Hour)}
}

func TestIndexAppliesInOrderOnly(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testIndexAppliesInOrderOnly(t, base) })
	}
}

func testIndexAppliesInOrderOnly(t *testing.T, now time.Time) {
	x := storage.NewIndex()
	exp := now.Add(time.Hour)
	a := storage.Revocation{Kind: storage.KindToken, Issuer: "i", Key: "a", ExpiresAt: exp}
	b := storage.Revocation{Kind: storage.KindSession, Issuer: "i", Key: "b", ExpiresAt: exp}
	if n, err := x.Apply([]storage.Change{put(1, a), put(2, b)}); n != 2 || err != nil {
		t.Fatalf("Apply 1,2 = %d, %v", n, err)
	}
	if n, err := x.Apply([]storage.Change{put(2, b), put(4, a)}); err == nil || n != 0 || x.Seq() != 2 {
		t.Errorf("Apply over a gap = %d, %v at %d; want an error and nothing applied", n, err, x.Seq())
	}
	if n, err := x.Apply([]storage.Change{{Seq: 3, Op: storage.OpDelete, Revocation: a}}); n != 1 || err != nil {
		t.Fatalf("delete: %d, %v", n, err)
	}
	if got := x.Counts(); got[storage.KindToken] != 0 || got[storage.KindSession] != 1 {
		t.Errorf("counts = %v, want 0 tokens and 1 session", got)
	}
	k := x.Keys("i", "a", "b", "", nil)
	if !x.Revoked(k, now, now) {
		t.Error("the session is not revoked")
	}
	if x.Revoked(k, now, exp.Add(time.Second)) {
		t.Error("an expired entry still revokes")
	}
	if n := x.Expire(exp.Add(time.Second)); n != 1 || x.Len() != 0 {
		t.Errorf("Expire dropped %d, %d left; want 1, 0", n, x.Len())
	}
}

func TestMergeNeverMovesBack(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testMergeNeverMovesBack(t, base) })
	}
}

func testMergeNeverMovesBack(t *testing.T, t0 time.Time) {
	stored := storage.Revocation{Kind: storage.KindSubject, RevokedBefore: t0, ExpiresAt: t0.Add(time.Hour), Source: "a:1"}
	if m, changed, recorded := storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(-time.Second), ExpiresAt: t0, Source: "a:2"}); changed || recorded || !reflect.DeepEqual(m, stored) {
		t.Errorf("an earlier write of the same class changed the entry: %+v", m)
	}
	m, changed, recorded := storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(time.Second), ExpiresAt: t0, Source: "c"})
	if !changed || !recorded || !m.RevokedBefore.Equal(t0.Add(time.Second)) || !m.ExpiresAt.Equal(t0.Add(time.Hour)) || m.Source != "c" {
		t.Errorf("a later cutoff: %+v, changed %v", m, changed)
	}
	// An earlier write of another class is its contribution: recorded, but
	// the entry's value stands.
	m, changed, recorded = storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(-time.Second), ExpiresAt: t0, Source: "b:7"})
	if changed || !recorded || !m.RevokedBefore.Equal(t0) || !m.ExpiresAt.Equal(t0.Add(time.Hour)) || m.Source != "a:1" {
		t.Errorf("an earlier write of another class: %+v, changed %v, recorded %v; want it recorded only", m, changed, recorded)
	}
	if got := storage.Sources(m); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("sources = %v, want [a b]", got)
	}
}

// TestRemove: an unrevoke takes out the class it names; what is left is
// the merge of the rest, with the source of the latest of them.
func TestRemove(t *testing.T) {
	t0 := time.Unix(1_000_000_000, 0).UTC()
	stored := storage.Revocation{ID: 7, Kind: storage.KindSubject, RevokedBefore: t0, ExpiresAt: t0.Add(time.Hour), Source: "admin"}
	stored, _, _ = storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(-time.Minute), ExpiresAt: t0.Add(2 * time.Hour), Source: "fusionauth:e1", Reason: "user.deactivate"})
	stored, _, _ = storage.Merge(stored, storage.Revocation{RevokedBefore: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Minute), Source: "logout-route", Reason: "logout"})

	rest, left, removed, err := storage.Remove(stored, "admin")
	if err != nil || !left || len(removed) != 1 || removed[0].Source != "admin" {
		t.Fatalf("Remove(admin) = %v, %v, %+v", left, err, removed)
	}
	if !rest.RevokedBefore.Equal(t0.Add(-time.Minute)) || !rest.ExpiresAt.Equal(t0.Add(2*time.Hour)) || rest.Source != "fusionauth:e1" || rest.Reason != "user.deactivate" {
		t.Errorf("after Remove(admin): %+v, want fusionauth's cutoff and the latest expiry", rest)
	}
	if got := storage.Sources(rest); !reflect.DeepEqual(got, []string{"fusionauth", "logout-route"}) {
		t.Errorf("sources left = %v", got)
	}
	if _, _, _, err := storage.Remove(rest, "admin"); !errors.Is(err, storage.ErrNoContribution) {
		t.Errorf("Remove(admin) again: %v, want ErrNoContribution", err)
	}
	if _, left, removed, err := storage.Remove(rest, storage.AllSources); err != nil || left || len(removed) != 2 {
		t.Errorf("Remove(all) = %v, %+v, %v; want nothing left and two removed", left, removed, err)
	}
	// An entry stored before contributions were kept is one contribution
	// of its own source's class.
	legacy := storage.Revocation{Kind: storage.KindToken, ExpiresAt: t0, Source: "fusionauth:e9"}
	if _, left, _, err := storage.Remove(legacy, "fusionauth"); err != nil || left {
		t.Errorf("Remove(fusionauth) of a legacy entry = %v, %v; want it gone", left, err)
	}
}

// gapStore serves a change feed with a gap and cannot give a snapshot: the
// follower can neither apply nor reload.
type gapStore struct{ storage.Store }

func (gapStore) Changes(context.Context, storage.Position, int) ([]storage.Change, error) {
	return []storage.Change{{Seq: 5, Op: storage.OpPut}}, nil
}

func (gapStore) Snapshot(context.Context, time.Time, func(storage.Revocation) error) (storage.Position, error) {
	return storage.Position{}, errors.New("snapshot timed out")
}

// TestFollowerStuckOnAGapGoesStale: reading the feed is not enough to count
// as fresh; a follower that cannot apply what it read must go stale.
func TestFollowerStuckOnAGapGoesStale(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testFollowerStuckOnAGapGoesStale(t, base) })
	}
}

func testFollowerStuckOnAGapGoesStale(t *testing.T, now time.Time) {
	clock := now
	f, err := storage.NewFollower(gapStore{}, storage.NewIndex(), storage.FollowerOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(time.Minute)
	if err := f.CatchUp(t.Context()); err == nil {
		t.Fatal("CatchUp over a gap without a snapshot succeeded")
	}
	if s := f.Staleness(); s < time.Minute {
		t.Errorf("staleness %v after a failed catch-up, want it to keep growing", s)
	}
}

// TestIndexExpiryRoundsUp: an entry expiring at a fraction of a second
// still revokes during that last second, on lookup and through Expire.
func TestIndexExpiryRoundsUp(t *testing.T) {
	for name, base := range bases() {
		t.Run(name, func(t *testing.T) { testIndexExpiryRoundsUp(t, base) })
	}
}

func testIndexExpiryRoundsUp(t *testing.T, base time.Time) {
	sec := base.Truncate(time.Second)
	exp := sec.Add(time.Hour + 700*time.Millisecond) // the entry lives until .7 of its last second
	iat := sec.Add(-time.Minute)
	revs := []storage.Revocation{
		{Kind: storage.KindToken, Issuer: "i", Key: "j", ExpiresAt: exp},
		{Kind: storage.KindSession, Issuer: "i", Key: "s", ExpiresAt: exp},
		{Kind: storage.KindSubject, Issuer: "i", Key: "u", RevokedBefore: sec, ExpiresAt: exp},
		{Kind: storage.KindCutoff, Issuer: "i", Audience: "a", RevokedBefore: sec, ExpiresAt: exp},
	}
	keys := map[string][5]string{ // issuer, jti, sid, sub, aud
		"token": {"i", "j", "", "", ""}, "session": {"i", "", "s", "", ""},
		"subject": {"i", "", "", "u", ""}, "cutoff": {"i", "", "", "", "a"},
	}
	for i, r := range revs {
		x := storage.NewIndex()
		if _, err := x.Apply([]storage.Change{put(1, r)}); err != nil {
			t.Fatal(err)
		}
		k := keys[r.Kind.String()]
		var auds []string
		if k[4] != "" {
			auds = []string{k[4]}
		}
		ks := x.Keys(k[0], k[1], k[2], k[3], auds)
		for _, at := range []time.Duration{0, 300 * time.Millisecond, 699 * time.Millisecond} {
			now := sec.Add(time.Hour + at)
			if !x.Revoked(ks, iat, now) {
				t.Errorf("%d %s: allowed at %v, %v before its entry expires", i, r.Kind, now.Sub(sec), exp.Sub(now))
			}
			if n := x.Expire(now); n != 0 {
				t.Errorf("%d %s: Expire at %v dropped the entry %v before it expires", i, r.Kind, now.Sub(sec), exp.Sub(now))
			}
		}
		if n := x.Expire(sec.Add(time.Hour + time.Second)); n != 1 {
			t.Errorf("%d %s: Expire a second later dropped %d, want 1", i, r.Kind, n)
		}
	}
}

// TestIndexEntry: Entry tells a live entry's cutoff and expiry, in the
// index's whole seconds (the expiry rounded up), and nothing of an entry
// expired, absent, or kept for another audience.
func TestIndexEntry(t *testing.T) {
	for name, now := range bases() {
		t.Run(name, func(t *testing.T) {
			x := storage.NewIndex()
			exp := now.Add(time.Hour + 300*time.Millisecond)
			cut := now.Add(-time.Minute + 700*time.Millisecond)
			sub := storage.Revocation{Kind: storage.KindSubject, Issuer: "i", Key: "u", RevokedBefore: cut, ExpiresAt: exp}
			tok := storage.Revocation{Kind: storage.KindToken, Issuer: "i", Key: "j", ExpiresAt: exp}
			aud := storage.Revocation{Kind: storage.KindSubject, Issuer: "i", Key: "v", Audience: "a", RevokedBefore: cut, ExpiresAt: exp}
			if _, err := x.Apply([]storage.Change{put(1, sub), put(2, tok), put(3, aud)}); err != nil {
				t.Fatal(err)
			}
			before, expires, ok := x.Entry(storage.KindSubject, "i", "u", "", now)
			if !ok || before.Unix() != cut.Unix() || expires.Unix() != exp.Unix()+1 {
				t.Errorf("Entry(subject) = %v, %v, %v; want %v, %v (rounded up), true", before, expires, ok, cut, exp)
			}
			if before, _, ok := x.Entry(storage.KindToken, "i", "j", "", now); !ok || !before.IsZero() {
				t.Errorf("Entry(token) = %v, %v; want no cutoff, true", before, ok)
			}
			for _, miss := range []struct {
				kind          storage.Kind
				key, audience string
				at            time.Time
			}{
				{storage.KindSubject, "u", "", exp.Add(time.Second)}, // expired
				{storage.KindSubject, "w", "", now},                  // absent
				{storage.KindSession, "u", "", now},                  // another kind
				{storage.KindSubject, "v", "", now},                  // kept for one audience only
			} {
				if _, _, ok := x.Entry(miss.kind, "i", miss.key, miss.audience, miss.at); ok {
					t.Errorf("Entry(%v, %q, %q) at %v found an entry", miss.kind, miss.key, miss.audience, miss.at)
				}
			}
		})
	}
}
