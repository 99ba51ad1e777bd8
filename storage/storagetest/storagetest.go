// Package storagetest is the conformance suite every storage backend runs.
// Each test proves one sentence of the storage.Store contract.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tokengate/tokengate/storage"
)

// Opener opens one store; calling it again after Close opens the same data.
type Opener func(t *testing.T) storage.Store

// Options are what the suite asks of a backend's store: each field maps to
// the backend option of the same name.
type Options struct {
	// Now is the store's clock.
	Now func() time.Time
	// BeforeCommit is called inside Apply's transaction after everything
	// the write does (entries, changes, feed, event id) is written and
	// before the commit; an error from it must abort the whole write. A
	// backend offers it to its own tests only (an export_test.go hook).
	// It is given the Result the write is about to commit.
	BeforeCommit func(storage.Result) error
	// AfterCommit is called once a batch's transaction has committed; an
	// error from it must be every write's answer (Applied.Err), as when
	// the answer is lost between the commit and the caller (a crash, a
	// broken connection). A backend offers it to its own tests only.
	AfterCommit func() error
}

// NewStore returns an Opener for a fresh, empty store with these options.
type NewStore func(t *testing.T, opts Options) Opener

// GroupCommitted is newStore's stores behind a storage.GroupCommit, which
// is how tokengate writes: the contract must hold through it too. The
// store below is closed as newStore closes it.
func GroupCommitted(newStore NewStore) NewStore {
	return func(t *testing.T, opts Options) Opener {
		open := newStore(t, opts)
		return func(t *testing.T) storage.Store {
			g, err := storage.NewGroupCommit(open(t), storage.GroupCommitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
	}
}

// env is what one test of the suite gets: its store and its clock. Every
// instant a test makes is relative to base, which is also the store's clock,
// so that no test depends on the calendar.
type env struct {
	open Opener
	// another returns an Opener of another fresh, empty store, with the
	// same options.
	another func(t *testing.T) Opener
	base    time.Time
	// fault, when set, is called by the store inside Apply's transaction
	// just before the commit (Options.BeforeCommit).
	fault *func(storage.Result) error
	// lost, when set, is called by the store once a batch has committed
	// (Options.AfterCommit).
	lost *func() error
}

// Run runs the suite twice: with the stores' clock 400 days in the past and
// 400 days in the future of the real one. A test that passes both ways does
// not depend on the date it runs on.
func Run(t *testing.T, newStore NewStore) {
	start := time.Now().UTC().Truncate(time.Second)
	for name, base := range map[string]time.Time{
		"Past":   start.Add(-400 * 24 * time.Hour),
		"Future": start.Add(400 * 24 * time.Hour),
	} {
		t.Run(name, func(t *testing.T) { run(t, newStore, base) })
	}
}

func run(t *testing.T, newStore NewStore, base time.Time) {
	tests := map[string]func(*testing.T, env){
		"ApplyGetList":               testApplyGetList,
		"ApplyIsIdempotent":          testIdempotent,
		"CutoffsNeverMoveBack":       testNeverMoveBack,
		"EventIDsDeduplicate":        testEventDedup,
		"EventPastOnArrivalIsKept":   testEventPastOnArrival,
		"ApplyIsAtomic":              testAtomic,
		"ChangesInOrder":             testChangesInOrder,
		"DeleteIsAChange":            testDelete,
		"SnapshotSkipsExpired":       testSnapshot,
		"SweepAndTruncation":         testSweep,
		"PersistsAcrossReopen":       testReopen,
		"CancelledContextIsPrompt":   testCancelled,
		"ConcurrentWritersInOrder":   testConcurrentWriters,
		"NotifyAfterApply":           testNotify,
		"IndexTakesMaxOverLevels":    testIndexMaxOverLevels,
		"FollowerReadsYourWrites":    testReadYourWrites,
		"ListPaginatesAndFilters":    testListPagination,
		"InvalidRevocationRejected":  testInvalid,
		"UnrevokeKeepsOtherSources":  testUnrevokeKeepsOthers,
		"UnrevokeAllDeletes":         testUnrevokeAll,
		"UnrevokeUnknownSource":      testUnrevokeUnknownSource,
		"ContributionsAreRecorded":   testContributionsRecorded,
		"FeedHasAnIdentity":          testFeedIdentity,
		"FollowerReloadsAfterReset":  testFollowerReloadsAfterReset,
		"WritePositionHasTheFeed":    testWritePosition,
		"WaitForRefusesReplacedFeed": testWaitForRefusesReplacedFeed,
		"BatchFailsWritesAlone":      testBatchFailsWritesAlone,
		"BatchIsSequential":          testBatchIsSequential,
		"BatchAnswerLostIsRetried":   testBatchAnswerLost,
		"BatchCancelledFailsAll":     testBatchCancelled,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			var fault func(storage.Result) error
			var lost func() error
			opts := Options{
				Now: func() time.Time { return base },
				BeforeCommit: func(res storage.Result) error {
					if fault == nil {
						return nil
					}
					return fault(res)
				},
				AfterCommit: func() error {
					if lost == nil {
						return nil
					}
					return lost()
				},
			}
			another := func(t *testing.T) Opener { return newStore(t, opts) }
			fn(t, env{open: newStore(t, opts), another: another, base: base, fault: &fault, lost: &lost})
		})
	}
}

func (e env) tokenRev(iss, jti string) storage.Revocation {
	return storage.Revocation{Kind: storage.KindToken, Issuer: iss, Key: jti,
		ExpiresAt: e.base.Add(24 * time.Hour * 365), Source: "test", Reason: "logout"}
}

