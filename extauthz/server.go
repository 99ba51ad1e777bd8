// Package extauthz is tokengate's Envoy adapter: it answers
// envoy.service.auth.v3.Authorization/Check. A CheckRequest comes in, the
// bearer token is verified, and a CheckResponse goes out: allow with identity
// headers for the upstream, or a denial with an HTTP status, an RFC 6750
// challenge and a reason. A denial is a normal answer; only "cannot decide"
// is a gRPC error, so that Envoy's own failure mode applies.
package extauthz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
)

// Verifier verifies bearer tokens.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*token.Identity, error)
}

// Options configure a Server.
type Options struct {
	Verifier Verifier
	// Headers maps identities to upstream headers. It must be the map given to
	// Derive for the verifier, if any.
	Headers *policy.HeaderMap
	Metrics *Metrics
	Logger  *slog.Logger
}

// Server implements the ext_authz v3 Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	verifier Verifier
	headers  *policy.HeaderMap
	metrics  *Metrics
	log      *slog.Logger

	idPrefix string
	idSeq    atomic.Uint64
}

// NewServer returns a Server.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	var b [6]byte
	rand.Read(b[:])
	return &Server{
		verifier: opts.Verifier,
		headers:  opts.Headers,
		metrics:  opts.Metrics,
		log:      opts.Logger,
		idPrefix: hex.EncodeToString(b[:]) + "-",
	}
}

// Check decides one request.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	r := parseRequest(req)
	decisionID := s.decisionID()
	raw, reason := bearerToken(r.authorization)
	if reason != ReasonAllowed {
		return s.deny(r, reason, decisionID, nil, start), nil
	}
	id, err := s.verifier.Verify(ctx, raw)
	if err != nil {
		reason, ok := reasonFor(err)
		if !ok {
			s.metrics.observeError(start)
			s.log.Warn("cannot decide", "err", err, "decision_id", decisionID, "request_id", r.requestID)
			return nil, grpcstatus.Error(codes.Unavailable, "tokengate cannot decide yet: issuer keys not loaded")
		}
		return s.deny(r, reason, decisionID, nil, start), nil
	}
	a, ok := id.Derived.(*allowed)
	if !ok {
		a = newAllowed(s.headers, id)
	}
	s.metrics.observe(ReasonAllowed, start)
	return allowResponse(a, decisionID), nil
}

func (s *Server) deny(r request, reason Reason, decisionID string, id *token.Identity, start time.Time) *authv3.CheckResponse {
	s.metrics.observe(reason, start)
	attrs := []any{"reason", reason.String(), "decision_id", decisionID, "request_id", r.requestID,
		"method", r.method, "host", r.host}
	if id != nil {
		attrs = append(attrs, "iss", id.Issuer, "jti", id.TokenID, "sub_hash", subjectHash(id.Subject))
	}
	s.log.Info("denied", attrs...)
	return denyResponse(reason, decisionID, id)
}

// decisionID is unique per process run: a random prefix and a counter.
func (s *Server) decisionID() string {
	return s.idPrefix + strconv.FormatUint(s.idSeq.Add(1), 36)
}
