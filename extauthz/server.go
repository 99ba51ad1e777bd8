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
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// Verifier verifies bearer tokens.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*token.Identity, error)
}

// Revocations answers whether a verified token has been revoked, from
// memory (storage.Index).
type Revocations interface {
	Keys(issuer, jti, sid, sub string, audiences []string) *storage.Keys
	Revoked(k *storage.Keys, iat, now time.Time) bool
}

// LogoutRevoker durably revokes the token presented on a logout route (and,
// when asked, its session or subject) before the request goes on. revoked
// says the token is revoked already. Either way the logout is as of now;
// what the index already holds is not written again, so that replaying a
// logged-out token makes no store write.
type LogoutRevoker interface {
	RevokeLogout(ctx context.Context, id *token.Identity, session, subject, revoked bool) error
}

// Options configure a Server.
type Options struct {
	Verifier Verifier
	// Headers maps identities to upstream headers. It must be the map given to
	// Derive for the verifier, if any.
	Headers *policy.HeaderMap
	// Revocations, when set, is checked on every request after verification
	// (never cached). It must be the one given to Derive, if any.
	Revocations Revocations
	// Loaded says whether the revocations have loaded at least once; until
	// they have, no decision is made (gRPC UNAVAILABLE), whatever FailOpen
	// says: an empty index is not a view of the revocations.
	Loaded func() bool
	// Staleness says how old the revocation view may be (how long since the
	// store was last read). Past MaxStaleness, requests are denied with
	// revocations_stale, unless FailOpen.
	Staleness    func() time.Duration
	MaxStaleness time.Duration
	FailOpen     bool
	// LogoutRoutes and Logout: a request on a logout route with a valid
	// token revokes it before it is allowed; if that fails, it is denied.
	LogoutRoutes *policy.LogoutRoutes
	Logout       LogoutRevoker
	// IntrospectionRoutes: a request on one carries the token to judge in
	// its form body (RFC 7662 §2.1) and needs none of its own; see
	// introspection.go.
	IntrospectionRoutes *policy.IntrospectionRoutes
	// TokenSources are where the token is looked for, every one of them
	// (nil: DefaultTokenSources); see ValidateTokenSources. MaxTokenBytes,
	// when positive, bounds the token in each source: longer is malformed.
	TokenSources  []TokenSource
	MaxTokenBytes int
	// Policy, when set, returns the route policy in force (it may change
	// between calls: a reload); nil from it, or no Policy, means every
	// request needs a valid, unrevoked token and nothing more. The
	// verifier's Derive must have been given Subjects.
	Policy func() *policy.Set
	// Registerer, when set, gets the Check series: decisions by reason
	// (every reason at zero from the start), errors and duration.
	// NewServer returns an error if those names are taken.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// DenialLogsPerSecond bounds the "denied" and "cannot decide" log lines
	// (default 100, burst 10× that, one budget for both): a flood of junk
	// tokens must not become a flood of logs.
	// Metrics still count every denial; a logged line says how many were
	// left out before it.
	DenialLogsPerSecond float64
	Now                 func() time.Time
}

// Server implements the ext_authz v3 Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	verifier            Verifier
	headers             *policy.HeaderMap
	revocations         Revocations
	loaded              func() bool
	staleness           func() time.Duration
	maxStaleness        time.Duration
	failOpen            bool
	logoutRoutes        *policy.LogoutRoutes
	logout              LogoutRevoker
	introspection       *policy.IntrospectionRoutes
	introspectionPassed *authv3.CheckResponse_OkResponse
	metrics             *metrics
	log                 *slog.Logger
	now                 func() time.Time
	staleWarned         atomic.Int64 // Unix seconds of the last fail-open warning
	denialLogs          *rate.Limiter
	shadowLogs          *rate.Limiter // shadow rules' would-be decisions
	unlogged            atomic.Int64  // denials and undecided requests not logged since the last line
	managed             []string      // identity header names, whose variants are refused
	sources             *sources
	policy              func() *policy.Set
	policyMetrics       *policyMetrics
	curParts            atomic.Pointer[setParts]

	idPrefix string
	idSeq    atomic.Uint64
}

