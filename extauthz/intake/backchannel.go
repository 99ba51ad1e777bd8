package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage"
)

// LogoutVerifier verifies back-channel logout tokens.
type LogoutVerifier interface {
	VerifyLogout(ctx context.Context, raw string) (*token.LogoutToken, error)
}

// BackchannelOptions configure the OIDC Back-Channel Logout receiver.
type BackchannelOptions struct {
	Verifier LogoutVerifier
	Revoker  *Revoker
	// RevokeSubject: a logout token with sub revokes the subject from its
	// iat (every session of the user), not only its sid.
	RevokeSubject bool
	// Registerer, when set, gets tokengate_webhook_events_total
	// {source="backchannel-logout",type="logout"}, every result at zero
	// from the start.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock that dates the revocations (default time.Now).
	Now func() time.Time
}

// Backchannel receives OpenID Connect Back-Channel Logout 1.0 requests:
// POST, form-encoded logout_token.
type Backchannel struct {
	opts   BackchannelOptions
	events *prometheus.CounterVec
}

// NewBackchannel returns the receiver.
func NewBackchannel(opts BackchannelOptions) (*Backchannel, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	events, err := webhookEvents(opts.Registerer, sourceBackchannel, []string{"logout"})
	if err != nil {
		return nil, fmt.Errorf("back-channel logout metrics: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backchannel{opts: opts, events: events}, nil
}

func (b *Backchannel) observe(result string) {
	b.events.WithLabelValues(sourceBackchannel, "logout", result).Inc()
}

// ServeHTTP answers 200 with Cache-Control: no-store once the logout is
// durable and applied here, 400 {"error":"invalid_request",…} for a token
// that fails any check, and 503 when the store cannot take it. A replayed
// jti (the same logout token again, from an OP that lost our answer) is a
// 200 too once the original is applied here, and never a second write.
func (b *Backchannel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		b.invalid(w, "the body must be a form with logout_token")
		return
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		b.invalid(w, "logout_token is missing")
		return
	}
	lt, err := b.opts.Verifier.VerifyLogout(r.Context(), raw)
	if errors.Is(err, token.ErrKeysUnavailable) {
		b.observe("rejected")
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the issuer's keys are not loaded yet")
		return
	}
	if err != nil {
		b.invalid(w, "invalid logout token: "+err.Error())
		return
	}
	iss, ok := b.opts.Revoker.Issuer(lt.Issuer)
	if !ok {
		b.invalid(w, "issuer not configured")
		return
	}
	// Entries are dated from the later of now and the logout token's iat
	// (an OP clock ahead of ours).
	from := b.opts.Now()
	if lt.IssuedAt.After(from) {
		from = lt.IssuedAt
	}
	keep := iss.Keep(from)
	source := storage.Source("backchannel-logout", lt.Issuer+":"+lt.TokenID)
	var revs []storage.Revocation
	if lt.SessionID != "" {
		revs = append(revs, storage.Revocation{Kind: storage.KindSession, Issuer: lt.Issuer, Key: lt.SessionID,
			ExpiresAt: iss.KeepSession(from), Source: source, Reason: "backchannel-logout"})
	}
	if lt.Subject != "" && (b.opts.RevokeSubject || lt.SessionID == "") {
		revs = append(revs, storage.Revocation{Kind: storage.KindSubject, Issuer: lt.Issuer, Key: lt.Subject,
			RevokedBefore: lt.IssuedAt, ExpiresAt: keep, Source: source, Reason: "backchannel-logout"})
	}
	res, err := b.opts.Revoker.Revoke(r.Context(), storage.Write{Revocations: revs, EventID: source,
		// Remember the jti for as long as the token could be replayed.
		EventExpiresAt: lt.ExpiresAt.Add(iss.Leeway)})
	if err != nil {
		status, reason := statusFor(err)
		b.opts.Logger.Warn("back-channel logout not stored", "issuer", lt.Issuer, "jti", lt.TokenID, "err", err)
		b.observe("rejected")
		writeError(w, status, reason, "the logout could not be stored; retry")
		return
	}
	result := "applied"
	if res.Duplicate {
		// A replay of a logout that committed: the OP lost our answer and
		// retries. It wrote nothing, and the original is applied here.
		result = "duplicate"
	}
	b.observe(result)
	b.opts.Logger.Info("back-channel logout", "issuer", lt.Issuer, "jti", lt.TokenID, "sid", lt.SessionID != "",
		"sub", lt.Subject != "", "result", result, "seq", res.Seq)
	w.WriteHeader(http.StatusOK)
}

func (b *Backchannel) invalid(w http.ResponseWriter, description string) {
	b.observe("rejected")
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": description})
}