func (e env) sessionRev(iss, sid string) storage.Revocation {
	return storage.Revocation{Kind: storage.KindSession, Issuer: iss, Key: sid,
		ExpiresAt: e.base.Add(24 * time.Hour * 365), Source: "test"}
}

func (e env) subjectRev(iss, sub, aud string, before time.Time) storage.Revocation {
	return storage.Revocation{Kind: storage.KindSubject, Issuer: iss, Key: sub, Audience: aud,
		RevokedBefore: before, ExpiresAt: before.Add(24 * time.Hour * 365), Source: "test"}
}

func (e env) cutoffRev(iss, aud string, before time.Time) storage.Revocation {
	return storage.Revocation{Kind: storage.KindCutoff, Issuer: iss, Audience: aud,
		RevokedBefore: before, ExpiresAt: before.Add(24 * time.Hour * 365), Source: "test"}
}

func apply(t *testing.T, s storage.Store, w storage.Write) storage.Result {
	t.Helper()
	res, err := s.Apply(t.Context(), w)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkCommitted(t, s, res)
	return res
}

// checkCommitted checks what a result reports of the changes its
// transaction committed, when the store reports them: the feed's changes
// at those numbers, as a read returns them, every one of the write's own
// among them.
func checkCommitted(t *testing.T, s storage.Store, res storage.Result) {
	t.Helper()
	cs := res.Committed
	if cs == nil {
		return
	}
	if len(cs) == 0 {
		t.Errorf("Result.Committed is empty, not nil")
		return
	}
	if res.Seq != 0 && (res.Seq < cs[0].Seq || res.Seq > cs[len(cs)-1].Seq) {
		t.Errorf("Result.Committed holds changes %d to %d, not the write's last change %d", cs[0].Seq, cs[len(cs)-1].Seq, res.Seq)
	}
	read, err := s.Changes(t.Context(), storage.Position{Feed: res.Position.Feed, Seq: cs[0].Seq - 1}, len(cs))
	if err != nil {
		t.Fatalf("read the committed changes back: %v", err)
	}
	if d := cmp.Diff(read, cs, cmpopts.IgnoreFields(storage.Change{}, "At")); d != "" {
		t.Errorf("Result.Committed is not what the feed holds (-feed +Committed):\n%s", d)
	}
}

// follower is a Follower of s into x, its clock at e.base.
func (e env) follower(t *testing.T, s storage.Store, x *storage.Index) *storage.Follower {
	t.Helper()
	f, err := storage.NewFollower(s, x, storage.FollowerOptions{Now: func() time.Time { return e.base }})
	if err != nil {
		t.Fatalf("NewFollower: %v", err)
	}
	return f
}

func revs(rs ...storage.Revocation) storage.Write { return storage.Write{Revocations: rs} }

func allChanges(t *testing.T, s storage.Store, after uint64) []storage.Change {
	t.Helper()
	var out []storage.Change
	at := pos(t, s, after)
	for {
		cs, err := s.Changes(t.Context(), at, 7)
		if err != nil {
			t.Fatalf("Changes(%d): %v", at.Seq, err)
		}
		out = append(out, cs...)
		if len(cs) < 7 {
			return out
		}
		at.Seq = cs[len(cs)-1].Seq
	}
}

// pos is position seq in s's feed.
func pos(t *testing.T, s storage.Store, seq uint64) storage.Position {
	t.Helper()
	return storage.Position{Feed: feed(t, s), Seq: seq}
}

// feed is the identity of s's feed, from a snapshot.
func feed(t *testing.T, s storage.Store) string {
	t.Helper()
	p, err := s.Snapshot(t.Context(), time.Time{}, func(storage.Revocation) error { return nil })
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return p.Feed
}

func snapshot(t *testing.T, s storage.Store, now time.Time) (map[string]storage.Revocation, uint64) {
	t.Helper()
	m := map[string]storage.Revocation{}
	p, err := s.Snapshot(t.Context(), now, func(r storage.Revocation) error {
		m[naturalKey(r)] = r
		return nil
	})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return m, p.Seq
}

func naturalKey(r storage.Revocation) string {
	return fmt.Sprintf("%s|%s|%s|%s", r.Kind, r.Issuer, r.Key, r.Audience)
}

func sameInstant(a, b time.Time) bool { return a.Equal(b) }

func testApplyGetList(t *testing.T, e env) {
	s := e.open(t)
	in := []storage.Revocation{
		e.tokenRev("iss", "jti-1"), e.sessionRev("iss", "sid-1"),
		e.subjectRev("iss", "alice", "", e.base), e.cutoffRev("iss", "app", e.base),
	}
	res := apply(t, s, revs(in...))
	if len(res.Revocations) != 4 || res.Seq == 0 || res.Duplicate {
		t.Fatalf("Apply result = %+v, want 4 revocations and a sequence number", res)
	}
	for i, r := range res.Revocations {
		if r.ID == 0 {
			t.Errorf("revocation %d has no id", i)
		}
		got, err := s.Get(t.Context(), r.ID)
		if err != nil {
			t.Fatalf("Get(%d): %v", r.ID, err)
		}
		if naturalKey(got) != naturalKey(in[i]) || got.Source != in[i].Source || !sameInstant(got.ExpiresAt, in[i].ExpiresAt) {
			t.Errorf("Get(%d) = %+v, want %+v", r.ID, got, in[i])
		}
		if !sameInstant(got.RevokedBefore, in[i].RevokedBefore) {
			t.Errorf("revoked_before = %v, want %v", got.RevokedBefore, in[i].RevokedBefore)
		}
	}
	if _, err := s.Get(t.Context(), 987654); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
	}
	list, err := s.List(t.Context(), storage.ListOptions{Kind: storage.KindSubject})
	if err != nil || len(list) != 1 || list[0].Key != "alice" {
		t.Errorf("List(kind subject) = %+v, %v; want alice", list, err)
	}
}