// NewServer returns a Server. It fails if opts.TokenSources are invalid
// or opts.Registerer refuses the Check series.
func NewServer(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Staleness == nil {
		opts.Staleness = func() time.Duration { return 0 }
	}
	if opts.Loaded == nil {
		opts.Loaded = func() bool { return true }
	}
	if opts.DenialLogsPerSecond <= 0 {
		opts.DenialLogsPerSecond = 100
	}
	managed := []string{policy.HeaderIssuer, policy.HeaderSubject, policy.HeaderTokenID}
	if opts.Headers != nil {
		managed = opts.Headers.Names()
	}
	src, err := newSources(opts.TokenSources, managed, opts.MaxTokenBytes)
	if err != nil {
		return nil, fmt.Errorf("token sources: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register check metrics: %w", err)
	}
	var pm *policyMetrics
	if opts.Policy != nil {
		if pm, err = newPolicyMetrics(opts.Registerer); err != nil {
			return nil, fmt.Errorf("register policy metrics: %w", err)
		}
	}
	var b [6]byte
	rand.Read(b[:])
	return &Server{
		verifier:      opts.Verifier,
		headers:       opts.Headers,
		revocations:   opts.Revocations,
		loaded:        opts.Loaded,
		staleness:     opts.Staleness,
		maxStaleness:  opts.MaxStaleness,
		failOpen:      opts.FailOpen,
		logoutRoutes:  opts.LogoutRoutes,
		logout:        opts.Logout,
		introspection: opts.IntrospectionRoutes,
		introspectionPassed: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			HeadersToRemove: slices.Clone(managed),
		}},
		metrics:       m,
		log:           opts.Logger,
		now:           opts.Now,
		denialLogs:    rate.NewLimiter(rate.Limit(opts.DenialLogsPerSecond), int(10*opts.DenialLogsPerSecond)),
		shadowLogs:    rate.NewLimiter(rate.Limit(opts.DenialLogsPerSecond), int(10*opts.DenialLogsPerSecond)),
		idPrefix:      hex.EncodeToString(b[:]) + "-",
		managed:       managed,
		sources:       src,
		policy:        opts.Policy,
		policyMetrics: pm,
	}, nil
}

// Check decides one request.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.decide(ctx, req, ProtocolGRPC)
}

