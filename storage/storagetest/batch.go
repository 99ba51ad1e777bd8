package storagetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/storage"
)

// batch applies ws with ApplyBatch and checks that it answered each.
func batch(t *testing.T, s storage.Store, ws ...storage.Write) []storage.Applied {
	t.Helper()
	out := s.ApplyBatch(t.Context(), ws)
	if len(out) != len(ws) {
		t.Fatalf("ApplyBatch of %d writes answered %d", len(ws), len(out))
	}
	for _, a := range out {
		if a.Err == nil {
			checkCommitted(t, s, a.Result)
		}
	}
	return out
}

// testBatchIsSequential: a batch does what its writes would do applied
// one after another, in order, in a store of their own: the same results
// and the same feed. It holds two writes of one event (the second is a
// duplicate), a write that merges into the entry an earlier write of the
// batch made, one that moves it, a write that changes nothing, two writes
// of one key in a single write, and an event already seen before the
// batch.
func testBatchIsSequential(t *testing.T, e env) {
	seen := storage.Write{Revocations: []storage.Revocation{e.tokenRev("iss", "seen")}, EventID: "ev-seen",
		EventExpiresAt: e.base.Add(time.Hour)}
	moved := e.subjectRev("iss", "alice", "", e.base.Add(time.Minute))
	moved.Source = "admin"
	ws := []storage.Write{
		{Revocations: []storage.Revocation{e.subjectRev("iss", "alice", "", e.base), e.tokenRev("iss", "j1")},
			EventID: "ev-1", EventExpiresAt: e.base.Add(time.Hour)},
		// The same event again, with other values: a duplicate.
		{Revocations: []storage.Revocation{e.subjectRev("iss", "alice", "", e.base.Add(time.Hour))},
			EventID: "ev-1", EventExpiresAt: e.base.Add(time.Hour)},
		revs(e.tokenRev("iss", "j1")), // already written by the first: no change
		revs(moved),                   // another source, later: moves alice
		revs(e.sessionRev("iss", "s1"), e.subjectRev("iss", "bob", "", e.base),
			e.subjectRev("iss", "bob", "", e.base.Add(time.Second))), // bob twice in one write
		seen, // seen before the batch: a duplicate
		{Revocations: []storage.Revocation{e.cutoffRev("iss", "app", e.base)}, EventID: "ev-2",
			EventExpiresAt: e.base.Add(time.Hour)},
	}

	one, many := e.another(t)(t), e.open(t)
	apply(t, one, seen)
	apply(t, many, seen)
	var want []storage.Result
	for _, w := range ws {
		want = append(want, apply(t, one, w))
	}
	out := batch(t, many, ws...)
	var got []storage.Result
	for i, a := range out {
		if a.Err != nil {
			t.Fatalf("write %d of the batch: %v", i, a.Err)
		}
		got = append(got, a.Result)
	}
	// Entry ids and feed identities are each store's own; every other
	// field must match.
	own := cmp.Options{
		cmp.FilterPath(func(p cmp.Path) bool {
			f := p.Last().String()
			return f == ".ID" || f == ".Feed" || f == ".Committed"
		}, cmp.Ignore()),
	}
	if d := cmp.Diff(want, got, own); d != "" {
		t.Errorf("the batch's results differ from the same writes applied one by one (-one by one +batch):\n%s", d)
	}
	for i, r := range got {
		if r.Position.Feed != feed(t, many) {
			t.Errorf("write %d: position in feed %q, want the store's %q", i, r.Position.Feed, feed(t, many))
		}
	}
	wantFeed, gotFeed := allChanges(t, one, 0), allChanges(t, many, 0)
	for _, cs := range [][]storage.Change{wantFeed, gotFeed} {
		for i := range cs {
			cs[i].At, cs[i].Revocation.ID = time.Time{}, 0
		}
	}
	if d := cmp.Diff(wantFeed, gotFeed); d != "" {
		t.Errorf("the batch's feed differs from the same writes applied one by one (-one by one +batch):\n%s", d)
	}
	if !got[1].Duplicate || !got[5].Duplicate {
		t.Errorf("duplicates: write 1 %v, write 5 %v; want both", got[1].Duplicate, got[5].Duplicate)
	}
}

