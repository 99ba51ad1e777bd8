package storage

import (
	"fmt"
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

func prepare(r Revocation) (Revocation, error) {
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	r.ID, r.Seq = 0, 0
	r.RevokedBefore = normalize(r.RevokedBefore)
	r.ExpiresAt = normalize(r.ExpiresAt)
	r.CreatedAt = normalize(r.CreatedAt)
	return r, nil
}

func normalize(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Merge folds a write into the stored entry with the same natural key.
// RevokedBefore and ExpiresAt keep the later value, so an entry never moves
// back. When neither moves, the stored entry stands as it is (changed is
// false) and no change is recorded; when one moves, the write's source and
// reason replace the stored ones.
func Merge(stored, w Revocation) (merged Revocation, changed bool) {
	merged = stored
	if w.RevokedBefore.After(stored.RevokedBefore) {
		merged.RevokedBefore, changed = w.RevokedBefore, true
	}
	if w.ExpiresAt.After(stored.ExpiresAt) {
		merged.ExpiresAt, changed = w.ExpiresAt, true
	}
	if changed {
		merged.Source, merged.Reason = w.Source, w.Reason
	}
	return merged, changed
}