// decide is the one decision, whatever protocol asked: the gRPC Check, and
// the HTTP endpoint (HTTPHandler), which reads its request into a
// CheckRequest and writes the answer back as HTTP. protocol labels metrics
// and logs only.
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, protocol Protocol) (*authv3.CheckResponse, error) {
	start := time.Now()
	r := parseRequest(req, s.managed, s.sources)
	r.protocol = protocol
	decisionID := s.decisionID()
	if r.variant {
		return s.deny(r, ReasonHeaderInvalid, decisionID, nil, start), nil
	}
	// The route policy, when there is one, chooses the request's rule
	// first: what the path or the rule refuses needs no token.
	var p *routed
	var pv routed        // p's storage, when there is a policy: kept off the heap
	var notLoadedOK bool // the revocations are not loaded, and the route needs none
	var remove []string
	var set *policy.Set
	if s.policy != nil {
		set = s.policy()
	}
	if set != nil {
		p = &pv
		s.route(p, set, req, &r)
		remove = p.parts.remove
		if len(remove) > 0 && hasVariant(req, remove) {
			// The rules' header names are managed as the identity headers are.
			s.count(p, ReasonHeaderInvalid)
			return s.denyRule(p, r, ReasonHeaderInvalid, decisionID, nil, "", start), nil
		}
	}
	// Until the revocations load no token can be vouched for, and nothing
	// that needs one is decided. A deny rule needs none; nor does a public
	// route, which then lets every request on without identity (unless it
	// rejects invalid tokens: those it cannot tell apart yet).
	//
	// An introspection is answered from the revocations, and a logout must
	// hold before its request goes on: neither is decided before they load.
	//
	// An introspection needs Envoy's marker (its introspection route's
	// context_extensions) as well as a path introspection_routes matches:
	// a path alone says nothing of where Envoy sends the request (its
	// catch-all may send /oauth2/introspect/x to the protected app).
	introspection := req.GetAttributes().GetContextExtensions()[RouteMarkerKey] == RouteMarkerIntrospection &&
		s.introspection.Match(r.host, r.path, r.method)
	route, onLogout := s.logoutRoutes.Match(r.host, r.path, r.method)
	onLogout = onLogout && s.logout != nil
	if notLoaded := s.revocations != nil && !s.loaded(); notLoaded && (p == nil || p.rt.Status != policy.RouteOK ||
		p.access() == policy.AccessAuthenticated || p.access() == policy.AccessPublic && p.rt.Rule().RejectInvalid() ||
		introspection || onLogout && p.access() != policy.AccessDeny && r.hasToken(s.sources)) {
		s.metrics.observeError(r.protocol, start)
		return nil, grpcstatus.Error(codes.Unavailable, "tokengate cannot decide yet: revocations not loaded")
	} else if notLoaded {
		notLoadedOK = true
	}
	if introspection {
		return s.introspect(ctx, req, r, decisionID, remove, start)
	}
	if p != nil {
		if resp, done := s.routeDenial(p, r, decisionID, start); done {
			return resp, nil
		}
	} else if _, named := req.GetAttributes().GetContextExtensions()[PolicyKey]; named {
		// Envoy names a policy and there is none: the route expects rules
		// that are not here. Fail closed, as for an unknown name.
		s.logLimited(slog.LevelError, "route names a policy, and no route policy is configured; denying",
			"decision_id", decisionID, "request_id", r.requestID, "host", r.host)
		return s.deny(r, ReasonPolicyUnknown, decisionID, nil, start), nil
	}
	raw, reason := r.tokenOf(s.sources)
	if reason != ReasonAllowed {
		if p != nil {
			return s.unauthenticated(p, r, req, reason, nil, decisionID, start), nil
		}
		return s.deny(r, reason, decisionID, nil, start), nil
	}
	id, err := s.verifier.Verify(ctx, raw)
	if err != nil {
		reason, ok := ReasonFor(err)
		if !ok {
			if p != nil && (p.access() == policy.AccessDeny || p.anonymousOK(ReasonKeyUnknown) && !onLogout) {
				// The route decides without the token: refused anyway, or
				// public and the token ignored.
				return s.unauthenticated(p, r, req, ReasonKeyUnknown, nil, decisionID, start), nil
			}
			s.metrics.observeError(r.protocol, start)
			s.cannotDecide(r, err, decisionID)
			return nil, grpcstatus.Error(codes.Unavailable, "tokengate cannot decide yet: issuer keys not loaded")
		}
		if p != nil {
			return s.unauthenticated(p, r, req, reason, nil, decisionID, start), nil
		}
		return s.deny(r, reason, decisionID, nil, start), nil
	}
	if notLoadedOK {
		// Here only under a deny rule or on a public route (see above).
		return s.unauthenticated(p, r, req, ReasonRevocationsStale, id, decisionID, start), nil
	}
	a, ok := id.Derived.(*allowed)
	if !ok {
		// A verifier without Derive keeps no claims: the answer carries the
		// identity headers, and removes the claim headers.
		a = newAllowed(s.headers, s.revocations, id, nil, nil)
	}
	revoked := false
	if s.revocations != nil {
		switch reason := s.revocationCheck(a, id); {
		case reason == ReasonTokenRevoked && onLogout:
			// A revoked token still reaches the IdP on a logout route, so that
			// the IdP's session ends too: a logout route can only log out. It
			// goes on without identity (allowRevokedLogout).
			revoked = true
		case reason == ReasonRevocationsStale && onLogout && p != nil && p.access() != policy.AccessDeny:
			// The logout cannot be vouched for: the request is not let on,
			// even on a public route.
			return s.deny(r, reason, decisionID, id, start), nil
		case reason != ReasonAllowed && p != nil:
			return s.unauthenticated(p, r, req, reason, id, decisionID, start), nil
		case reason != ReasonAllowed:
			return s.deny(r, reason, decisionID, id, start), nil
		}
	}
	if p != nil && p.access() == policy.AccessDeny {
		// A deny rule refuses whatever the token, on a logout route too
		// (here only when shadow rules matched before it).
		return s.authorize(p, a, id, req, r, decisionID, true, start), nil
	}
	if onLogout {
		// The logout must hold before the request goes on: never let it look
		// successful while the token still works. For a token already revoked,
		// the route's session or subject revocation may still be new; what the
		// index already holds is skipped, so replays of the token write nothing.
		//
		// A failure, and a revoked token's pass-through, are logged under the
		// denial log limit: both are as cheap to repeat as a junk token. A
		// valid token's logout revokes it, so it is logged every time.
		if err := s.logout.RevokeLogout(ctx, id, route.RevokeSession, route.RevokeSubject, revoked); err != nil {
			s.logLimited(slog.LevelError, "logout route: revocation failed; denying", "err", err, "decision_id", decisionID,
				"request_id", r.requestID, "jti", id.TokenID)
			return s.deny(r, ReasonLogoutFailed, decisionID, id, start), nil
		}
		attrs := []any{"decision_id", decisionID, "request_id", r.requestID, "protocol", r.protocol.String(),
			"iss", id.Issuer, "jti", id.TokenID, "sub_hash", subjectHash(id.Subject), "session", route.RevokeSession,
			"subject", route.RevokeSubject, "already_revoked", revoked}
		if revoked {
			s.logLimited(slog.LevelInfo, "logged out at the gateway", attrs...)
		} else {
			s.log.Info("logged out at the gateway", attrs...)
		}
	}
	if revoked {
		s.metrics.observe(r.protocol, ReasonLogoutRevoked, start)
		resp := allowRevokedLogout(a, decisionID, req, s.sources)
		ok := resp.GetOkResponse()
		ok.HeadersToRemove = append(ok.HeadersToRemove, remove...)
		return resp, nil
	}
	if p != nil {
		// A logout route logs out on its own terms, whatever the rule
		// requires; the rule's upstream settings still apply.
		return s.authorize(p, a, id, req, r, decisionID, !onLogout, start), nil
	}
	s.metrics.observe(r.protocol, ReasonAllowed, start)
	resp := allowResponse(a, decisionID)
	if !s.sources.authorization {
		// Authorization is not a source, so nothing checked it: the upstream
		// must not take a bearer token in it for the one tokengate checked.
		// (The cached answer is shared, so this one gets its own copy.)
		ok := proto.Clone(a.answer.OkResponse).(*authv3.OkHttpResponse)
		ok.HeadersToRemove = append(ok.HeadersToRemove, "authorization")
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	return resp, nil
}

// allowRevokedLogout lets a revoked token's logout request on to the IdP
// with no identity and without the token. Every identity header the
// token's allow answer would set or remove is removed (so a client cannot
// supply one either), none is set; authorization is removed too, so that an
// upstream verifying the JWT by itself cannot take the revoked token (the
// IdP's logout goes by its session cookie or an id_token_hint), and so are
// the other token sources: their headers, and their cookies from the Cookie
// header, which keeps the IdP's own. The dynamic
// metadata carries only the reason, logout_revoked, and the decision id:
// no sub, jti or iss that an Envoy rule could read as an authenticated
// identity (tokengate's log line, under the decision id, has them).
func allowRevokedLogout(a *allowed, decisionID string, req *authv3.CheckRequest, src *sources) *authv3.CheckResponse {
	full := a.answer.OkResponse
	ok := &authv3.OkHttpResponse{HeadersToRemove: make([]string, 0, len(full.GetHeaders())+len(full.GetHeadersToRemove())+len(src.headers)+2)}
	for _, h := range full.GetHeaders() {
		ok.HeadersToRemove = append(ok.HeadersToRemove, h.GetHeader().GetKey())
	}
	ok.HeadersToRemove = append(ok.HeadersToRemove, full.GetHeadersToRemove()...)
	// Nor in authorization, any other header it may have come from, or a
	// cookie: should the route Envoy picks differ from ours after all, no
	// upstream gets the revoked token.
	withoutToken(ok, req, src)
	return &authv3.CheckResponse{
		Status:       okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reason":      reasonValues[ReasonLogoutRevoked],
			"decision_id": structpb.NewStringValue(decisionID),
		}},
	}
}

