// Package storage is tokengate's revocation model: the Revocation type, the
// Store contract every backend implements (embedded file, PostgreSQL), and the
// in-memory Index the check path reads. It imports nothing of tokengate's.
//
// Every revocation is scoped to an issuer. Four kinds exist:
//
//	token    a jti        revoked when the token's jti matches
//	session  a sid        revoked when the token's sid matches
//	subject  a sub (+aud) revoked when the token's iat ≤ floor(revoked_before)
//	cutoff   the issuer   revoked when the token's iat ≤ floor(revoked_before)
//	         (or one of its audiences)
//
// A token's effective cutoff is the maximum over every level that applies to
// it; taking only one level lets revoked tokens through.
package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is what a revocation matches.
type Kind uint8

const (
	KindToken Kind = iota + 1
	KindSession
	KindSubject
	KindCutoff
)

var kindNames = map[Kind]string{KindToken: "token", KindSession: "session", KindSubject: "subject", KindCutoff: "cutoff"}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if name == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown revocation kind %q", s)
}

// Revocation is one entry. Its natural key is (Kind, Issuer, Key, Audience):
// writing the same key again merges into the existing entry.
type Revocation struct {
	// ID is assigned by the store; stable for the life of the entry.
	ID int64 `json:"id"`
	// Seq is the change that last wrote this entry.
	Seq    uint64 `json:"seq"`
	Kind   Kind   `json:"kind"`
	Issuer string `json:"issuer"`
	// Key is the jti, sid or sub; empty for a cutoff.
	Key string `json:"key,omitempty"`
	// Audience narrows a subject or cutoff to one audience (an application);
	// empty means every audience.
	Audience string `json:"audience,omitempty"`
	// RevokedBefore: tokens issued at or before it (to the second) are
	// revoked. Subject and cutoff only; it never moves back.
	RevokedBefore time.Time `json:"revoked_before,omitzero"`
	// ExpiresAt is when the entry can be dropped: no token it matches can
	// still be valid by then. It never moves back.
	ExpiresAt time.Time `json:"expires_at"`
	// Source says where the revocation came from (for example
	// "fusionauth:<event id>", "admin", "logout-route") and Reason why: those
	// of the write that last moved the entry, or after an unrevoke of the
	// latest remaining contribution.
	Source    string    `json:"source,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Contributions are what each source class wrote, sorted by class; the
	// entry's RevokedBefore and ExpiresAt are their merge (the latest of
	// each). Set by the store: a write's own are ignored.
	Contributions []Contribution `json:"contributions,omitempty"`
}

// Validate checks that r is a complete revocation of its kind.
func (r Revocation) Validate() error {
	var errs []error
	if r.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	switch r.Kind {
	case KindToken, KindSession:
		if r.Key == "" {
			errs = append(errs, fmt.Errorf("a %s revocation needs its id", r.Kind))
		}
		if r.Audience != "" {
			errs = append(errs, fmt.Errorf("a %s revocation has no audience", r.Kind))
		}
	case KindSubject:
		if r.Key == "" {
			errs = append(errs, errors.New("a subject revocation needs the subject"))
		}
	case KindCutoff:
		if r.Key != "" {
			errs = append(errs, errors.New("a cutoff has no key"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown kind %d", r.Kind))
	}
	if (r.Kind == KindSubject || r.Kind == KindCutoff) && r.RevokedBefore.IsZero() {
		errs = append(errs, fmt.Errorf("a %s revocation needs revoked_before", r.Kind))
	}
	if r.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("expires_at is required"))
	}
	if SourceClass(r.Source) == AllSources {
		errs = append(errs, fmt.Errorf("source class %q is reserved", AllSources))
	}
	// Text every backend stores as given: UTF-8 without NUL (PostgreSQL
	// refuses both), and a natural key its unique index can hold.
	for name, s := range map[string]string{"issuer": r.Issuer, "key": r.Key, "audience": r.Audience, "source": r.Source, "reason": r.Reason} {
		switch {
		case len(s) > MaxTextBytes:
			errs = append(errs, fmt.Errorf("%s longer than %d bytes", name, MaxTextBytes))
		case !utf8.ValidString(s):
			errs = append(errs, fmt.Errorf("%s is not UTF-8", name))
		case strings.IndexByte(s, 0) >= 0:
			errs = append(errs, fmt.Errorf("%s holds a NUL byte", name))
		}
	}
	if len(r.Issuer)+len(r.Key)+len(r.Audience) > 2048 {
		errs = append(errs, errors.New("issuer, key and audience longer than 2048 bytes together"))
	}
	// Times every backend stores (the feed's JSON holds years 0 to 9999).
	for name, t := range map[string]time.Time{"revoked_before": r.RevokedBefore, "expires_at": r.ExpiresAt, "created_at": r.CreatedAt} {
		if y := t.UTC().Year(); !t.IsZero() && (y < 0 || y > 9999) {
			errs = append(errs, fmt.Errorf("%s outside the years 0 to 9999", name))
		}
	}
	return errors.Join(errs...)
}

// Op is what a change did.
type Op uint8

const (
	OpPut    Op = iota + 1 // the entry now is Revocation
	OpDelete               // the entry with Revocation's natural key is gone
)

// Change is one entry of the change feed.
type Change struct {
	Seq        uint64
	Op         Op
	Revocation Revocation
	// At is when the change was committed, for sync-lag metrics.
	At time.Time
}

// Write is one atomic write: revocations merged in, optionally on behalf of
// an event that must be applied at most once.
type Write struct {
	Revocations []Revocation
	// EventID, when set, makes the write idempotent across deliveries (and
	// across replicas): a second write with the same id changes nothing.
	EventID string
	// EventExpiresAt is how long the sender may redeliver the event. The
	// store remembers the id until EventRetention, which is never earlier.
	EventExpiresAt time.Time
}

// EventRetention is when a store may forget w's event id: the later of
// EventExpiresAt and the ExpiresAt of every revocation the event carries. As
// long as an entry the event wrote can be live, a redelivery must not write
// it again (it would undo an unrevoke, or move a cutoff the sender did not
// move). An EventExpiresAt already past on arrival is therefore not an error:
// the id is kept for its revocations' retention, and when that is past too
// the event revokes nothing live and the next Sweep forgets it.
func (w Write) EventRetention() time.Time {
	t := w.EventExpiresAt
	for _, r := range w.Revocations {
		if r.ExpiresAt.After(t) {
			t = r.ExpiresAt
		}
	}
	return t
}

// Result says what a Write did.
type Result struct {
	// Revocations are the entries as stored after the write.
	Revocations []Revocation
	// Seq is the last change this write made; 0 when it changed nothing.
	Seq uint64
	// Position is where a reader has the write's entries: Feed is the feed's
	// identity read in the write's own transaction, and Seq the latest
	// change that wrote any entry with the natural key of one of the
	// write's revocations, as stored when the write committed. It equals
	// Result.Seq when the write changed something; when it changed nothing
	// (a merge that moved no value, or a Duplicate) it is the change that
	// last wrote the stored entries, or 0 when none is stored. A reader of
	// Position.Feed that applied Position.Seq has every one of them (or
	// something later); a reader of any other feed has no such guarantee,
	// whatever its sequence: numbers of two feeds are never comparable.
	Position Position
	// Duplicate is true when the event id had been seen: nothing was written.
	Duplicate bool
	// Committed, when the store reports it, is every change the
	// transaction that committed this write appended to the feed
	// Position.Feed, in sequence order: this write's and those of the
	// writes batched with it (the slice is shared among them: read only).
	// Nil when the transaction changed nothing, or when the store does not
	// report it. A follower applies it without reading the feed back
	// (Follower.WaitForWrite), so a store must not report it when its
	// follower reads the feed from elsewhere than the server the write
	// committed on (a standby): the follower would get ahead of its feed.
	Committed []Change
}

// Applied is one write's outcome in ApplyBatch: its Result, or the error
// that failed it (and no other write of the batch).
type Applied struct {
	Result Result
	Err    error
}

// Unrevoked says what an unrevoke did.
type Unrevoked struct {
	// Removed are the contributions taken out, sorted by class.
	Removed []Contribution
	// Change is the feed's record of it: OpPut with the entry as it remains
	// (the merge of the contributions left), or OpDelete when none is left.
	Change Change
	// Position is the change's place in the feed: Change.Seq, in the feed
	// whose identity was read in the unrevoke's own transaction.
	Position Position
}

// ListOptions filter List. Zero values match everything.
type ListOptions struct {
	Issuer  string
	Kind    Kind
	Key     string
	AfterID int64 // cursor: entries with a larger id
	Limit   int   // default 100, at most 1000
}

// Position is a reader's place in a store's change feed.
type Position struct {
	// Feed is the feed's identity. It is fixed for a feed's history and
	// changes when that history may have been rewritten: a new database
	// or file, a restore, a promoted standby. Sequence numbers of two
	// feeds are never comparable.
	Feed string
	// Seq is the last change applied.
	Seq uint64
}

// Sentinel errors.
var (
	ErrNotFound = errors.New("revocation not found")
	// ErrTruncated means the change feed no longer holds the changes after
	// the given sequence: the reader must reload a snapshot.
	ErrTruncated = errors.New("change feed truncated")
	ErrInvalid   = errors.New("invalid revocation")
	// ErrFeedReset means the change feed is not the one the reader followed:
	// its identity changed (a re-created database, a restore, a promoted
	// standby) or it moved back below the reader's sequence. Sequence
	// numbers from before are meaningless: the reader must reload a
	// snapshot, and whatever it held that the new feed lacks is gone.
	ErrFeedReset = errors.New("change feed reset")
	// ErrWriteFeedReplaced means a write committed to a feed that was
	// replaced (a failover, a restore) before this reader applied it: the
	// write may be in neither the new feed nor the reader's index, so it
	// must not be acknowledged. The sender must retry. It is an
	// ErrFeedReset.
	ErrWriteFeedReplaced = fmt.Errorf("%w: the write's feed was replaced before this replica applied it", ErrFeedReset)
	// ErrUnavailable wraps errors from an unreachable store.
	ErrUnavailable = errors.New("store unavailable")
)

// Store keeps revocations durably and publishes every change in order.
//
// Every backend guarantees, and storagetest proves:
//   - Apply is atomic: all of a Write's revocations, or none.
//   - Apply is idempotent: merging an entry that is already there changes
//     nothing and makes no change in the feed.
//   - RevokedBefore and ExpiresAt never move back on a write: a merge keeps
//     the later of the stored and the written value.
//   - Each source class's contribution is kept apart (Contribution); the
//     entry's value is their merge. A class first contributing a value the
//     entry already holds is recorded but makes no change in the feed.
//   - Unrevoke removes the contributions of the class it names (or
//     AllSources) and no other: the entry stands with the merge of what is
//     left (an OpPut, which may move it back), or goes (an OpDelete) when
//     nothing is. Event ids stay remembered: a redelivery of an event whose
//     contribution was unrevoked is still a duplicate.
//   - A Write with an EventID seen before is a no-op (Result.Duplicate),
//     until the id's EventRetention has passed on the store's clock and a
//     Sweep has forgotten it. An EventExpiresAt already past on arrival
//     does not shorten that.
//   - Time is the store's clock (the embedded file's: time.Now; PostgreSQL's:
//     the database server's, one clock for every replica; either can be
//     injected for tests): it stamps CreatedAt and Change.At and decides
//     whether an event id is still remembered. Snapshot and Sweep take now
//     explicitly: the caller's clock decides what Snapshot skips, and what
//     Sweep deletes unless the backend has one clock of its own (see
//     postgres.SweepMargin).
//   - The feed has an identity (Position.Feed), reported by Snapshot and
//     checked by Changes: a reader of another feed, or of a feed whose last
//     sequence is below the reader's, gets ErrFeedReset, never changes.
//   - Every change gets the next sequence number (no gaps), and a change is
//     visible to Changes only when every change with a smaller number is:
//     a reader that applied N has seen every change ≤ N, even under
//     concurrent writers.
//   - Apply and Unrevoke report the Position of the write (Result.Position,
//     Unrevoked.Position): the feed identity read inside the write's own
//     transaction, with the sequence that makes its entries visible, so
//     that a reader can tell the write's feed from a later one.
//   - ApplyBatch applies its writes in one transaction (one commit, one
//     durable flush), each as if Applied alone, one after another in the
//     order given: the same Results, the same changes in the feed in that
//     order. An event id twice in a batch is applied once: the later write
//     is a Duplicate. A write that is invalid, or fails on its own, fails
//     alone (its Applied.Err) and the others commit; a batch the store
//     cannot commit (unreachable, or ctx ended) fails every write with
//     that error and commits none. It returns one Applied per write, in
//     order.
//   - Apply returns only after the write is durable.
//   - Every method returns promptly once ctx is cancelled.
type Store interface {
	Apply(ctx context.Context, w Write) (Result, error)
	// ApplyBatch applies writes in one transaction; see above. A write
	// with an Applied.Err of ErrUnavailable (or ctx's error) may have
	// committed all the same, its answer lost: its sender retries, which
	// the event id or the merge makes a no-op.
	ApplyBatch(ctx context.Context, ws []Write) []Applied
	// Unrevoke removes the contributions of one source class (or
	// AllSources) from the entry with the given id. ErrNotFound: no such
	// entry; ErrNoContribution: the class has not contributed to it.
	Unrevoke(ctx context.Context, id int64, source string) (Unrevoked, error)
	Get(ctx context.Context, id int64) (Revocation, error)
	List(ctx context.Context, opts ListOptions) ([]Revocation, error)
	// Snapshot calls fn with every entry not expired at now, from one
	// consistent view, and returns the feed position that view reflects.
	Snapshot(ctx context.Context, now time.Time, fn func(Revocation) error) (Position, error)
	// Changes returns up to limit changes with Seq > after.Seq, in order. It
	// returns ErrFeedReset when the feed is no longer after.Feed or its last
	// sequence is below after.Seq, and ErrTruncated when changes after
	// after.Seq were pruned.
	Changes(ctx context.Context, after Position, limit int) ([]Change, error)
	// Notify returns a channel that receives (without blocking the store)
	// when changes may be available. It may miss some: readers also poll.
	Notify() <-chan struct{}
	// Sweep deletes entries and event ids expired at now, and changes older
	// than keepChanges. It returns how many entries it deleted. A store
	// shared by many replicas may go by its own clock instead, never later
	// than now would: PostgreSQL without an injected clock uses the server's
	// now() minus a margin, so that a replica whose clock runs ahead cannot
	// delete revocations that are live for the others.
	Sweep(ctx context.Context, now time.Time, keepChanges time.Duration) (int, error)
	Close() error
}

// Pusher is a Store whose notifications carry the changes themselves, so
// that a follower woken by one applies them without reading the feed: with
// many replicas, a read per replica per change is most of the store's load
// and of each replica's work.
type Pusher interface {
	// Pushed takes the changes notified since the last call, in
	// notification order, which is sequence order, and the identity of the
	// feed they belong to. complete is false when some notification since
	// the last call carried no change (it was too large, or some may have
	// been missed while the notifications' connection was down): then the
	// feed must be read.
	Pushed() Push
	// ForgetPushed drops what was notified so far, and the numbers seen:
	// the follower reloaded, and numbers notified before are no measure
	// of the feed it now follows.
	ForgetPushed()
}

// Push is what a Pusher's notifications carried since the last call.
type Push struct {
	// Feed is the identity of the feed the changes belong to.
	Feed    string
	Changes []Change
	// Complete: every notification carried its change.
	Complete bool
	// MovedBack: a notification's sequence number was at or below one
	// notified before it on the same connection. Changes are notified in
	// commit order, which is sequence order, so the feed moved back (a
	// restore into the same database, say) and its numbers are reused:
	// the follower must reload, not skip what it thinks it has.
	MovedBack bool
}