// testBatchFailsWritesAlone: in one batch, a write that is invalid and one
// that fails on its own inside the transaction (a fault injected for it
// alone) fail, each with its own error; the others commit, with gapless
// sequence numbers in the batch's order, and the failed writes leave
// nothing: no entry, no change, no event id.
func testBatchFailsWritesAlone(t *testing.T, e env) {
	s := e.open(t)
	before := apply(t, s, revs(e.tokenRev("iss", "before")))
	poison := e.tokenRev("iss", "poison")
	*e.fault = func(res storage.Result) error {
		for _, r := range res.Revocations {
			if r.Key == poison.Key {
				return errFault
			}
		}
		return nil
	}
	invalid := e.tokenRev("iss", "")
	ws := []storage.Write{
		{Revocations: []storage.Revocation{e.tokenRev("iss", "a")}, EventID: "ev-a", EventExpiresAt: e.base.Add(time.Hour)},
		{Revocations: []storage.Revocation{e.tokenRev("iss", "valid-but-with"), invalid}, EventID: "ev-invalid",
			EventExpiresAt: e.base.Add(time.Hour)},
		{Revocations: []storage.Revocation{e.tokenRev("iss", "b")}},
		{Revocations: []storage.Revocation{poison}, EventID: "ev-poison", EventExpiresAt: e.base.Add(time.Hour)},
		{Revocations: []storage.Revocation{e.tokenRev("iss", "c")}, EventID: "ev-c", EventExpiresAt: e.base.Add(time.Hour)},
	}
	out := batch(t, s, ws...)
	if !errors.Is(out[1].Err, storage.ErrInvalid) {
		t.Errorf("the invalid write: %v, want ErrInvalid", out[1].Err)
	}
	if !errors.Is(out[3].Err, errFault) {
		t.Errorf("the write failing in the transaction: %v, want its own fault", out[3].Err)
	}
	for i, key := range map[int]string{0: "a", 2: "b", 4: "c"} {
		a := out[i]
		if a.Err != nil {
			t.Errorf("write %d (%s) failed with the others: %v", i, key, a.Err)
			continue
		}
		if len(a.Result.Revocations) != 1 || a.Result.Revocations[0].Key != key || a.Result.Seq == 0 {
			t.Errorf("write %d: %+v, want %s applied", i, a.Result, key)
		}
	}
	*e.fault = nil
	cs := allChanges(t, s, before.Seq)
	var keys []string
	for i, c := range cs {
		keys = append(keys, c.Revocation.Key)
		if c.Seq != before.Seq+uint64(i)+1 {
			t.Errorf("change %d has seq %d, want %d: no gaps", i, c.Seq, before.Seq+uint64(i)+1)
		}
	}
	if d := cmp.Diff([]string{"a", "b", "c"}, keys); d != "" {
		t.Errorf("the feed after the batch (-want +got):\n%s", d)
	}
	if snap, _ := snapshot(t, s, e.base); len(snap) != 4 {
		t.Errorf("after the batch: %d entries, want 4 (before, a, b, c): %v", len(snap), snap)
	}
	// The failed writes' event ids were not remembered: each applies now.
	ws[1].Revocations = ws[1].Revocations[:1]
	for _, i := range []int{1, 3} {
		if res := apply(t, s, ws[i]); res.Duplicate || res.Seq == 0 {
			t.Errorf("write %d redelivered: %+v, want it applied (its first delivery left nothing)", i, res)
		}
	}
}

// testBatchAnswerLost: a batch commits, and its answer is lost (the
// process dies before acknowledging, the connection breaks): every write
// sees an error. The senders retry: each retry is a no-op (a duplicate
// event, or a merge that moves nothing), and reports a position that a
// follower reaches, so that the retried write is acknowledged with the
// guarantee of the first.
func testBatchAnswerLost(t *testing.T, e env) {
	s := e.open(t)
	errLost := errors.New("the answer was lost after the commit")
	*e.lost = func() error { return errLost }
	ws := []storage.Write{
		{Revocations: []storage.Revocation{e.tokenRev("iss", "a")}, EventID: "ev-a", EventExpiresAt: e.base.Add(time.Hour)},
		revs(e.subjectRev("iss", "bob", "", e.base)),
		{Revocations: []storage.Revocation{e.sessionRev("iss", "c")}, EventID: "ev-c", EventExpiresAt: e.base.Add(time.Hour)},
	}
	for i, a := range batch(t, s, ws...) {
		if a.Err == nil {
			t.Fatalf("write %d answered %+v although its answer was lost", i, a.Result)
		}
	}
	*e.lost = nil
	snap, seq := snapshot(t, s, e.base)
	if len(snap) != 3 || seq != 3 {
		t.Fatalf("after the lost answer: %d entries at seq %d, want the batch committed: 3 at 3", len(snap), seq)
	}
	x := storage.NewIndex()
	f := e.follower(t, s, x)
	for i, a := range batch(t, s, ws...) {
		if a.Err != nil {
			t.Fatalf("retry of write %d: %v", i, a.Err)
		}
		if a.Result.Seq != 0 {
			t.Errorf("retry of write %d made change %d, want none", i, a.Result.Seq)
		}
		if want := ws[i].EventID != ""; a.Result.Duplicate != want {
			t.Errorf("retry of write %d: duplicate %v, want %v", i, a.Result.Duplicate, want)
		}
		if want := (storage.Position{Feed: feed(t, s), Seq: uint64(i + 1)}); a.Result.Position != want {
			t.Errorf("retry of write %d: position %+v, want %+v (where its first delivery committed)", i, a.Result.Position, want)
		}
		if err := f.WaitFor(t.Context(), a.Result.Position); err != nil {
			t.Errorf("retry of write %d: WaitFor: %v", i, err)
		}
	}
	if cs := allChanges(t, s, seq); len(cs) != 0 {
		t.Errorf("the retries made %d changes: %+v", len(cs), cs)
	}
	if x.Len() != 3 {
		t.Errorf("the follower holds %d entries, want 3", x.Len())
	}
}

// testBatchCancelled: a batch whose context has ended fails every write
// with the context's error, promptly, and commits none.
func testBatchCancelled(t *testing.T, e env) {
	s := e.open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ws := []storage.Write{
		{Revocations: []storage.Revocation{e.tokenRev("iss", "a")}, EventID: "ev-a", EventExpiresAt: e.base.Add(time.Hour)},
		revs(e.tokenRev("iss", "b")),
	}
	out := s.ApplyBatch(ctx, ws)
	if len(out) != len(ws) {
		t.Fatalf("ApplyBatch of %d writes answered %d", len(ws), len(out))
	}
	for i, a := range out {
		if !errors.Is(a.Err, context.Canceled) {
			t.Errorf("write %d: %+v, %v; want context.Canceled", i, a.Result, a.Err)
		}
	}
	if snap, seq := snapshot(t, s, e.base); len(snap) != 0 || seq != 0 {
		t.Errorf("the cancelled batch left %d entries at seq %d", len(snap), seq)
	}
}
