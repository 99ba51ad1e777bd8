package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// The FusionAuth side of the ingest benchmark: distinct user.delete events,
// signed as FusionAuth signs its webhooks, posted to one replica.

const (
	// faIssuerName is the issuer's name in the replica's configuration.
	faIssuerName = "fusionauth"
	// faIssuer is the iss of a FusionAuth tenant's tokens: its issuer
	// setting, a plain string.
	faIssuer = "acme.com"
	faApp    = "3c219e58-ed0e-4b18-ad48-f4f92793ae32"
	faTenant = "30663132-6464-6665-3032-326466613934"
	// webhookPath is where tokengate receives FusionAuth webhooks.
	webhookPath = "/webhooks/fusionauth"
	// signatureHeader carries the body's signature.
	signatureHeader = "X-FusionAuth-Signature-JWT"
)

// faWebhook is a FusionAuth webhook body: one event. Only the fields of a
// user.delete event that tokengate reads, and a few it does not, as
// FusionAuth sends them.
type faWebhook struct {
	Event faEvent `json:"event"`
}

type faEvent struct {
	ID            string `json:"id"`
	Type          string `json:"type"`
	CreateInstant int64  `json:"createInstant"` // ms since the epoch
	TenantID      string `json:"tenantId"`
	Info          faInfo `json:"info"`
	User          faUser `json:"user"`
}

type faInfo struct {
	IPAddress string `json:"ipAddress"`
	UserAgent string `json:"userAgent"`
}

type faUser struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	Active   bool   `json:"active"`
	TenantID string `json:"tenantId"`
}

// userDelete is the n-th user.delete event of run (8 hex digits): its id
// and its user's id are UUID-like, start with run and are unique to n.
func userDelete(run string, n uint64, at time.Time) faWebhook {
	return faWebhook{Event: faEvent{
		ID:            fmt.Sprintf("%s-0000-4000-8000-%012x", run, n),
		Type:          "user.delete",
		CreateInstant: at.UnixMilli(),
		TenantID:      faTenant,
		Info:          faInfo{IPAddress: "127.0.0.1", UserAgent: "tokengate-bench"},
		User: faUser{
			ID:       fmt.Sprintf("%s-0001-4000-8000-%012x", run, n),
			Email:    fmt.Sprintf("bench-%s-%d@example.com", run, n),
			Active:   true,
			TenantID: faTenant,
		},
	}}
}

// jwsHeader is the encoded header of every signature.
var jwsHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// signBody returns the X-FusionAuth-Signature-JWT header for body: an HS256
// JWS whose only claim, request_body_sha256, is the standard padded base64
// of the SHA-256 of the raw body.
func signBody(secret, body []byte) string {
	sum := sha256.Sum256(body)
	claims := `{"request_body_sha256":"` + base64.StdEncoding.EncodeToString(sum[:]) + `"}`
	signed := jwsHeader + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// webhookSender posts distinct, signed user.delete events to one replica
// over kept-alive connections. It is safe for concurrent use.
type webhookSender struct {
	url    string // of POST /webhooks/fusionauth
	secret []byte // the replica's signing_key.hmac_secret
	run    string // 8 hex digits that every event and user id starts with
	http   *http.Client
	now    func() time.Time
	sent   atomic.Uint64 // events numbered so far
}

// newWebhookSender keeps up to senders connections to httpAddr alive, one
// per concurrent sender.
func newWebhookSender(httpAddr string, secret []byte, run string, senders int) *webhookSender {
	return &webhookSender{
		url:    "http://" + httpAddr + webhookPath,
		secret: secret,
		run:    run,
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConns:        senders,
			MaxIdleConnsPerHost: senders,
			IdleConnTimeout:     time.Minute,
		}},
		now: time.Now,
	}
}

// send posts the next event and expects it applied: 200 OK with
// {"result":"applied","revocations":1}. Anything else is an error wrapping
// errUnexpected that quotes the answer.
func (s *webhookSender) send(ctx context.Context) error {
	ev := userDelete(s.run, s.sent.Add(1), s.now())
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(signatureHeader, signBody(s.secret, body))
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", webhookPath, err)
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return fmt.Errorf("POST %s: read the answer: %w", webhookPath, err)
	}
	var answer struct {
		Result      string `json:"result"`
		Revocations int    `json:"revocations"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(msg, &answer) != nil ||
		answer.Result != "applied" || answer.Revocations != 1 {
		return fmt.Errorf(`%w: event %s: %s, want 200 OK with {"result":"applied","revocations":1}: %s`,
			errUnexpected, ev.Event.ID, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// close closes the idle connections.
func (s *webhookSender) close() { s.http.CloseIdleConnections() }
