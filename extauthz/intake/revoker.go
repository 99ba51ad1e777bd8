// Package intake turns revocation requests arriving over HTTP — the admin
// API, FusionAuth webhooks, OIDC Back-Channel Logout — into durable store
// writes. A write is answered with success only after it is committed and
// applied to this replica's index, so a sender that sees an error retries
// and nothing acknowledged is lost. Bad input is a 4xx and writes nothing.
package intake

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
)

// DefaultSessionLifetime is how long a session can live when the issuer
// does not say: FusionAuth's default refresh-token lifetime.
const DefaultSessionLifetime = 30 * 24 * time.Hour

// Issuer is what intake needs to know of a configured issuer: how long its
// tokens and sessions can live, which bounds how long a revocation must be
// kept.
type Issuer struct {
	Name             string
	Issuer           string
	MaxTokenLifetime time.Duration
	Leeway           time.Duration
	// SessionLifetime is the longest a session (a refresh token, an OIDC
	// session: what a token's sid names) goes on minting tokens; zero
	// means DefaultSessionLifetime.
	SessionLifetime time.Duration
}

// Follower makes a committed write visible in this replica's index.
type Follower interface {
	// WaitFor returns nil only once the index follows pos.Feed and has
	// applied pos.Seq; storage.ErrWriteFeedReplaced when the feed was
	// replaced first.
	WaitFor(ctx context.Context, pos storage.Position) error
	// Mark is where the index stands, taken before a write is sent;
	// WaitForWrite is WaitFor for that write's result, which may apply
	// the changes its transaction committed instead of reading them.
	Mark() storage.Mark
	WaitForWrite(ctx context.Context, mark storage.Mark, res storage.Result) error
}

// Verifier verifies presented tokens (revoke by value, introspection).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*token.Identity, error)
}

// Revocations answers whether a verified token is revoked.
type Revocations interface {
	Keys(issuer, jti, sid, sub string, audiences []string) *storage.Keys
	Revoked(k *storage.Keys, iat, now time.Time) bool
}

// Held is what a Revoker reads of this replica's index, to skip writing
// what it already holds (*storage.Index).
type Held interface {
	Entry(kind storage.Kind, issuer, key, audience string, now time.Time) (before, expires time.Time, ok bool)
}

// Revoker writes revocations: durable, then visible in this replica's index.
type Revoker struct {
	store    storage.Store
	follower Follower
	index    Held              // nil: none known, every logout writes
	issuers  map[string]Issuer // by iss
	byName   map[string]Issuer
	now      func() time.Time
	// loggedOut remembers the logouts written here (RevokeLogout).
	loggedOut logoutMemory
}