func testIdempotent(t *testing.T, e env) {
	s := e.open(t)
	w := revs(e.tokenRev("iss", "jti-1"), e.subjectRev("iss", "bob", "", e.base))
	first := apply(t, s, w)
	second := apply(t, s, w)
	if second.Seq != 0 {
		t.Errorf("re-applying the same write made change %d, want none", second.Seq)
	}
	if len(second.Revocations) != 2 || second.Revocations[0].ID != first.Revocations[0].ID {
		t.Errorf("re-apply returned %+v, want the stored entries", second.Revocations)
	}
	if got := len(allChanges(t, s, 0)); got != 2 {
		t.Errorf("feed has %d changes after an idempotent re-apply, want 2", got)
	}
}

func testNeverMoveBack(t *testing.T, e env) {
	s := e.open(t)
	later, earlier := e.base.Add(time.Hour), e.base
	apply(t, s, revs(e.subjectRev("iss", "carol", "", later), e.cutoffRev("iss", "", later)))
	res := apply(t, s, revs(e.subjectRev("iss", "carol", "", earlier), e.cutoffRev("iss", "", earlier)))
	if res.Seq != 0 {
		t.Errorf("an earlier cutoff made change %d, want none", res.Seq)
	}
	for _, r := range res.Revocations {
		if !sameInstant(r.RevokedBefore, later) {
			t.Errorf("%s revoked_before = %v, want it kept at %v", r.Kind, r.RevokedBefore, later)
		}
		if !sameInstant(r.ExpiresAt, later.Add(24*time.Hour*365)) {
			t.Errorf("%s expires_at moved back to %v", r.Kind, r.ExpiresAt)
		}
	}
	evenLater := later.Add(time.Minute)
	res = apply(t, s, revs(e.subjectRev("iss", "carol", "", evenLater)))
	if res.Seq == 0 || !sameInstant(res.Revocations[0].RevokedBefore, evenLater) {
		t.Errorf("a later cutoff: %+v, want it moved forward to %v", res, evenLater)
	}
}

func testEventDedup(t *testing.T, e env) {
	s := e.open(t)
	w := storage.Write{Revocations: []storage.Revocation{e.subjectRev("iss", "dave", "", e.base)},
		EventID: "fusionauth:6a0c-11", EventExpiresAt: e.base.Add(48 * time.Hour)}
	if res := apply(t, s, w); res.Duplicate || res.Seq == 0 {
		t.Fatalf("first delivery: %+v", res)
	}
	w.Revocations[0] = e.subjectRev("iss", "dave", "", e.base.Add(time.Hour)) // a redelivery may differ; it is still the same event
	res := apply(t, s, w)
	if !res.Duplicate || res.Seq != 0 {
		t.Errorf("second delivery: %+v, want Duplicate and no change", res)
	}
	snap, _ := snapshot(t, s, e.base)
	if got := snap[naturalKey(w.Revocations[0])]; !sameInstant(got.RevokedBefore, e.base) {
		t.Errorf("duplicate event changed revoked_before to %v", got.RevokedBefore)
	}
}

