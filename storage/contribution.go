package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AllSources, given to Store.Unrevoke, removes every contribution.
const AllSources = "all"

// ErrNoContribution: an unrevoke named a source that has not contributed to
// the entry. Nothing was removed.
var ErrNoContribution = errors.New("no contribution from that source")

// Contribution is what one source class put into an entry. An entry's
// natural key can be written by several sources (an operator, a FusionAuth
// event, a logout route, an OIDC back-channel logout…); the entry keeps each
// class's contribution apart, so that an unrevoke takes out what it names
// and leaves the rest standing.
type Contribution struct {
	// Source is the class (SourceClass): "admin", "fusionauth",
	// "logout-route", "backchannel-logout"…
	Source string `json:"source"`
	// RevokedBefore and ExpiresAt are the latest this class wrote; like the
	// entry's, they never move back.
	RevokedBefore time.Time `json:"revoked_before,omitzero"`
	ExpiresAt     time.Time `json:"expires_at"`
	// LastSource and Reason are those of the write that last moved this
	// contribution (for example "fusionauth:<event id>").
	LastSource string `json:"last_source,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// SourceClass is the class of a revocation's source: the part before the
// first ':'. "fusionauth:<event id>" is "fusionauth",
// "backchannel-logout:<iss>:<jti>" is "backchannel-logout", and "admin" or
// "logout-route" are their own class. Contributions are kept, and
// unrevoked, per class.
func SourceClass(source string) string {
	class, _, _ := strings.Cut(source, ":")
	return class
}

// MaxTextBytes bounds every text field of a revocation (Validate).
const MaxTextBytes = 1024

// Source is the source class:detail, within MaxTextBytes: a detail that
// would not fit (an OP's long jti) is its SHA-256 instead, so that the
// same detail is still the same source, and the class is kept.
func Source(class, detail string) string {
	if len(class)+1+len(detail) <= MaxTextBytes {
		return class + ":" + detail
	}
	sum := sha256.Sum256([]byte(detail))
	return class + ":sha256:" + hex.EncodeToString(sum[:])
}

// Contributions returns the entry's contributions, sorted by class. An entry
// stored before contributions were recorded has none: it counts as one
// contribution, of its own source's class, with its own value.
func Contributions(r Revocation) []Contribution {
	if len(r.Contributions) > 0 {
		return slices.Clone(r.Contributions)
	}
	return []Contribution{contributionOf(r)}
}

func contributionOf(r Revocation) Contribution {
	return Contribution{Source: SourceClass(r.Source), RevokedBefore: r.RevokedBefore, ExpiresAt: r.ExpiresAt,
		LastSource: r.Source, Reason: r.Reason}
}

// Sources lists the classes that contributed to r.
func Sources(r Revocation) []string {
	var out []string
	for _, c := range Contributions(r) {
		out = append(out, c.Source)
	}
	return out
}

// Remove takes the contributions of one source class (or AllSources) out
// of a stored entry. It returns what remains, merged (the latest
// revoked_before and expires_at of the remaining contributions, with the
// source and reason of the latest of them), whether anything remains, and
// what it removed. A class with no contribution is ErrNoContribution.
func Remove(stored Revocation, source string) (remaining Revocation, left bool, removed []Contribution, err error) {
	var keep []Contribution
	for _, c := range Contributions(stored) {
		if source == AllSources || c.Source == source {
			removed = append(removed, c)
		} else {
			keep = append(keep, c)
		}
	}
	if len(removed) == 0 {
		return stored, true, nil, fmt.Errorf("%w: entry %d has contributions from %s only; unrevoke one of them or %q",
			ErrNoContribution, stored.ID, strings.Join(Sources(stored), ", "), AllSources)
	}
	if len(keep) == 0 {
		return stored, false, removed, nil
	}
	remaining = stored
	remaining.Contributions = keep
	remaining.RevokedBefore, remaining.ExpiresAt = time.Time{}, time.Time{}
	var top Contribution
	for _, c := range keep {
		if c.RevokedBefore.After(top.RevokedBefore) ||
			(c.RevokedBefore.Equal(top.RevokedBefore) && c.ExpiresAt.After(top.ExpiresAt)) {
			top = c
		}
		remaining.RevokedBefore = later(remaining.RevokedBefore, c.RevokedBefore)
		remaining.ExpiresAt = later(remaining.ExpiresAt, c.ExpiresAt)
	}
	remaining.Source, remaining.Reason = top.LastSource, top.Reason
	return remaining, true, removed, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