// NewRevoker returns a Revoker for the configured issuers. Every reference
// must mean one issuer: an iss is required and unique, a name (optional) is
// unique and is no other issuer's iss. A follower that tells its index
// (Index() *storage.Index, as storage.Follower does) lets RevokeLogout skip
// writing what the index already holds.
func NewRevoker(s storage.Store, f Follower, issuers []Issuer, now func() time.Time) (*Revoker, error) {
	if now == nil {
		now = time.Now
	}
	m := make(map[string]Issuer, len(issuers))
	byName := make(map[string]Issuer, len(issuers))
	var errs []error
	for i, iss := range issuers {
		switch _, dup := m[iss.Issuer]; {
		case iss.Issuer == "":
			errs = append(errs, fmt.Errorf("issuer %d (%q): no iss", i, iss.Name))
		case dup:
			errs = append(errs, fmt.Errorf("issuer %d: iss %q is configured twice", i, iss.Issuer))
		}
		m[iss.Issuer] = iss
		if iss.Name == "" {
			continue // referred to by its iss only
		}
		if _, dup := byName[iss.Name]; dup {
			errs = append(errs, fmt.Errorf("issuer %d: name %q is used twice", i, iss.Name))
		}
		byName[iss.Name] = iss
	}
	for _, iss := range issuers {
		if other, ok := m[iss.Name]; ok && iss.Name != "" && other.Issuer != iss.Issuer {
			errs = append(errs, fmt.Errorf("issuer %q: its name is the iss of another issuer", iss.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &Revoker{store: s, follower: f, issuers: m, byName: byName, now: now}
	if p, ok := f.(interface{ Index() *storage.Index }); ok {
		if x := p.Index(); x != nil {
			r.index = x
		}
	}
	return r, nil
}

// Issuer returns the configured issuer with this iss.
func (r *Revoker) Issuer(iss string) (Issuer, bool) {
	i, ok := r.issuers[iss]
	return i, ok
}

// Lookup returns the configured issuer an operator means: the one with this
// iss or, failing that, with this name. (NewRevoker refuses a name that is
// another issuer's iss, so ref means one issuer.) An empty ref means none.
func (r *Revoker) Lookup(ref string) (Issuer, bool) {
	if ref == "" {
		return Issuer{}, false
	}
	if i, ok := r.issuers[ref]; ok {
		return i, true
	}
	i, ok := r.byName[ref]
	return i, ok
}

// Keep is when an entry made at `from` for this issuer can be dropped: no
// token issued before `from` can still be valid by then.
func (i Issuer) Keep(from time.Time) time.Time {
	return from.Add(i.MaxTokenLifetime + i.Leeway)
}

// KeepSession is when a session entry made at `from` can be dropped. A
// session outlives any one token by refreshing (and FusionAuth's
// /oauth2/logout does not end its refresh token), so it may mint tokens
// until from + the session lifetime, and the last of them lives the
// issuer's max token lifetime (+ leeway) more.
func (i Issuer) KeepSession(from time.Time) time.Time {
	l := i.SessionLifetime
	if l <= 0 {
		l = DefaultSessionLifetime
	}
	return from.Add(l + i.MaxTokenLifetime + i.Leeway)
}

// Revoke commits the write and waits until this replica's index has it:
// the index must follow the feed the write committed to
// (Result.Position.Feed) and have applied its position. A write whose feed
// was replaced first (a failover before this replica read it) is refused
// with storage.ErrWriteFeedReplaced, a 503: the new feed may lack it, and
// the sender must retry.
//
// A duplicate (an event id already written, perhaps through another replica
// whose answer the sender lost) writes nothing; it is answered only once the
// entries the original wrote, as stored (the store reports their position,
// read in the same transaction that found the duplicate), are in this
// replica's index too, so that a sender that retries after a lost answer
// gets the same guarantee as the first delivery. So is a write that changed
// nothing (its entries already held as much).
func (r *Revoker) Revoke(ctx context.Context, w storage.Write) (storage.Result, error) {
	for _, rev := range w.Revocations {
		if _, ok := r.issuers[rev.Issuer]; !ok {
			return storage.Result{}, fmt.Errorf("%w: issuer %q is not configured", ErrIssuerUnknown, rev.Issuer)
		}
	}
	mark := r.follower.Mark()
	res, err := r.store.Apply(ctx, w)
	if err != nil {
		return res, err
	}
	// Seq 0: nothing stored to wait for (a duplicate whose entries were
	// unrevoked since).
	if res.Position.Seq != 0 {
		if err := r.follower.WaitForWrite(ctx, mark, res); err != nil {
			return res, fmt.Errorf("committed, but not applied here: %w", err)
		}
	}
	return res, nil
}

// RevokeLogout revokes a token presented on a logout route: its jti, and
// its session or subject when asked. A token without a jti falls back to
// its session, or else to its subject as of its iat, so that the logout
// always takes the token out.
//
// The logout is as of now, whether or not the token was already revoked
// (revoked): the subject's cutoff is now (every token of the user so far),
// the session is kept from now. A token revoked by its jti alone, used on a
// revoke-subject route, so still logs its user out everywhere.
//
// The first logout of a token (with the route's session and subject
// flags) on this replica writes all of it, even what the index holds from
// another source, so that each entry carries a logout-route contribution:
// an operator taking back the admin part (?source=admin) does not undo the
// user's logout. This replica remembers it (a bounded set of hashes); on
// later logouts what its index already holds is not written again: a token
// entry kept at least as long, a live session entry, a subject cutoff
// (every audience) at or after the token's iat: that token was logged out
// by its subject already. When nothing is left, RevokeLogout returns nil
// without a store call. So replays of a logged-out token on a replica that
// remembers it cost no transaction. (The index holds only committed
// writes, so what it holds is durable.)
//
// That memory is per replica, lost on restart, and bounded (when full, one
// is forgotten), so it does not stop a stolen revoked token from
// logging its user out again: once on each replica, again after a restart
// or once the memory has forgotten it, until the token expires. Each such
// logout moves the user's cutoff (on a revoke-subject route) to now, past
// the user's newer sign-ins: their sessions end too. A logout route can
// only log out, so that is the most a replay does.
func (r *Revoker) RevokeLogout(ctx context.Context, id *token.Identity, session, subject, revoked bool) error {
	_ = revoked // dated alike; the first logout here writes either way
	iss, ok := r.issuers[id.Issuer]
	if !ok {
		return fmt.Errorf("%w: %q", ErrIssuerUnknown, id.Issuer)
	}
	now := r.now()
	wantToken := id.TokenID != ""
	wantSession := id.SessionID != "" && (session || id.TokenID == "")
	wantSubject := id.Subject != "" && (subject || (!wantToken && !wantSession))
	if !wantToken && !wantSession && !wantSubject {
		return errors.New("the token has no jti, sid or sub to revoke")
	}
	// The first logout of the token on this replica writes it all, even
	// what the index holds (from an admin, a webhook): so the entries carry
	// the logout-route contribution, and taking another source's part back
	// does not undo the user's logout. Later ones skip what is held.
	key := logoutKey(id, session, subject)
	again := r.loggedOut.has(key)
	held := func(kind storage.Kind, key string, enough func(before, expires time.Time) bool) bool {
		return again && r.holds(kind, id.Issuer, key, now, enough)
	}
	base := storage.Revocation{Issuer: id.Issuer, Source: "logout-route", Reason: "logout"}
	var revs []storage.Revocation
	if wantToken {
		t := base
		t.Kind, t.Key, t.ExpiresAt = storage.KindToken, id.TokenID, id.ExpiresAt.Add(iss.Leeway)
		if !held(storage.KindToken, id.TokenID, func(_, exp time.Time) bool {
			return !exp.Before(t.ExpiresAt)
		}) {
			revs = append(revs, t)
		}
	}
	if wantSession {
		s := base
		s.Kind, s.Key, s.ExpiresAt = storage.KindSession, id.SessionID, iss.KeepSession(now)
		// A live session entry is enough: it was kept a whole session
		// lifetime from its own revocation, and the session was revoked
		// from then on.
		if !held(storage.KindSession, id.SessionID, func(_, _ time.Time) bool { return true }) {
			revs = append(revs, s)
		}
	}
	if wantSubject {
		// Never before the token's own iat: an IdP clock ahead of ours (within
		// the leeway) must not let the logged-out token through.
		before := id.IssuedAt
		if subject && now.After(before) {
			before = now
		}
		s := base
		s.Kind, s.Key, s.RevokedBefore, s.ExpiresAt = storage.KindSubject, id.Subject, before, iss.Keep(before)
		if !held(storage.KindSubject, id.Subject, func(cut, _ time.Time) bool {
			return cut.Unix() >= id.IssuedAt.Unix()
		}) {
			revs = append(revs, s)
		}
	}
	if len(revs) == 0 {
		return nil // all held already: nothing to write
	}
	if _, err := r.Revoke(ctx, storage.Write{Revocations: revs}); err != nil {
		return err
	}
	r.loggedOut.add(key)
	return nil
}

// maxLoggedOut bounds the logouts a Revoker remembers. Forgetting one
// costs one more write of its entries, never a missed revocation.
const maxLoggedOut = 16384

// logoutMemory is the set of tokens this replica has logged out on a
// logout route (by logoutKey), bounded: when full, an arbitrary one is
// forgotten.
type logoutMemory struct {
	mu   sync.Mutex
	seen map[[sha256.Size]byte]struct{}
}

func (m *logoutMemory) has(k [sha256.Size]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.seen[k]
	return ok
}

func (m *logoutMemory) add(k [sha256.Size]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = make(map[[sha256.Size]byte]struct{})
	}
	if len(m.seen) >= maxLoggedOut {
		for old := range m.seen {
			delete(m.seen, old)
			break
		}
	}
	m.seen[k] = struct{}{}
}

// logoutKey identifies a token's logout on a route: its identity and what
// the route revokes. A hash, so that no token id is kept in the clear.
func logoutKey(id *token.Identity, session, subject bool) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range []string{id.Issuer, id.TokenID, id.SessionID, id.Subject, strconv.FormatInt(id.IssuedAt.Unix(), 10),
		strconv.FormatBool(session), strconv.FormatBool(subject)} {
		h.Write([]byte(strconv.Itoa(len(f))))
		h.Write([]byte{0})
		h.Write([]byte(f))
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// holds reports whether this replica's index has a live entry for the key
// (every audience) that enough says is enough.
func (r *Revoker) holds(kind storage.Kind, issuer, key string, now time.Time, enough func(before, expires time.Time) bool) bool {
	if r.index == nil {
		return false
	}
	before, expires, ok := r.index.Entry(kind, issuer, key, "", now)
	return ok && enough(before, expires)
}

// Unrevoke removes the contributions of one source class (or
// storage.AllSources) from an entry and waits until this replica's index
// has the result.
func (r *Revoker) Unrevoke(ctx context.Context, id int64, source string) (storage.Unrevoked, error) {
	u, err := r.store.Unrevoke(ctx, id, source)
	if err != nil {
		return u, err
	}
	if err := r.follower.WaitFor(ctx, u.Position); err != nil {
		return u, fmt.Errorf("committed, but not applied here: %w", err)
	}
	return u, nil
}

// ErrIssuerUnknown: a request names an issuer tokengate does not trust.
var ErrIssuerUnknown = errors.New("issuer not configured")

// statusFor maps an error to its HTTP status and reason, in one place.
func statusFor(err error) (int, string) {
	switch {
	case errors.Is(err, storage.ErrInvalid):
		return http.StatusBadRequest, "invalid_revocation"
	case errors.Is(err, ErrIssuerUnknown):
		return http.StatusBadRequest, "issuer_unknown"
	case errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, storage.ErrNoContribution):
		return http.StatusNotFound, "source_not_found"
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrFeedReset),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "store_unavailable"
	}
	return http.StatusServiceUnavailable, "store_error"
}