// withoutTokenCookies is the request's Cookie header without the cookies
// named (the token sources), its lines joined with "; " as RFC 6265 has
// one Cookie header; changed says whether any was named. A line, or a part
// of one, naming none is kept byte-for-byte: it cannot carry the token
// under any parser (request.cookie), and splitting it (on a comma in a
// cookie's value) would change the cookies the upstream reads. Only what
// names one is split, down to its cookie pairs; it was read strictly, or
// the request would have been denied as malformed, so its "; " pairs are
// the cookies.
func withoutTokenCookies(req *authv3.CheckRequest, names []string) (rest string, changed bool) {
	if len(names) == 0 {
		return "", false
	}
	// A name is the token cookie's as request.cookie reads it: alike
	// under cookieFoldAt (App.At, app_at, app%2Eat for app.at), which some
	// upstream reads as the token cookie itself.
	named := func(s string) bool {
		return slices.ContainsFunc(names, func(n string) bool { return cookieFoldContains(s, n) })
	}
	var kept []string
	// keep keeps s as it is if it names no token cookie; otherwise splits it
	// on seps[0] and keeps each part by the rest of seps; a part left
	// unsplit is a cookie pair, dropped if a token cookie's.
	var keep func(s string, seps []string)
	keep = func(s string, seps []string) {
		switch {
		case s == "":
		case !named(s):
			kept = append(kept, s)
		case len(seps) > 0:
			for part := range strings.SplitSeq(s, seps[0]) {
				keep(part, seps[1:])
			}
		default:
			name, _, _ := strings.Cut(s, "=")
			name = strings.TrimSpace(name)
			if slices.ContainsFunc(names, func(n string) bool { return cookieFoldEqual(name, n) }) {
				changed = true
				return
			}
			kept = append(kept, s)
		}
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	if headers := h.GetHeaders(); len(headers) > 0 {
		for k, v := range headers {
			if strings.EqualFold(k, "cookie") {
				// Envoy joined the Cookie header lines with "; " or ",".
				keep(v, []string{"; ", ","})
			}
		}
	} else {
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			if strings.EqualFold(hv.GetKey(), "cookie") {
				v := hv.GetValue()
				if v == "" {
					v = string(hv.GetRawValue())
				}
				keep(v, []string{"; "})
			}
		}
	}
	return strings.Join(kept, "; "), changed
}