// testEventPastOnArrival: a sender's EventExpiresAt may already be past when
// the event arrives (a late redelivery, a skewed clock). The id is still
// remembered for as long as the revocations it wrote can be live, so that a
// redelivery after an unrevoke does not revoke again; a sweep keeps it.
func testEventPastOnArrival(t *testing.T, e env) {
	s := e.open(t)
	w := storage.Write{Revocations: []storage.Revocation{e.tokenRev("iss", "late")},
		EventID: "fusionauth:late", EventExpiresAt: e.base.Add(-time.Hour)}
	first := apply(t, s, w)
	if first.Duplicate || first.Seq == 0 {
		t.Fatalf("first delivery: %+v, want it applied", first)
	}
	if _, err := s.Unrevoke(t.Context(), first.Revocations[0].ID, storage.AllSources); err != nil {
		t.Fatalf("unrevoke: %v", err)
	}
	if _, err := s.Sweep(t.Context(), e.base.Add(time.Minute), time.Hour); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if res := apply(t, s, w); !res.Duplicate || res.Seq != 0 {
		t.Errorf("redelivery after an unrevoke and a sweep: %+v, want Duplicate and no change", res)
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 0 {
		t.Errorf("the redelivery revoked again: %v", snap)
	}
	// Once the revocation's own retention is past, the id is forgotten.
	if _, err := s.Sweep(t.Context(), w.Revocations[0].ExpiresAt.Add(time.Second), time.Hour); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if res := apply(t, s, w); res.Duplicate {
		t.Error("the id is still remembered after every revocation it carried expired")
	}
}

var errFault = errors.New("fault injected before the commit")

// testAtomic: a write that fails inside its transaction, after everything
// it does was written and just before the commit, leaves nothing behind: no entry, no change to an
// existing entry, no change in the feed, no sequence number used, and its
// event id not remembered.
func testAtomic(t *testing.T, e env) {
	s := e.open(t)
	existing := e.subjectRev("iss", "alice", "", e.base)
	before := apply(t, s, revs(existing))

	moved := existing
	moved.RevokedBefore = e.base.Add(time.Hour)
	moved.ExpiresAt = moved.RevokedBefore.Add(24 * time.Hour * 365)
	w := storage.Write{
		Revocations:    []storage.Revocation{e.tokenRev("iss", "first"), moved, e.tokenRev("iss", "third")},
		EventID:        "ev-atomic",
		EventExpiresAt: e.base.Add(time.Hour),
	}
	calls := 0
	var pending storage.Result
	*e.fault = func(res storage.Result) error {
		calls++
		pending = res
		return errFault
	}
	if _, err := s.Apply(t.Context(), w); !errors.Is(err, errFault) {
		t.Fatalf("Apply failing just before its commit: %v, want the injected fault", err)
	}
	if calls != 1 {
		t.Fatalf("the fault ran %d times, want once (every entry, change and the event id written, then the commit)", calls)
	}
	*e.fault = nil
	// The fault fired after the feed was written: the write had taken its
	// three sequence numbers, which the abort must give back.
	if pending.Seq != before.Seq+3 || len(pending.Revocations) != 3 {
		t.Errorf("at the fault the write held seq %d and %d entries, want seq %d and 3: the fault must fire after everything is written",
			pending.Seq, len(pending.Revocations), before.Seq+3)
	}

	snap, seq := snapshot(t, s, e.base)
	if seq != before.Seq {
		t.Errorf("after the failed write the store is at seq %d, want %d", seq, before.Seq)
	}
	if len(snap) != 1 {
		t.Errorf("the failed write left entries: %v, want only the existing one", snap)
	}
	if got := snap[naturalKey(existing)]; !sameInstant(got.RevokedBefore, existing.RevokedBefore) || !sameInstant(got.ExpiresAt, existing.ExpiresAt) {
		t.Errorf("the failed write moved the existing entry: %+v, want revoked_before %v", got, existing.RevokedBefore)
	}
	if cs := allChanges(t, s, before.Seq); len(cs) != 0 {
		t.Errorf("the failed write left %d changes in the feed: %+v", len(cs), cs)
	}
	// The event id was not remembered: delivering the event again applies
	// it, with the next sequence numbers (none was used up by the failure).
	res := apply(t, s, w)
	if res.Duplicate {
		t.Fatal("the failed write's event id was remembered: its redelivery is a duplicate")
	}
	if res.Seq != before.Seq+3 {
		t.Errorf("the redelivery ended at seq %d, want %d (three changes after %d)", res.Seq, before.Seq+3, before.Seq)
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 3 {
		t.Errorf("after the redelivery: %d entries, want 3", len(snap))
	}
}

func testInvalid(t *testing.T, e env) {
	s := e.open(t)
	cases := map[string]storage.Revocation{
		"no issuer":             {Kind: storage.KindToken, Key: "j", ExpiresAt: e.base},
		"subject without time":  {Kind: storage.KindSubject, Issuer: "i", Key: "s", ExpiresAt: e.base},
		"cutoff with a key":     {Kind: storage.KindCutoff, Issuer: "i", Key: "k", RevokedBefore: e.base, ExpiresAt: e.base},
		"unknown kind":          {Kind: 9, Issuer: "i", Key: "k", ExpiresAt: e.base},
		"no expiry":             {Kind: storage.KindSession, Issuer: "i", Key: "s"},
		"token with audience":   {Kind: storage.KindToken, Issuer: "i", Key: "j", Audience: "a", ExpiresAt: e.base},
		"oversized subject key": {Kind: storage.KindSubject, Issuer: "i", Key: string(make([]byte, 2000)), RevokedBefore: e.base, ExpiresAt: e.base},
		// What a backend cannot store as given is refused alike by every
		// backend, as invalid, before any of it is written.
		"NUL in a key":         {Kind: storage.KindToken, Issuer: "i", Key: "j\x00", ExpiresAt: e.base},
		"not UTF-8":            {Kind: storage.KindSession, Issuer: "i\xff", Key: "s", ExpiresAt: e.base},
		"NUL in the reason":    {Kind: storage.KindToken, Issuer: "i", Key: "j", ExpiresAt: e.base, Reason: "\x00"},
		"expiry past 9999":     {Kind: storage.KindToken, Issuer: "i", Key: "j", ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"cutoff before year 0": {Kind: storage.KindCutoff, Issuer: "i", RevokedBefore: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: e.base},
		"natural key too long": {Kind: storage.KindSubject, Issuer: randomText(1024), Key: randomText(1024), Audience: randomText(1024),
			RevokedBefore: e.base, ExpiresAt: e.base},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			// With a valid entry before it: the whole write is refused.
			if _, err := s.Apply(t.Context(), revs(e.tokenRev("iss", "valid"), r)); !errors.Is(err, storage.ErrInvalid) {
				t.Errorf("Apply = %v, want ErrInvalid", err)
			}
		})
	}
	if cs := allChanges(t, s, 0); len(cs) != 0 {
		t.Errorf("rejected writes left %d changes", len(cs))
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 0 {
		t.Errorf("rejected writes left entries: %v", snap)
	}
}

func testChangesInOrder(t *testing.T, e env) {
	s := e.open(t)
	var want []string
	for i := range 20 {
		r := e.tokenRev("iss", fmt.Sprintf("jti-%02d", i))
		apply(t, s, revs(r))
		want = append(want, naturalKey(r))
	}
	cs := allChanges(t, s, 0)
	if len(cs) != len(want) {
		t.Fatalf("feed has %d changes, want %d", len(cs), len(want))
	}
	for i, c := range cs {
		if c.Seq != uint64(i+1) {
			t.Fatalf("change %d has seq %d, want %d (no gaps)", i, c.Seq, i+1)
		}
		if c.Op != storage.OpPut || naturalKey(c.Revocation) != want[i] {
			t.Errorf("change %d = %v %s, want put %s", c.Seq, c.Op, naturalKey(c.Revocation), want[i])
		}
		if c.At.IsZero() {
			t.Errorf("change %d has no commit time", c.Seq)
		}
	}
	if rest := allChanges(t, s, 15); len(rest) != 5 || rest[0].Seq != 16 {
		t.Errorf("Changes(15) = %d changes from %v, want 5 from 16", len(rest), rest)
	}
	if none, err := s.Changes(t.Context(), pos(t, s, 20), 10); err != nil || len(none) != 0 {
		t.Errorf("Changes at the head = %v, %v; want none", none, err)
	}
}

func testDelete(t *testing.T, e env) {
	s := e.open(t)
	res := apply(t, s, revs(e.tokenRev("iss", "jti-del")))
	id := res.Revocations[0].ID
	u, err := s.Unrevoke(t.Context(), id, storage.AllSources)
	c := u.Change
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if c.Op != storage.OpDelete || c.Seq != res.Seq+1 || c.Revocation.Key != "jti-del" {
		t.Errorf("Delete change = %+v, want delete of jti-del at %d", c, res.Seq+1)
	}
	if _, err := s.Get(t.Context(), id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Unrevoke(t.Context(), id, storage.AllSources); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if cs := allChanges(t, s, 0); len(cs) != 2 || cs[1].Op != storage.OpDelete {
		t.Errorf("feed = %+v, want put then delete", cs)
	}
	// Revoking it again after the delete is a new entry.
	if again := apply(t, s, revs(e.tokenRev("iss", "jti-del"))); again.Seq == 0 {
		t.Error("re-revoking a deleted entry changed nothing")
	}
}

func testSnapshot(t *testing.T, e env) {
	s := e.open(t)
	live := e.tokenRev("iss", "live")
	dead := e.tokenRev("iss", "dead")
	dead.ExpiresAt = e.base.Add(-time.Second)
	res := apply(t, s, revs(live, dead))
	snap, seq := snapshot(t, s, e.base)
	if seq != res.Seq {
		t.Errorf("snapshot seq = %d, want %d", seq, res.Seq)
	}
	if _, ok := snap[naturalKey(live)]; !ok || len(snap) != 1 {
		t.Errorf("snapshot = %v, want only the live entry", snap)
	}
}

func testSweep(t *testing.T, e env) {
	s := e.open(t)
	dead := e.tokenRev("iss", "dead")
	dead.ExpiresAt = e.base.Add(-time.Second)
	apply(t, s, revs(dead, e.tokenRev("iss", "live")))
	// An event whose id and revocations are all past: nothing it wrote is
	// live, so the sweep forgets it.
	gone := e.tokenRev("iss", "gone")
	gone.ExpiresAt = e.base.Add(-time.Second)
	apply(t, s, storage.Write{Revocations: []storage.Revocation{gone}, EventID: "ev-old", EventExpiresAt: e.base.Add(-time.Second)})
	n, err := s.Sweep(t.Context(), e.base, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 entries", n, err)
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 1 {
		t.Errorf("after the sweep: %v, want only the live entry", snap)
	}
	// The event id expired: the same event is new again.
	if res := apply(t, s, storage.Write{Revocations: []storage.Revocation{e.tokenRev("iss", "ev")}, EventID: "ev-old",
		EventExpiresAt: e.base.Add(time.Hour)}); res.Duplicate {
		t.Error("an expired event id still deduplicates")
	}
	// Changes older than keepChanges go, and a reader behind them is told.
	if _, err := s.Sweep(t.Context(), e.base.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Changes(t.Context(), pos(t, s, 0), 10); !errors.Is(err, storage.ErrTruncated) {
		t.Errorf("Changes(0) after pruning: %v, want ErrTruncated", err)
	}
	_, seq := snapshot(t, s, e.base)
	if cs, err := s.Changes(t.Context(), pos(t, s, seq), 10); err != nil || len(cs) != 0 {
		t.Errorf("Changes at the head after pruning = %v, %v; want none", cs, err)
	}
	res := apply(t, s, revs(e.tokenRev("iss", "after-prune")))
	if cs, err := s.Changes(t.Context(), pos(t, s, seq), 10); err != nil || len(cs) != 1 || cs[0].Seq != res.Seq || res.Seq != seq+1 {
		t.Errorf("after pruning, the next change = %v, %v; want seq %d", cs, err, seq+1)
	}
}

func testReopen(t *testing.T, e env) {
	s := e.open(t)
	res := apply(t, s, revs(e.tokenRev("iss", "kept"), e.subjectRev("iss", "erin", "app", e.base)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = e.open(t)
	snap, seq := snapshot(t, s, e.base)
	if len(snap) != 2 || seq != res.Seq {
		t.Fatalf("after reopen: %d entries at %d, want 2 at %d", len(snap), seq, res.Seq)
	}
	if next := apply(t, s, revs(e.tokenRev("iss", "new"))); next.Seq != res.Seq+1 {
		t.Errorf("after reopen, next seq = %d, want %d", next.Seq, res.Seq+1)
	}
}

func testCancelled(t *testing.T, e env) {
	s := e.open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	at := pos(t, s, 0)
	calls := map[string]func() error{
		"Apply":   func() error { _, err := s.Apply(ctx, revs(e.tokenRev("iss", "x"))); return err },
		"Changes": func() error { _, err := s.Changes(ctx, at, 10); return err },
		"Snapshot": func() error {
			_, err := s.Snapshot(ctx, e.base, func(storage.Revocation) error { return nil })
			return err
		},
		"List": func() error { _, err := s.List(ctx, storage.ListOptions{}); return err },
	}
	// A call that ignored ctx would block on the store and hang the test
	// until its timeout; no wall-clock bound is asserted here.
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); err == nil {
				t.Error("succeeded with a cancelled context")
			}
		})
	}
	if cs := allChanges(t, s, 0); len(cs) != 0 {
		t.Errorf("a cancelled Apply wrote %d changes", len(cs))
	}
}

// testConcurrentWriters: many writers at once and a reader following the
// feed. The reader never sees a sequence number out of order or skipped, and
// ends with exactly what was written.
func testConcurrentWriters(t *testing.T, e env) {
	s := e.open(t)
	const writers, each = 8, 40
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// The reader follows the feed until it has read every change the
	// writers make, or ctx ends.
	seen := map[string]bool{}
	var readErr error
	var last uint64
	at := pos(t, s, 0)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for last < writers*each {
			at.Seq = last
			cs, err := s.Changes(ctx, at, 50)
			if err != nil {
				readErr = err
				return
			}
			for _, c := range cs {
				if c.Seq != last+1 {
					readErr = fmt.Errorf("reader at %d got change %d", last, c.Seq)
					return
				}
				last = c.Seq
				seen[naturalKey(c.Revocation)] = true
			}
			if len(cs) == 0 {
				select {
				case <-ctx.Done():
					readErr = ctx.Err()
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	}()

	var wg sync.WaitGroup
	written := make(chan string, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := e.tokenRev("iss", fmt.Sprintf("w%d-%d", w, i))
				if i%5 == 0 {
					r = e.subjectRev("iss", fmt.Sprintf("w%d-%d", w, i), "", e.base)
				}
				if _, err := s.Apply(ctx, revs(r)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				written <- naturalKey(r)
			}
		})
	}
	wg.Wait()
	close(written)
	if t.Failed() {
		cancel() // a writer failed: the reader would wait for its changes forever
	}
	<-readerDone
	if readErr != nil {
		t.Fatalf("reader at %d: %v", last, readErr)
	}
	for key := range written {
		if !seen[key] {
			t.Errorf("the reader never saw %s", key)
		}
	}
	if cs := allChanges(t, s, last); len(cs) != 0 {
		t.Errorf("the feed goes on after the %d writes: %d more changes", writers*each, len(cs))
	}
}

func testNotify(t *testing.T, e env) {
	s := e.open(t)
	// Drain anything pending, then expect a wake-up for a new write.
	for drained := false; !drained; {
		select {
		case <-s.Notify():
		case <-time.After(100 * time.Millisecond):
			drained = true
		}
	}
	apply(t, s, revs(e.tokenRev("iss", "notify")))
	select {
	case <-s.Notify():
	case <-time.After(time.Minute):
		t.Fatal("no notification within a minute of a write")
	}
}

// testIndexMaxOverLevels: a store, a follower and the index together. A
// token is revoked by the latest cutoff of any level that applies to it.
func testIndexMaxOverLevels(t *testing.T, e env) {
	s := e.open(t)
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	const iss = "https://idp.example"
	t0 := e.base.Add(-time.Hour)
	apply(t, s, revs(
		e.subjectRev(iss, "frank", "", t0),                   // subject, every audience: early
		e.subjectRev(iss, "frank", "app-2", t0.Add(30*60e9)), // subject for app-2: later
		e.cutoffRev(iss, "app-3", t0.Add(40*60e9)),           // app-3 for everyone: later still
	))
	if err := f.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	iat := t0.Add(20 * time.Minute) // after the subject cutoff, before the others
	cases := map[string]struct {
		iss  string
		sub  string
		aud  []string
		want bool
	}{
		"subject level only":            {iss, "frank", []string{"app-1"}, false},
		"subject+audience level":        {iss, "frank", []string{"app-2"}, true},
		"audience level":                {iss, "grace", []string{"app-3"}, true},
		"one of several audiences":      {iss, "frank", []string{"app-1", "app-3"}, true},
		"another subject, another app":  {iss, "grace", []string{"app-1"}, false},
		"another issuer's same subject": {"https://other.example", "frank", []string{"app-2"}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := x.Revoked(x.Keys(tc.iss, "", "", tc.sub, tc.aud), iat, e.base); got != tc.want {
				t.Errorf("revoked = %v, want %v", got, tc.want)
			}
		})
	}
	// Same second as the cutoff: revoked (security wins the tie); one second later: not.
	k := x.Keys(iss, "", "", "frank", []string{"app-1"})
	if !x.Revoked(k, t0.Add(999*time.Millisecond), e.base) {
		t.Error("a token issued in the cutoff's second is not revoked")
	}
	if x.Revoked(k, t0.Add(time.Second), e.base) {
		t.Error("a token issued the second after the cutoff is revoked")
	}
}

func testReadYourWrites(t *testing.T, e env) {
	s := e.open(t)
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	k := x.Keys("iss", "jti-ryw", "", "", nil)
	for i := range 5 {
		res := apply(t, s, revs(e.tokenRev("iss", fmt.Sprintf("other-%d", i))))
		if err := f.WaitFor(t.Context(), res.Position); err != nil {
			t.Fatal(err)
		}
	}
	res := apply(t, s, revs(e.tokenRev("iss", "jti-ryw")))
	if err := f.WaitFor(t.Context(), res.Position); err != nil {
		t.Fatal(err)
	}
	if !x.Revoked(k, e.base, e.base) {
		t.Error("a write is not in the index after WaitFor")
	}
	if x.Seq() != res.Seq {
		t.Errorf("index seq %d, want %d", x.Seq(), res.Seq)
	}
}

func testListPagination(t *testing.T, e env) {
	s := e.open(t)
	for i := range 25 {
		apply(t, s, revs(e.tokenRev("iss-a", fmt.Sprintf("j%02d", i))))
	}
	apply(t, s, revs(e.tokenRev("iss-b", "other"), e.subjectRev("iss-a", "henry", "", e.base)))
	var got []string
	var after int64
	for {
		page, err := s.List(t.Context(), storage.ListOptions{Issuer: "iss-a", Kind: storage.KindToken, AfterID: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			got = append(got, r.Key)
			after = r.ID
		}
		if len(page) < 10 {
			break
		}
	}
	if len(got) != 25 || got[0] != "j00" || got[24] != "j24" {
		t.Errorf("paginated list = %v, want j00..j24 in order", got)
	}
	page, err := s.List(t.Context(), storage.ListOptions{Key: "henry"})
	if err != nil || len(page) != 1 {
		t.Errorf("List(key henry) = %v, %v", page, err)
	}
}

// twoSources revokes alice's subject from two sources: an operator (cutoff
// at base) and a FusionAuth event (an hour earlier, kept longer). It returns
// the event's write and the entry's id.
func (e env) twoSources(t *testing.T, s storage.Store) (storage.Write, int64) {
	t.Helper()
	admin := e.subjectRev("iss", "alice", "", e.base)
	admin.Source = "admin"
	first := apply(t, s, revs(admin))
	fa := e.subjectRev("iss", "alice", "", e.base.Add(-time.Hour))
	fa.Source, fa.Reason = "fusionauth:ev-1", "user.deactivate"
	fa.ExpiresAt = admin.ExpiresAt.Add(time.Hour)
	w := storage.Write{Revocations: []storage.Revocation{fa}, EventID: "fusionauth:ev-1", EventExpiresAt: e.base.Add(time.Hour)}
	if res := apply(t, s, w); res.Duplicate || res.Revocations[0].ID != first.Revocations[0].ID {
		t.Fatalf("the event: %+v, want it merged into entry %d", res, first.Revocations[0].ID)
	}
	return w, first.Revocations[0].ID
}

func sourcesOf(cs []storage.Contribution) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Source)
	}
	return out
}

