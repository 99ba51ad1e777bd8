package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
)

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 64 << 10

// AdminOptions configure the admin API.
type AdminOptions struct {
	// Token authenticates callers (Authorization: Bearer <token>). Empty
	// turns the admin API off: its paths answer 404.
	Token       string
	Revoker     *Revoker
	Store       storage.Store
	Verifier    AdminVerifier
	Revocations Revocations
	// Fresh says whether this replica's revocation view can be trusted
	// (loaded, and not older than max_staleness); introspection answers 503
	// when it cannot. Nil means always.
	Fresh  func() bool
	Logger *slog.Logger
	Now    func() time.Time
}

// AdminVerifier verifies presented tokens (revoke by value) and reads all
// their claims (introspection).
type AdminVerifier interface {
	Verifier
	Introspect(ctx context.Context, raw string) (*token.Identity, map[string]any, error)
}

// Admin is the admin API: revoke, list, unrevoke, introspect.
type Admin struct {
	opts AdminOptions
}

// Mount registers the admin routes on mux.
func (a *Admin) Mount(mux *http.ServeMux) {
	mux.Handle("POST /v1/revocations", a.auth(a.create))
	mux.Handle("GET /v1/revocations", a.auth(a.list))
	mux.Handle("GET /v1/revocations/{id}", a.auth(a.get))
	mux.Handle("DELETE /v1/revocations/{id}", a.auth(a.delete))
	mux.Handle("POST /v1/introspect", a.auth(a.introspect))
}

// NewAdmin returns the admin API.
func NewAdmin(opts AdminOptions) *Admin {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Fresh == nil {
		opts.Fresh = func() bool { return true }
	}
	return &Admin{opts: opts}
}

// auth admits a request only with the admin token, compared in constant
// time.
func (a *Admin) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Token == "" {
			http.NotFound(w, r)
			return
		}
		scheme, presented, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || !equal(strings.TrimSpace(presented), a.opts.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tokengate-admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid admin token is required")
			return
		}
		next(w, r)
	})
}

// Entry is a revocation as the admin API shows it.
type Entry struct {
	ID            int64      `json:"id"`
	Kind          string     `json:"kind"`
	Issuer        string     `json:"issuer"`
	JTI           string     `json:"jti,omitempty"`
	SID           string     `json:"sid,omitempty"`
	Subject       string     `json:"subject,omitempty"`
	Audience      string     `json:"audience,omitempty"`
	RevokedBefore *time.Time `json:"revoked_before,omitempty"`
	ExpiresAt     time.Time  `json:"expires_at"`
	Source        string     `json:"source,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	// Contributions are what each source class put into the entry; its
	// revoked_before and expires_at are their merge.
	Contributions []storage.Contribution `json:"contributions,omitempty"`
}

func entryOf(r storage.Revocation) Entry {
	e := Entry{ID: r.ID, Kind: r.Kind.String(), Issuer: r.Issuer, Audience: r.Audience, ExpiresAt: r.ExpiresAt,
		Source: r.Source, Reason: r.Reason, CreatedAt: r.CreatedAt, Contributions: storage.Contributions(r)}
	switch r.Kind {
	case storage.KindToken:
		e.JTI = r.Key
	case storage.KindSession:
		e.SID = r.Key
	case storage.KindSubject:
		e.Subject = r.Key
	}
	if !r.RevokedBefore.IsZero() {
		t := r.RevokedBefore
		e.RevokedBefore = &t
	}
	return e
}

// RevokeRequest is the body of POST /v1/revocations: either a kind and its
// fields, or a token to revoke by value.
type RevokeRequest struct {
	Kind          string     `json:"kind,omitempty"`
	Issuer        string     `json:"issuer,omitempty"`
	JTI           string     `json:"jti,omitempty"`
	SID           string     `json:"sid,omitempty"`
	Subject       string     `json:"subject,omitempty"`
	Audience      string     `json:"audience,omitempty"`
	RevokedBefore *time.Time `json:"revoked_before,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	Token         string     `json:"token,omitempty"`
}

