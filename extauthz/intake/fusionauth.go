package intake

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
)

// MaxWebhookBody bounds a webhook body; FusionAuth events are a few KB.
const MaxWebhookBody = 1 << 20

// DefaultMaxClockSkew is how far FusionAuth's clock may run ahead of ours
// before an event's createInstant is clamped.
const DefaultMaxClockSkew = 5 * time.Minute

// FusionAuth event types tokengate acts on.
const (
	EventRefreshTokenRevoke = "jwt.refresh-token.revoke"
	EventUserDelete         = "user.delete"
	EventUserDeactivate     = "user.deactivate"
	EventRegistrationDelete = "user.registration.delete"
	EventPasswordUpdate     = "user.password.update"
	EventPasswordReset      = "user.password.reset.success"
	EventPublicKeyUpdate    = "jwt.public-key.update"
	EventTest               = "test"
)

// EventTypes is the closed set of type labels in metrics ("other" for the rest).
var EventTypes = []string{EventRefreshTokenRevoke, EventUserDelete, EventUserDeactivate, EventRegistrationDelete,
	EventPasswordUpdate, EventPasswordReset, EventPublicKeyUpdate, EventTest, "other"}

// FusionAuthOptions configure the FusionAuth webhook receiver.
type FusionAuthOptions struct {
	// Issuer is the configured issuer the events apply to.
	Issuer Issuer
	// TenantIDs, when set, limits events to these tenants; others are
	// acknowledged and ignored.
	TenantIDs []string
	// Signature verifies X-FusionAuth-Signature-JWT when set.
	Signature *token.BodySignatureVerifier
	// BasicUser/BasicPassword, when set, are required as HTTP Basic
	// credentials.
	BasicUser, BasicPassword string
	// HeaderName/HeaderValue, when set, is a shared secret header.
	HeaderName, HeaderValue string
	// RevokeSubjectOnRefreshTokenRevoke also revokes the user for the
	// application when one refresh token is revoked: for FusionAuth versions
	// whose access tokens carry no sid (before 1.37, or without
	// offline_access). It signs the user out of that application everywhere.
	RevokeSubjectOnRefreshTokenRevoke bool
	// RevokeOnPasswordChange revokes the user on password update and reset.
	RevokeOnPasswordChange bool
	// MaxClockSkew bounds how far an event's createInstant may be ahead of
	// Now: it is FusionAuth's clock, the one its tokens' iat come from, so
	// it is used as dated up to this skew, and clamped to Now + MaxClockSkew
	// (with a warning) beyond it, never refused. Zero means
	// DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	Revoker      *Revoker
	// RefreshKeys refreshes the issuer's JWKS (jwt.public-key.update). Run
	// calls it, after the event is answered.
	RefreshKeys func(ctx context.Context, issuerName string) error
	// Registerer, when set, gets tokengate_webhook_events_total: every
	// event by type (EventTypes) and result, all at zero from the start.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// keyRefreshDelays are when, after a jwt.public-key.update is answered,
// Run refreshes the issuer's keys. The event is transactional: FusionAuth
// commits the new key only once the webhook has answered, so the keys are
// fetched after the answer, and again a few seconds later in case the
// commit came late (or the first fetch failed).
var keyRefreshDelays = []time.Duration{time.Second, 10 * time.Second}

// FusionAuth receives FusionAuth webhooks.
type FusionAuth struct {
	opts   FusionAuthOptions
	events *prometheus.CounterVec
	// keysChanged wakes Run after a jwt.public-key.update was answered;
	// several updates before Run gets to them make one refresh schedule.
	keysChanged chan struct{}
}

// NewFusionAuth validates the options: at least one way to authenticate the
// sender is required.
func NewFusionAuth(opts FusionAuthOptions) (*FusionAuth, error) {
	if opts.Signature == nil && opts.BasicPassword == "" && opts.HeaderValue == "" {
		return nil, errors.New("fusionauth webhook: configure a signature key, basic credentials or a shared header")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxClockSkew <= 0 {
		opts.MaxClockSkew = DefaultMaxClockSkew
	}
	events, err := webhookEvents(opts.Registerer, sourceFusionAuth, EventTypes)
	if err != nil {
		return nil, fmt.Errorf("fusionauth webhook metrics: %w", err)
	}
	return &FusionAuth{opts: opts, events: events, keysChanged: make(chan struct{}, 1)}, nil
}

// Run refreshes the issuer's keys after each jwt.public-key.update, at
// 1s and 10s after it was answered (keyRefreshDelays), until ctx ends. Without Run the
// updates change nothing (the keys still refresh on their interval, and on
// an unknown kid).
func (f *FusionAuth) Run(ctx context.Context) {
	if f.opts.RefreshKeys == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.keysChanged:
		}
		answered := time.Now()
		for _, d := range keyRefreshDelays {
			t := time.NewTimer(time.Until(answered.Add(d)))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if err := f.opts.RefreshKeys(ctx, f.opts.Issuer.Name); err != nil {
				f.opts.Logger.Warn("jwks refresh after jwt.public-key.update failed; the keys refresh again on their interval",
					"issuer", f.opts.Issuer.Name, "err", err)
			}
		}
	}
}