// testUnrevokeKeepsOtherSources: unrevoking one source's contribution
// leaves the others standing, the entry's value is the merge of what is
// left (here it moves back, to the event's cutoff), the feed carries that
// value, and a redelivery of the other source's event is still a duplicate.
func testUnrevokeKeepsOthers(t *testing.T, e env) {
	s := e.open(t)
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	w, id := e.twoSources(t, s)
	if got, err := s.Get(t.Context(), id); err != nil || fmt.Sprint(sourcesOf(got.Contributions)) != "[admin fusionauth]" {
		t.Fatalf("Get(%d) = %+v, %v; want contributions from admin and fusionauth", id, got, err)
	}
	_, seq := snapshot(t, s, e.base)
	u, err := s.Unrevoke(t.Context(), id, "admin")
	if err != nil {
		t.Fatalf("Unrevoke(admin): %v", err)
	}
	if fmt.Sprint(sourcesOf(u.Removed)) != "[admin]" {
		t.Errorf("removed %v, want [admin]", sourcesOf(u.Removed))
	}
	fa := w.Revocations[0]
	c := u.Change
	if c.Op != storage.OpPut || c.Seq != seq+1 || c.Revocation.ID != id {
		t.Fatalf("change = %+v, want a put of entry %d at %d", c, id, seq+1)
	}
	if !sameInstant(c.Revocation.RevokedBefore, fa.RevokedBefore) || !sameInstant(c.Revocation.ExpiresAt, fa.ExpiresAt) ||
		c.Revocation.Source != fa.Source || fmt.Sprint(sourcesOf(c.Revocation.Contributions)) != "[fusionauth]" {
		t.Errorf("remaining = %+v, want the event's value and source", c.Revocation)
	}
	if cs := allChanges(t, s, seq); len(cs) != 1 || cs[0].Op != storage.OpPut || !sameInstant(cs[0].Revocation.RevokedBefore, fa.RevokedBefore) {
		t.Errorf("feed after the unrevoke = %+v, want one put with the event's cutoff", cs)
	}
	got, err := s.Get(t.Context(), id)
	if err != nil || !sameInstant(got.RevokedBefore, fa.RevokedBefore) || got.Seq != c.Seq {
		t.Errorf("Get after the unrevoke = %+v, %v; want the event's cutoff at seq %d", got, err, c.Seq)
	}
	// The index follows: a token issued between the two cutoffs is let
	// back in, one issued before the event's is still revoked.
	if err := f.WaitFor(t.Context(), u.Position); err != nil {
		t.Fatal(err)
	}
	k := x.Keys("iss", "", "", "alice", nil)
	if x.Revoked(k, e.base.Add(-time.Minute), e.base) {
		t.Error("a token issued after the event's cutoff is still revoked")
	}
	if !x.Revoked(k, fa.RevokedBefore, e.base) {
		t.Error("a token the event revoked is let back in")
	}
	// The event is redelivered: still a duplicate, and the entry stands.
	if res := apply(t, s, w); !res.Duplicate || res.Seq != 0 {
		t.Errorf("redelivery: %+v, want Duplicate", res)
	}
	snap, _ := snapshot(t, s, e.base)
	if got := snap[naturalKey(fa)]; !sameInstant(got.RevokedBefore, fa.RevokedBefore) {
		t.Errorf("after the redelivery: %+v, want the event's cutoff standing", got)
	}
	// Unrevoking the other source now leaves nothing: the entry goes.
	u, err = s.Unrevoke(t.Context(), id, "fusionauth")
	if err != nil || u.Change.Op != storage.OpDelete || fmt.Sprint(sourcesOf(u.Removed)) != "[fusionauth]" {
		t.Errorf("Unrevoke(fusionauth) = %+v, %v; want the entry deleted", u, err)
	}
}