func (a *Admin) create(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	rev, err := a.revocationFor(r, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	res, err := a.opts.Revoker.Revoke(r.Context(), storage.Write{Revocations: []storage.Revocation{rev}})
	if err != nil {
		a.fail(w, r, "revoke", err)
		return
	}
	stored := res.Revocations[0]
	a.opts.Logger.Info("revoked", "source", "admin", "kind", stored.Kind.String(), "id", stored.ID,
		"issuer", stored.Issuer, "seq", res.Seq)
	status := http.StatusCreated
	if res.Seq == 0 {
		status = http.StatusOK // already revoked as asked: nothing changed
	}
	writeJSON(w, status, entryOf(stored))
}

// revocationFor validates a request and fills the defaults: revoked_before
// now, and an expiry long enough for every token the entry can match.
func (a *Admin) revocationFor(r *http.Request, req RevokeRequest) (storage.Revocation, error) {
	now := a.opts.Now()
	if req.Token != "" {
		if req.Kind != "" {
			return storage.Revocation{}, errors.New("give either token or kind, not both")
		}
		id, err := a.opts.Verifier.Verify(r.Context(), req.Token)
		if err != nil {
			return storage.Revocation{}, fmt.Errorf("token does not verify: %w", err)
		}
		if id.TokenID == "" {
			return storage.Revocation{}, errors.New("token has no jti; revoke its subject or session instead")
		}
		iss, _ := a.opts.Revoker.Issuer(id.Issuer)
		return storage.Revocation{Kind: storage.KindToken, Issuer: id.Issuer, Key: id.TokenID,
			ExpiresAt: id.ExpiresAt.Add(iss.Leeway), Source: "admin", Reason: req.Reason}, nil
	}
	kind, err := storage.ParseKind(req.Kind)
	if err != nil {
		return storage.Revocation{}, err
	}
	iss, ok := a.opts.Revoker.Lookup(req.Issuer)
	if !ok {
		return storage.Revocation{}, fmt.Errorf("issuer %q is not configured: give an issuer's iss or its name in the configuration", req.Issuer)
	}
	rev := storage.Revocation{Kind: kind, Issuer: iss.Issuer, Audience: req.Audience, Source: "admin", Reason: req.Reason}
	fields := map[storage.Kind]string{storage.KindToken: req.JTI, storage.KindSession: req.SID, storage.KindSubject: req.Subject}
	for k, v := range fields {
		if k != kind && v != "" {
			return storage.Revocation{}, fmt.Errorf("a %s revocation does not take %s", kind, map[storage.Kind]string{
				storage.KindToken: "jti", storage.KindSession: "sid", storage.KindSubject: "subject"}[k])
		}
	}
	rev.Key = fields[kind]
	switch kind {
	case storage.KindToken:
		if req.ExpiresAt == nil {
			return storage.Revocation{}, errors.New("a token revocation needs expires_at (the token's exp)")
		}
		// The token itself is not here to say when it expires: keep the
		// entry for as long as any token of the issuer can live, so that a
		// too-early expires_at cannot let it back.
		rev.ExpiresAt = req.ExpiresAt.Add(iss.Leeway)
		if keep := iss.Keep(now); keep.After(rev.ExpiresAt) {
			rev.ExpiresAt = keep
		}
	case storage.KindSession:
		rev.ExpiresAt = iss.KeepSession(now)
	case storage.KindSubject, storage.KindCutoff:
		rev.RevokedBefore = now
		if req.RevokedBefore != nil {
			rev.RevokedBefore = *req.RevokedBefore
		}
		// A cutoff never moves back: one in the future (a typo of 2052)
		// would deny every token it matches until then.
		if limit := now.Add(iss.Leeway); rev.RevokedBefore.After(limit) {
			return storage.Revocation{}, fmt.Errorf("revoked_before %s is in the future (more than the issuer's leeway of %s after %s); cutoffs never move back",
				rev.RevokedBefore.UTC().Format(time.RFC3339), iss.Leeway, now.UTC().Format(time.RFC3339))
		}
		rev.ExpiresAt = iss.Keep(rev.RevokedBefore)
	}
	if req.RevokedBefore != nil && kind != storage.KindSubject && kind != storage.KindCutoff {
		return storage.Revocation{}, fmt.Errorf("a %s revocation does not take revoked_before", kind)
	}
	if err := rev.Validate(); err != nil {
		return storage.Revocation{}, err
	}
	if !rev.ExpiresAt.After(now) {
		return storage.Revocation{}, fmt.Errorf("this %s revocation would revoke nothing: every token it matches has already expired", kind)
	}
	return rev, nil
}

// ListResponse is the body of GET /v1/revocations.
type ListResponse struct {
	Revocations []Entry `json:"revocations"`
	// NextCursor, when set, fetches the next page (?cursor=).
	NextCursor string `json:"next_cursor,omitempty"`
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := storage.ListOptions{Issuer: q.Get("issuer"), Key: q.Get("subject"), Limit: 100}
	if opts.Issuer != "" {
		if iss, ok := a.opts.Revoker.Lookup(opts.Issuer); ok {
			opts.Issuer = iss.Issuer // a name works too; an iss no longer configured is listed as given
		}
	}
	if k := q.Get("kind"); k != "" {
		kind, err := storage.ParseKind(k)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		opts.Kind = kind
	}
	if opts.Key != "" && opts.Kind == 0 {
		opts.Kind = storage.KindSubject
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "cursor must come from next_cursor")
			return
		}
		opts.AfterID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "invalid_request", "limit must be between 1 and 1000")
			return
		}
		opts.Limit = n
	}
	revs, err := a.opts.Store.List(r.Context(), opts)
	if err != nil {
		a.fail(w, r, "list", err)
		return
	}
	resp := ListResponse{Revocations: make([]Entry, 0, len(revs))}
	for _, rev := range revs {
		resp.Revocations = append(resp.Revocations, entryOf(rev))
	}
	if len(revs) == opts.Limit {
		resp.NextCursor = strconv.FormatInt(revs[len(revs)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *Admin) get(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	rev, err := a.opts.Store.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, "get", err)
		return
	}
	writeJSON(w, http.StatusOK, entryOf(rev))
}