func (s *Server) deny(r request, reason Reason, decisionID string, id *token.Identity, start time.Time) *authv3.CheckResponse {
	return s.denyLogged(r, reason, decisionID, id, start)
}

// denyLogged is deny with more attributes for its log line.
func (s *Server) denyLogged(r request, reason Reason, decisionID string, id *token.Identity, start time.Time, extra ...any) *authv3.CheckResponse {
	s.metrics.observe(r.protocol, reason, start)
	if !s.denialLogs.Allow() {
		s.unlogged.Add(1)
		return denyResponse(reason, decisionID, id)
	}
	attrs := []any{"reason", reason.String(), "decision_id", decisionID, "request_id", r.requestID,
		"protocol", r.protocol.String(), "method", r.method, "host", r.host}
	if id != nil {
		attrs = append(attrs, "iss", id.Issuer, "jti", id.TokenID, "sub_hash", subjectHash(id.Subject))
	}
	attrs = append(attrs, extra...)
	if n := s.unlogged.Swap(0); n > 0 {
		attrs = append(attrs, "unlogged_denials_before", n)
	}
	s.log.Info("denied", attrs...)
	return denyResponse(reason, decisionID, id)
}

// cannotDecide logs a request that could not be decided, under the denial
// log limit: junk tokens naming an issuer whose keys never loaded are as
// cheap to send as any other.
func (s *Server) cannotDecide(r request, err error, decisionID string) {
	s.logLimited(slog.LevelWarn, "cannot decide", "err", err, "decision_id", decisionID, "request_id", r.requestID,
		"protocol", r.protocol.String())
}

// logLimited logs a line under the denial log limit, saying how many lines
// were left out before it.
func (s *Server) logLimited(level slog.Level, msg string, attrs ...any) {
	if !s.denialLogs.Allow() {
		s.unlogged.Add(1)
		return
	}
	if n := s.unlogged.Swap(0); n > 0 {
		attrs = append(attrs, "unlogged_denials_before", n)
	}
	s.log.Log(context.Background(), level, msg, attrs...)
}

// Fresh reports whether the revocations can be trusted for a decision:
// loaded, and read from the store within MaxStaleness. It is the one
// statement of "fresh enough"; introspection asks it too.
func (s *Server) Fresh() bool {
	return s.loaded() && s.staleness() <= s.maxStaleness
}

// revocationCheck applies the in-memory revocation index, failing closed (or
// open, when configured) when the index may be stale.
func (s *Server) revocationCheck(a *allowed, id *token.Identity) Reason {
	now := s.now()
	if !s.Fresh() {
		if !s.failOpen {
			return ReasonRevocationsStale
		}
		if last := s.staleWarned.Load(); now.Unix()-last >= 60 && s.staleWarned.CompareAndSwap(last, now.Unix()) {
			s.log.Warn("revocations are stale; allowing requests anyway (revocation.on_stale: allow)", "staleness", s.staleness())
		}
	}
	keys := a.keys
	if keys == nil {
		keys = s.revocations.Keys(id.Issuer, id.TokenID, id.SessionID, id.Subject, id.Audience)
	}
	if s.revocations.Revoked(keys, id.IssuedAt, now) {
		return ReasonTokenRevoked
	}
	return ReasonAllowed
}

// decisionID is unique per process run: a random prefix and a counter.
func (s *Server) decisionID() string {
	var b [32]byte
	return string(strconv.AppendUint(append(b[:0], s.idPrefix...), s.idSeq.Add(1), 36))
}