// testUnrevokeAll: AllSources removes every contribution and deletes the
// entry; a redelivery of an event that contributed does not bring it back.
func testUnrevokeAll(t *testing.T, e env) {
	s := e.open(t)
	w, id := e.twoSources(t, s)
	_, seq := snapshot(t, s, e.base)
	u, err := s.Unrevoke(t.Context(), id, storage.AllSources)
	if err != nil {
		t.Fatalf("Unrevoke(all): %v", err)
	}
	if fmt.Sprint(sourcesOf(u.Removed)) != "[admin fusionauth]" {
		t.Errorf("removed %v, want [admin fusionauth]", sourcesOf(u.Removed))
	}
	if u.Change.Op != storage.OpDelete || u.Change.Seq != seq+1 || u.Change.Revocation.Key != "alice" {
		t.Errorf("change = %+v, want the delete of alice at %d", u.Change, seq+1)
	}
	if _, err := s.Get(t.Context(), id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get after Unrevoke(all): %v, want ErrNotFound", err)
	}
	if cs := allChanges(t, s, seq); len(cs) != 1 || cs[0].Op != storage.OpDelete {
		t.Errorf("feed = %+v, want one delete", cs)
	}
	if res := apply(t, s, w); !res.Duplicate {
		t.Errorf("redelivery after Unrevoke(all): %+v, want Duplicate", res)
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 0 {
		t.Errorf("after the redelivery: %v, want nothing", snap)
	}
}

// testUnrevokeUnknownSource: naming a source that did not contribute
// removes nothing and makes no change.
func testUnrevokeUnknownSource(t *testing.T, e env) {
	s := e.open(t)
	r := e.tokenRev("iss", "jti-fa")
	r.Source = "fusionauth:ev-2"
	res := apply(t, s, revs(r))
	id := res.Revocations[0].ID
	if _, err := s.Unrevoke(t.Context(), id, "admin"); !errors.Is(err, storage.ErrNoContribution) {
		t.Errorf("Unrevoke(admin) of fusionauth's entry: %v, want ErrNoContribution", err)
	}
	if _, err := s.Unrevoke(t.Context(), id+1000, "admin"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Unrevoke of an unknown id: %v, want ErrNotFound", err)
	}
	if cs := allChanges(t, s, res.Seq); len(cs) != 0 {
		t.Errorf("a refused unrevoke made changes: %+v", cs)
	}
	if got, err := s.Get(t.Context(), id); err != nil || got.Source != r.Source {
		t.Errorf("Get = %+v, %v; want the entry as written", got, err)
	}
}

// testContributionsRecorded: a second source writing what the entry already
// holds is recorded (durably) but makes no change in the feed; a source
// re-sending its own value records nothing.
func testContributionsRecorded(t *testing.T, e env) {
	s := e.open(t)
	r := e.sessionRev("iss", "sid-1")
	r.Source = "logout-route"
	first := apply(t, s, revs(r))
	r.Source = "backchannel-logout:iss:lt-1"
	if res := apply(t, s, revs(r)); res.Seq != 0 || fmt.Sprint(sourcesOf(res.Revocations[0].Contributions)) != "[backchannel-logout logout-route]" {
		t.Errorf("a second source with the same value: %+v, want no change and both contributions", res)
	}
	r.Source = "backchannel-logout:iss:lt-2"
	apply(t, s, revs(r))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = e.open(t)
	got, err := s.Get(t.Context(), first.Revocations[0].ID)
	if err != nil || got.Seq != first.Seq || got.Source != "logout-route" ||
		fmt.Sprint(sourcesOf(got.Contributions)) != "[backchannel-logout logout-route]" {
		t.Errorf("after reopen: %+v, %v; want seq %d, source logout-route, both contributions", got, err, first.Seq)
	}
	if cs := allChanges(t, s, 0); len(cs) != 1 {
		t.Errorf("feed has %d changes, want 1", len(cs))
	}
	// The backchannel contribution goes; the logout route's stands.
	u, err := s.Unrevoke(t.Context(), got.ID, "backchannel-logout")
	if err != nil || u.Change.Op != storage.OpPut || u.Change.Revocation.Source != "logout-route" {
		t.Errorf("Unrevoke(backchannel-logout) = %+v, %v; want the logout route's entry", u, err)
	}
}

// randomText is n random letters and digits: text that does not compress.
func randomText(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}