// UnrevokeResponse is the body of DELETE /v1/revocations/{id}.
type UnrevokeResponse struct {
	// Removed are the contributions taken out.
	Removed []storage.Contribution `json:"removed"`
	// Remaining is the entry as it stands when other sources' parts are
	// left; Deleted is the entry as it was when none is, and it is gone.
	Remaining *Entry `json:"remaining,omitempty"`
	Deleted   *Entry `json:"deleted,omitempty"`
	// Seq is the change that recorded the unrevoke.
	Seq uint64 `json:"seq"`
}

// delete is an unrevoke: ?source= names the source class whose part goes
// (default admin: what operators put there), or all.
func (a *Admin) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	source := "admin"
	if q := r.URL.Query(); q.Has("source") {
		source = q.Get("source")
		if source == "" || storage.SourceClass(source) != source {
			writeError(w, http.StatusBadRequest, "invalid_request",
				"source is a source class (admin, fusionauth, logout-route, backchannel-logout, …) or all")
			return
		}
	}
	u, err := a.opts.Revoker.Unrevoke(r.Context(), id, source)
	if err != nil {
		a.fail(w, r, "unrevoke", err)
		return
	}
	c := u.Change
	a.opts.Logger.Info("unrevoked", "by", "admin", "source", source, "id", id, "kind", c.Revocation.Kind.String(),
		"issuer", c.Revocation.Issuer, "seq", c.Seq, "deleted", c.Op == storage.OpDelete)
	resp := UnrevokeResponse{Removed: u.Removed, Seq: c.Seq}
	entry := entryOf(c.Revocation)
	if c.Op == storage.OpDelete {
		resp.Deleted = &entry
	} else {
		resp.Remaining = &entry
	}
	writeJSON(w, http.StatusOK, resp)
}

// introspect is RFC 7662: form field token in; {"active": true, …claims}
// for a valid, unrevoked token, and only {"active": false} otherwise.
func (a *Admin) introspect(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "form body expected")
		return
	}
	inactive := map[string]any{"active": false}
	w.Header().Set("Cache-Control", "no-store")
	id, claims, err := a.opts.Verifier.Introspect(r.Context(), r.PostForm.Get("token"))
	if err != nil {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	if !a.opts.Fresh() {
		// Whether it is revoked cannot be said: not "active", not "inactive".
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "this replica's revocations are not current")
		return
	}
	keys := a.opts.Revocations.Keys(id.Issuer, id.TokenID, id.SessionID, id.Subject, id.Audience)
	if a.opts.Revocations.Revoked(keys, id.IssuedAt, a.opts.Now()) {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	out := claims
	out["active"] = true
	out["token_type"] = "Bearer"
	writeJSON(w, http.StatusOK, out)
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "invalid_request", "id must be a positive integer")
		return 0, false
	}
	return id, true
}

func (a *Admin) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	status, reason := statusFor(err)
	if status >= 500 {
		a.opts.Logger.Warn("admin request failed", "op", op, "err", err)
	}
	writeError(w, status, reason, err.Error())
}

// decodeJSON reads a bounded JSON body with no unknown fields; on failure it
// answers 400 (or 413) itself.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("body larger than %d bytes", tooBig.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, "invalid_json", err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "invalid_json", "one JSON value expected")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason, description string) {
	writeJSON(w, status, map[string]string{"error": reason, "error_description": description})
}