// faEvent is the part of a FusionAuth event body tokengate reads.
type faEvent struct {
	ID                             string           `json:"id"`
	Type                           string           `json:"type"`
	CreateInstant                  *int64           `json:"createInstant"`
	TenantID                       string           `json:"tenantId"`
	ApplicationID                  string           `json:"applicationId"`
	UserID                         string           `json:"userId"`
	User                           *faUser          `json:"user"`
	RefreshToken                   *faRefreshToken  `json:"refreshToken"`
	Registration                   *faRegistration  `json:"registration"`
	ApplicationTimeToLiveInSeconds map[string]int64 `json:"applicationTimeToLiveInSeconds"`
}

type faUser struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
}

type faRefreshToken struct {
	ID            string `json:"id"`
	ApplicationID string `json:"applicationId"`
	UserID        string `json:"userId"`
}

type faRegistration struct {
	ApplicationID string `json:"applicationId"`
}

// errBadEvent marks events that are well-formed JSON but say nothing we can act on safely.
var errBadEvent = errors.New("bad event")

// ServeHTTP handles POST /webhooks/fusionauth.
func (f *FusionAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			f.reject(w, "other", http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("body larger than %d bytes", MaxWebhookBody))
			return
		}
		f.reject(w, "other", http.StatusBadRequest, "invalid_request", "could not read the body")
		return
	}
	if status, reason := f.authenticate(r, body); status != 0 {
		f.reject(w, "other", status, reason, "the webhook sender could not be authenticated")
		return
	}
	var msg struct {
		Event *faEvent `json:"event"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Event == nil {
		f.reject(w, "other", http.StatusBadRequest, "invalid_json", `body must be a JSON object {"event": {...}}`)
		return
	}
	ev := msg.Event
	typ := ev.Type
	if !slices.Contains(EventTypes, typ) {
		typ = "other"
	}
	// The tenant may be absent at the top level; user events also carry it
	// in user.tenantId. An event whose tenant is unknown is processed (its
	// revocations are scoped to the issuer anyway): only an event that names
	// another tenant is acknowledged and ignored.
	tenant := ev.TenantID
	if tenant == "" && ev.User != nil {
		tenant = ev.User.TenantID
	}
	if len(f.opts.TenantIDs) > 0 && tenant != "" && !slices.Contains(f.opts.TenantIDs, tenant) {
		f.ignore(w, typ, "tenant not configured")
		return
	}
	switch ev.Type {
	case EventTest:
		f.ignore(w, typ, "test event")
		return
	case EventPublicKeyUpdate:
		// Transactional: FusionAuth commits the new key only after this
		// answer, so the keys are fetched after it (Run), never during the
		// call, and the answer never waits for or depends on the JWKS: a
		// 503 would block the key change.
		f.observe(typ, "applied")
		writeJSON(w, http.StatusOK, map[string]string{"result": "keys refresh scheduled"})
		_ = http.NewResponseController(w).Flush() // the answer goes out before the refresh is due
		select {
		case f.keysChanged <- struct{}{}:
		default: // a refresh is already due
		}
		f.opts.Logger.Info("fusionauth event", "event_id", ev.ID, "type", ev.Type, "result", "keys refresh scheduled")
		return
	}
	write, err := f.revocations(ev)
	if errors.Is(err, errIgnored) {
		f.ignore(w, typ, err.Error())
		return
	}
	if err != nil {
		f.reject(w, typ, http.StatusBadRequest, "invalid_event", err.Error())
		return
	}
	res, err := f.opts.Revoker.Revoke(r.Context(), write)
	if err != nil {
		status, reason := statusFor(err)
		if status < 500 {
			f.reject(w, typ, status, reason, err.Error())
			return
		}
		f.opts.Logger.Warn("webhook not stored; the sender will retry", "event_id", ev.ID, "type", ev.Type, "err", err)
		f.reject(w, typ, http.StatusServiceUnavailable, reason, "the revocation could not be stored; retry")
		return
	}
	result := "applied"
	if res.Duplicate {
		result = "duplicate"
	}
	f.observe(typ, result)
	f.opts.Logger.Info("fusionauth event", "event_id", ev.ID, "type", ev.Type, "result", result, "seq", res.Seq)
	writeJSON(w, http.StatusOK, map[string]any{"result": result, "revocations": len(write.Revocations)})
}

var errIgnored = errors.New("not a revocation")

// revocations maps one event to the write it requires.
func (f *FusionAuth) revocations(ev *faEvent) (storage.Write, error) {
	if ev.ID == "" {
		return storage.Write{}, fmt.Errorf("%w: no event id", errBadEvent)
	}
	if ev.CreateInstant == nil || *ev.CreateInstant <= 0 {
		return storage.Write{}, fmt.Errorf("%w: no createInstant", errBadEvent)
	}
	at := time.UnixMilli(*ev.CreateInstant).UTC()
	// createInstant is FusionAuth's clock, as are the iat of the tokens it
	// issues: a cutoff at createInstant takes out exactly the tokens issued
	// before the event, however far that clock is ahead of ours. Refusing
	// the event would lose the revocation (and, under "all must succeed",
	// fail FusionAuth's own call), so a clock further ahead than the
	// maximum skew is clamped: a cutoff far in the future would sign users
	// out until then.
	if limit := f.opts.Now().Add(f.opts.MaxClockSkew); at.After(limit) {
		f.opts.Logger.Warn("fusionauth createInstant is ahead of this clock by more than max_clock_skew; clamped",
			"event_id", ev.ID, "type", ev.Type, "ahead", at.Sub(limit)+f.opts.MaxClockSkew, "max_clock_skew", f.opts.MaxClockSkew)
		at = limit.UTC()
	}
	iss := f.opts.Issuer
	// Keep entries while any token they match can live: the issuer's bound,
	// or the longest access-token TTL the event names, whichever is longer.
	keep := iss.Keep(at)
	for _, ttl := range ev.ApplicationTimeToLiveInSeconds {
		if until := at.Add(time.Duration(ttl)*time.Second + iss.Leeway); ttl > 0 && until.After(keep) {
			keep = until
		}
	}
	source := storage.Source("fusionauth", ev.ID)
	base := storage.Revocation{Issuer: iss.Issuer, ExpiresAt: keep, Source: source, Reason: ev.Type}
	subject := func(sub, aud string) storage.Revocation {
		r := base
		r.Kind, r.Key, r.Audience, r.RevokedBefore = storage.KindSubject, sub, aud, at
		return r
	}
	var revs []storage.Revocation
	userID := ev.UserID
	if userID == "" && ev.User != nil {
		userID = ev.User.ID
	}
	switch ev.Type {
	case EventRefreshTokenRevoke:
		switch {
		case ev.RefreshToken != nil && ev.RefreshToken.ID != "":
			// One refresh token: end that session only (sid = refresh token id).
			// The event carries no expiry of the refresh token (its
			// insertInstant and startInstant, not its TTL), so the entry is
			// kept for the session lifetime from the revocation.
			r := base
			r.Kind, r.Key = storage.KindSession, ev.RefreshToken.ID
			if until := iss.KeepSession(at); until.After(r.ExpiresAt) {
				r.ExpiresAt = until
			}
			revs = append(revs, r)
			if f.opts.RevokeSubjectOnRefreshTokenRevoke {
				sub, app := userID, ev.ApplicationID
				if sub == "" {
					sub = ev.RefreshToken.UserID
				}
				if app == "" {
					app = ev.RefreshToken.ApplicationID
				}
				if sub != "" {
					revs = append(revs, subject(sub, app))
				}
			}
		case userID != "":
			revs = append(revs, subject(userID, ev.ApplicationID))
		case ev.ApplicationID != "":
			r := base
			r.Kind, r.Audience, r.RevokedBefore = storage.KindCutoff, ev.ApplicationID, at
			revs = append(revs, r)
		default:
			return storage.Write{}, fmt.Errorf("%w: names no refresh token, user or application", errBadEvent)
		}
	case EventUserDelete, EventUserDeactivate:
		if userID == "" {
			return storage.Write{}, fmt.Errorf("%w: no user.id", errBadEvent)
		}
		revs = append(revs, subject(userID, ""))
	case EventRegistrationDelete:
		app := ev.ApplicationID
		if app == "" && ev.Registration != nil {
			app = ev.Registration.ApplicationID
		}
		if userID == "" || app == "" {
			return storage.Write{}, fmt.Errorf("%w: needs user.id and applicationId", errBadEvent)
		}
		revs = append(revs, subject(userID, app))
	case EventPasswordUpdate, EventPasswordReset:
		if !f.opts.RevokeOnPasswordChange {
			return storage.Write{}, fmt.Errorf("%w: password changes do not revoke (revoke_on_password_change: false)", errIgnored)
		}
		if userID == "" {
			return storage.Write{}, fmt.Errorf("%w: no user.id", errBadEvent)
		}
		revs = append(revs, subject(userID, ""))
	default:
		return storage.Write{}, fmt.Errorf("%w: event type %q", errIgnored, ev.Type)
	}
	return storage.Write{Revocations: revs, EventID: source, EventExpiresAt: keep}, nil
}

// authenticate checks every configured method; all configured must pass.
// It returns 0 when the sender is authenticated, else a status and reason.
func (f *FusionAuth) authenticate(r *http.Request, body []byte) (int, string) {
	o := f.opts
	if o.BasicPassword != "" {
		user, pass, ok := r.BasicAuth()
		if !ok || !equal(user, o.BasicUser) || !equal(pass, o.BasicPassword) {
			return http.StatusUnauthorized, "unauthorized"
		}
	}
	if o.HeaderValue != "" && !equal(r.Header.Get(o.HeaderName), o.HeaderValue) {
		return http.StatusUnauthorized, "unauthorized"
	}
	if o.Signature != nil {
		jws := r.Header.Get("X-FusionAuth-Signature-JWT")
		if jws == "" {
			return http.StatusUnauthorized, "signature_missing"
		}
		if err := o.Signature.Verify(r.Context(), jws, body); err != nil {
			if errors.Is(err, token.ErrKeysUnavailable) {
				return http.StatusServiceUnavailable, "keys_unavailable"
			}
			return http.StatusUnauthorized, "signature_invalid"
		}
	}
	return 0, ""
}

// equal compares secrets in constant time (over their hashes, so that
// lengths do not leak either).
func equal(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func (f *FusionAuth) observe(typ, result string) {
	f.events.WithLabelValues(sourceFusionAuth, typ, result).Inc()
}

func (f *FusionAuth) ignore(w http.ResponseWriter, typ, why string) {
	f.observe(typ, "ignored")
	writeJSON(w, http.StatusOK, map[string]string{"result": "ignored", "reason": why})
}

func (f *FusionAuth) reject(w http.ResponseWriter, typ string, status int, reason, description string) {
	f.observe(typ, "rejected")
	writeError(w, status, reason, description)
}
