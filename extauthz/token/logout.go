package token

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// backchannelLogoutEvent is the member of a logout token's events claim
// (OpenID Connect Back-Channel Logout 1.0 §2.4).
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutToken is a verified back-channel logout token.
type LogoutToken struct {
	Issuer     string
	IssuerName string
	Subject    string // may be empty when SessionID is set
	SessionID  string // may be empty when Subject is set
	TokenID    string // jti, for replay detection
	IssuedAt   time.Time
	ExpiresAt  time.Time
}

// VerifyLogout verifies an OIDC back-channel logout token as the
// specification requires: the signature with its issuer's keys, typ
// logout+jwt, JWT or absent (see logoutTokenType), iss, aud among
// the issuer's logout client ids, iat and exp, the back-channel logout
// event, sub or sid, a jti, and no nonce. Replay detection (the jti) is the
// caller's: it needs the store.
func (v *Verifier) VerifyLogout(ctx context.Context, raw string) (*LogoutToken, error) {
	if !wellFormed(raw, v.maxBytes) {
		return nil, ErrMalformed
	}
	claims, iss, _, err := v.parse(ctx, raw, logoutToken)
	if err != nil {
		return nil, err
	}
	if iss.logoutValidator == nil {
		return nil, fmt.Errorf("%w: back-channel logout is not enabled for this issuer", ErrAudience)
	}
	if err := iss.logoutValidator.Validate(claims); err != nil {
		return nil, classify(err)
	}
	events, ok := claims["events"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: no events claim", ErrClaims)
	}
	if ev, ok := events[backchannelLogoutEvent]; !ok {
		return nil, fmt.Errorf("%w: events has no back-channel logout event", ErrClaims)
	} else if _, ok := ev.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: the back-channel logout event must be a JSON object", ErrClaims)
	}
	if _, ok := claims["nonce"]; ok {
		return nil, fmt.Errorf("%w: a logout token must not contain a nonce", ErrClaims)
	}
	lt := &LogoutToken{Issuer: iss.cfg.Issuer, IssuerName: iss.cfg.Name}
	for _, c := range [...]struct {
		name string
		dst  *string
	}{{"sub", &lt.Subject}, {"sid", &lt.SessionID}, {"jti", &lt.TokenID}} {
		if v, ok := claims[c.name]; ok {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s must be a string", ErrClaims, c.name)
			}
			*c.dst = s
		}
	}
	if lt.Subject == "" && lt.SessionID == "" {
		return nil, fmt.Errorf("%w: a logout token needs sub or sid", ErrClaims)
	}
	if lt.TokenID == "" {
		return nil, fmt.Errorf("%w: a logout token needs a jti", ErrClaims)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if iat == nil {
		return nil, fmt.Errorf("%w: iat", ErrClaims)
	}
	lt.IssuedAt, lt.ExpiresAt = iat.Time, exp.Time
	if lt.ExpiresAt.Sub(lt.IssuedAt) > iss.cfg.MaxTokenLifetime {
		return nil, ErrLifetimeTooLong
	}
	return lt, nil
}

// logoutTokenType accepts typ logout+jwt (explicitly typed, §2.4), JWT, or
// no typ. §2.4 only RECOMMENDS logout+jwt, and Keycloak (until keycloak#29260,
// Keycloak 25) and Authentik (until 2025.12) type their logout tokens JWT.
// What keeps a logout token apart from access and ID tokens is checked on
// every logout token whatever its typ: the back-channel logout member of
// events, an audience among the logout client ids, and no nonce. The other
// way round, an access token with an events claim is refused (identity).
// A token typed as an access token (at+jwt) is never a logout token.
func logoutTokenType(typ any) bool {
	s, ok := typ.(string)
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "logout+jwt", "application/logout+jwt", "jwt":
		return true
	}
	return false
}
