package storage

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Prepare validates every revocation of a write and normalises their times
// to UTC microseconds (what every backend can store exactly). It returns the
// prepared copies, or the first problem, wrapped in ErrInvalid.
func Prepare(revs []Revocation) ([]Revocation, error) {
	out := make([]Revocation, len(revs))
	for i, r := range revs {
		p, err := prepare(r)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Prepared is a valid write of a batch: the batch's Index-th write, its
// revocations prepared.
type Prepared struct {
	Index       int
	Write       Write
	Revocations []Revocation
}

// PrepareBatch prepares each write of a batch (Prepare): it returns the
// valid ones, in order, and an answer per write, holding the invalid ones'
// errors. A backend's ApplyBatch refuses those before its transaction.
func PrepareBatch(ws []Write) ([]Prepared, []Applied) {
	out := make([]Applied, len(ws))
	var ok []Prepared
	for i, w := range ws {
		revs, err := Prepare(w.Revocations)
		if err != nil {
			out[i].Err = err
			continue
		}
		ok = append(ok, Prepared{Index: i, Write: w, Revocations: revs})
	}
	return ok, out
}

func prepare(r Revocation) (Revocation, error) {
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	r.ID, r.Seq = 0, 0
	r.RevokedBefore = normalize(r.RevokedBefore)
	r.ExpiresAt = normalize(r.ExpiresAt)
	r.CreatedAt = normalize(r.CreatedAt)
	r.Contributions = []Contribution{contributionOf(r)}
	return r, nil
}

func normalize(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Merge folds a write into the stored entry with the same natural key. The
// write is its source class's contribution: it merges into that class's
// earlier contribution, keeping the later RevokedBefore and ExpiresAt, and
// the entry's value is the merge over every class (the latest of each), so
// an entry never moves back on a write.
//
// changed says whether the entry's value moved (a change for the feed);
// the write's source and reason then replace the stored ones. recorded says
// whether the contributions changed (the entry must be written), which is
// also the case when a class first contributes what the entry already
// holds. When neither, the stored entry stands as it is.
func Merge(stored, w Revocation) (merged Revocation, changed, recorded bool) {
	merged = stored
	cs := Contributions(stored)
	in := contributionOf(w)
	i := slices.IndexFunc(cs, func(c Contribution) bool { return c.Source == in.Source })
	switch {
	case i < 0:
		cs = append(cs, in)
		slices.SortFunc(cs, func(a, b Contribution) int { return strings.Compare(a.Source, b.Source) })
		recorded = true
	case in.RevokedBefore.After(cs[i].RevokedBefore) || in.ExpiresAt.After(cs[i].ExpiresAt):
		cs[i] = Contribution{Source: in.Source, RevokedBefore: later(cs[i].RevokedBefore, in.RevokedBefore),
			ExpiresAt: later(cs[i].ExpiresAt, in.ExpiresAt), LastSource: in.LastSource, Reason: in.Reason}
		recorded = true
	}
	if !recorded {
		return stored, false, false
	}
	merged.Contributions = cs
	if w.RevokedBefore.After(stored.RevokedBefore) {
		merged.RevokedBefore, changed = w.RevokedBefore, true
	}
	if w.ExpiresAt.After(stored.ExpiresAt) {
		merged.ExpiresAt, changed = w.ExpiresAt, true
	}
	if changed {
		merged.Source, merged.Reason = w.Source, w.Reason
	}
	return merged, changed, true
}
