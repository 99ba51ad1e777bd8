package extauthz

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
)

// PolicyKey is the context_extensions key by which Envoy (a route's or a
// virtual host's ExtAuthzPerRoute check_settings) names the route policy
// for the request; none names "default".
const PolicyKey = "policy"

// routed is the route policy's view of one request: the rule chosen, and
// the request as the rule's conditions read it.
type routed struct {
	parts *setParts
	rt    policy.Route
	req   policy.Request
	name  string     // the policy's name, for logs (from the configuration)
	rule  *ruleParts // the deciding rule's parts (or the unmatched ones)
}

// access is what the route asks of the token.
func (p *routed) access() policy.Access { return p.rt.Access() }

// anonymousOK says whether a request without a valid token goes on (with
// no identity): on a public route, unless the rule rejects invalid tokens
// and one was presented (reason is not token_missing).
func (p *routed) anonymousOK(reason Reason) bool {
	if p.access() != policy.AccessPublic {
		return false
	}
	return reason == ReasonTokenMissing || !p.rt.Rule().RejectInvalid()
}

// setParts are the answer parts and counters of one policy set, made as
// requests use them: a reload makes a new set, and with it new parts, so
// that nothing of an old set is kept.
type setParts struct {
	set   *policy.Set
	rules []atomic.Pointer[ruleParts] // by Rule.ID
	none  sync.Map                    // policy name → *ruleParts of its unmatched requests
	// remove are the rule header names: removed on every route.
	remove []string
}

// ruleParts are what answers under one rule share: its name and its
// policy's as metadata values, and its decision counters.
type ruleParts struct {
	name, policyName *structpb.Value
	// decisions and shadow count by decision, made on first use.
	decisions, shadow [numDecisions]atomic.Pointer[prometheus.Counter]
	labels            [2]string // policy, rule
}

// decision is a policy metric's decision label: the answer's reason, but
// "allow" for allowed and "unauthenticated" for every 401 or 503 on a rule
// that needs a token.
type decision uint8

const (
	decisionAllow decision = iota
	decisionUnauthenticated
	decisionAnonymous
	decisionForbidden
	decisionInsufficientScope
	decisionRouteUnmatched
	decisionPolicyUnknown
	decisionPathInvalid
	decisionHeaderInvalid
	numDecisions
)

var decisionNames = [numDecisions]string{"allow", "unauthenticated", "anonymous", "forbidden",
	"insufficient_scope", "route_unmatched", "policy_unknown", "path_invalid", "header_invalid"}

// decisionOf is the decision label of a policy's answer with reason r.
func decisionOf(r Reason) decision {
	switch r {
	case ReasonAllowed:
		return decisionAllow
	case ReasonAnonymous:
		return decisionAnonymous
	case ReasonForbidden:
		return decisionForbidden
	case ReasonInsufficientScope:
		return decisionInsufficientScope
	case ReasonRouteUnmatched:
		return decisionRouteUnmatched
	case ReasonPolicyUnknown:
		return decisionPolicyUnknown
	case ReasonPathInvalid:
		return decisionPathInvalid
	case ReasonHeaderInvalid:
		return decisionHeaderInvalid
	}
	return decisionUnauthenticated
}

// counter returns the counter of d in slots, made on first use.
func counter(slots *[numDecisions]atomic.Pointer[prometheus.Counter], vec *prometheus.CounterVec, labels [2]string, d decision) prometheus.Counter {
	if c := slots[d].Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(labels[0], labels[1], decisionNames[d])
	slots[d].CompareAndSwap(nil, &c)
	return c
}

// policyMetrics are the route policy's series. Policy and rule names come
// from the configuration, never from the request, so labels are bounded.
type policyMetrics struct {
	decisions *prometheus.CounterVec
	shadow    *prometheus.CounterVec
}

func newPolicyMetrics(reg prometheus.Registerer) (*policyMetrics, error) {
	m := &policyMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_policy_decisions_total",
			Help: "Route policy decisions by policy, rule (empty: no rule matched) and decision.",
		}, []string{"policy", "rule", "decision"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_policy_shadow_decisions_total",
			Help: "Would-be decisions of shadow rules by policy, rule and decision; the request was judged by the next rule.",
		}, []string{"policy", "rule", "decision"}),
	}
	if reg != nil {
		if err := register(reg, m.decisions, m.shadow); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// parts returns the parts of set, made anew when the set changed.
func (s *Server) parts(set *policy.Set) *setParts {
	if p := s.curParts.Load(); p != nil && p.set == set {
		return p
	}
	p := &setParts{set: set, remove: set.HeaderNames(), rules: make([]atomic.Pointer[ruleParts], set.Rules())}
	s.curParts.Store(p)
	return p
}

func (p *setParts) rule(r *policy.Rule, policyName string) *ruleParts {
	if r == nil {
		if rp, ok := p.none.Load(policyName); ok {
			return rp.(*ruleParts)
		}
		rp, _ := p.none.LoadOrStore(policyName, newRuleParts(policyName, ""))
		return rp.(*ruleParts)
	}
	slot := &p.rules[r.ID()]
	if rp := slot.Load(); rp != nil {
		return rp
	}
	slot.CompareAndSwap(nil, newRuleParts(r.Policy(), r.Name()))
	return slot.Load()
}

func newRuleParts(policyName, rule string) *ruleParts {
	return &ruleParts{
		name:       structpb.NewStringValue(rule),
		policyName: structpb.NewStringValue(policyName),
		labels:     [2]string{policyName, rule},
	}
}

// count counts an answer with reason r under the route's rule.
func (s *Server) count(p *routed, r Reason) {
	counter(&p.rule.decisions, s.policyMetrics.decisions, p.rule.labels, decisionOf(r)).Inc()
}

// route chooses the rule for the request under the policy Envoy names; p
// must be the zero routed.
func (s *Server) route(p *routed, set *policy.Set, req *authv3.CheckRequest, r *request) {
	name := req.GetAttributes().GetContextExtensions()[PolicyKey]
	// p is fresh (zero): set field by field, and have Route write in place,
	// rather than build and copy the whole structure.
	p.parts = s.parts(set)
	p.req.Host, p.req.Path, p.req.Method = r.host, r.path, r.method
	if set.NeedsHeaders() {
		p.req.Headers = requestHeaders(req)
	}
	set.RouteTo(&p.rt, name, &p.req)
	p.name = p.rt.Policy()
	if p.rt.Status == policy.RoutePolicyUnknown {
		// An unknown name is the request's, not the configuration's: it
		// stays out of labels and logs.
		p.name = "(unknown)"
	}
	p.rule = p.parts.rule(p.rt.Rule(), p.name)
}

// requestHeaders are the request's headers for CEL's request.headers,
// lower-case names, repeated headers joined with "," as Envoy joins them.
func requestHeaders(req *authv3.CheckRequest) map[string]string {
	h := req.GetAttributes().GetRequest().GetHttp()
	if m := h.GetHeaders(); len(m) > 0 {
		return m
	}
	out := map[string]string{}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		k := strings.ToLower(hv.GetKey())
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out
}

// routeDenial answers a request the route refuses whatever its token:
// path_invalid, policy_unknown, a deny rule, or no rule and unmatched: deny.
func (s *Server) routeDenial(p *routed, r request, decisionID string, start time.Time) (*authv3.CheckResponse, bool) {
	var reason Reason
	switch {
	case p.rt.Status == policy.RoutePathInvalid:
		reason = ReasonPathInvalid
	case p.rt.Status == policy.RoutePolicyUnknown:
		// A configuration error, not the client's: logged at error level
		// (under the denial log limit, since the client chooses the route).
		s.logLimited(slog.LevelError, "route names an unknown policy; denying (it never falls back to the default policy)",
			"policy", truncate(p.rt.Policy(), 64), "decision_id", decisionID, "request_id", r.requestID, "host", r.host)
		reason = ReasonPolicyUnknown
	case p.access() == policy.AccessDeny && !p.rt.HasShadows():
		reason = ReasonForbidden
		if p.rt.Rule() == nil {
			reason = ReasonRouteUnmatched
		}
	default:
		return nil, false
	}
	s.count(p, reason)
	return s.denyRule(p, r, reason, decisionID, nil, "", start), true
}

// unauthenticated answers a request whose token is missing, invalid or
// revoked (reason), or whose issuer's keys are not loaded (reason
// ReasonAllowed with cannotDecide): denied with reason, unless the route
// lets it on without identity or refuses it anyway.
func (s *Server) unauthenticated(p *routed, r request, req *authv3.CheckRequest, reason Reason, id *token.Identity, decisionID string, start time.Time) *authv3.CheckResponse {
	s.shadows(p, nil, decisionID)
	switch {
	case p.access() == policy.AccessDeny:
		d := p.rt.Decide(nil, &p.req)
		reason := policyReason(d)
		s.count(p, reason)
		return s.denyRule(p, r, reason, decisionID, id, "", start)
	case p.anonymousOK(reason):
		s.count(p, ReasonAnonymous)
		s.metrics.observe(r.protocol, ReasonAnonymous, start)
		return s.anonymousResponse(p, req, decisionID, reason != ReasonTokenMissing)
	}
	s.count(p, reason)
	return s.denyRule(p, r, reason, decisionID, id, "", start)
}

// authorize judges a verified, unrevoked token by the route's rule.
//
// judge false (a logout route) skips the rule's requirements; its upstream
// settings (headers, forward_token) still apply.
func (s *Server) authorize(p *routed, a *allowed, id *token.Identity, req *authv3.CheckRequest, r request, decisionID string, judge bool, start time.Time) *authv3.CheckResponse {
	sub := a.subject
	if sub == nil {
		// A verifier without Derive's subjects: what the identity says,
		// and no scopes, roles or claims (their requirements fail).
		sub = &policy.Subject{IssuerName: id.IssuerName, Audiences: id.Audience}
	}
	s.shadows(p, sub, decisionID)
	d := p.rt.Decide(sub, &p.req)
	// The rule's own headers carry what it vouches for: set only for a
	// token it allows (a logout route lets others on too).
	ruleAllows := d.Outcome == policy.OutcomeAllow
	if !judge {
		d = policy.Decision{}
	}
	if d.Outcome != policy.OutcomeAllow {
		reason := policyReason(d)
		s.count(p, reason)
		if d.Err != nil {
			// The error's text may quote what the expression read (a header,
			// a claim): not logged; tokengate check shows it.
			s.logLimited(slog.LevelWarn, "policy condition could not be evaluated (a missing claim or key, a type mismatch, or the cost limit); denying",
				"decision_id", decisionID, "policy", p.name, "rule", p.rt.Rule().Name())
		}
		return s.denyRule(p, r, reason, decisionID, id, d.Scope, start)
	}
	s.count(p, ReasonAllowed)
	s.metrics.observe(r.protocol, ReasonAllowed, start)
	resp := allowRuleResponse(a, decisionID, p.rule.name, p.rule.policyName)
	if rule := p.rt.Rule(); (rule != nil && (rule.HasHeaders() || !rule.ForwardToken())) || len(p.parts.remove) > 0 || !s.sources.authorization {
		ok := proto.Clone(a.answer.OkResponse).(*authv3.OkHttpResponse)
		s.ruleExtras(ok, p, sub, req, ruleAllows)
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	return resp
}

// ruleExtras adds the rule's own headers to an allow answer (with
// setHeaders), removes the rule headers it does not set, and the token from where it came when the
// rule does not forward it.
func (s *Server) ruleExtras(ok *authv3.OkHttpResponse, p *routed, sub *policy.Subject, req *authv3.CheckRequest, setHeaders bool) {
	rule := p.rt.Rule()
	var set []policy.Header
	if setHeaders && rule != nil && rule.HasHeaders() {
		set = rule.Headers(sub.Claims)
	}
	for _, h := range set {
		ok.Headers = append(ok.Headers, header(h.Name, h.Value))
	}
	for _, name := range p.parts.remove {
		if !slices.ContainsFunc(set, func(h policy.Header) bool { return h.Name == name }) {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	if !s.sources.authorization || (rule != nil && !rule.ForwardToken()) {
		// Authorization is not a source (so nothing checked it), or the
		// rule keeps the token from the upstream.
		ok.HeadersToRemove = append(ok.HeadersToRemove, "authorization")
	}
	if rule != nil && !rule.ForwardToken() {
		withoutToken(ok, req, s.sources)
	}
}

// withoutToken removes the token from every source it may have come from:
// authorization, the source headers, and the token cookies from the Cookie
// header, which keeps the others.
func withoutToken(ok *authv3.OkHttpResponse, req *authv3.CheckRequest, src *sources) {
	if !slices.Contains(ok.HeadersToRemove, "authorization") {
		ok.HeadersToRemove = append(ok.HeadersToRemove, "authorization")
	}
	ok.HeadersToRemove = append(ok.HeadersToRemove, src.headers...)
	if rest, changed := withoutTokenCookies(req, src.cookies); changed && rest == "" {
		ok.HeadersToRemove = append(ok.HeadersToRemove, "cookie")
	} else if changed {
		ok.Headers = append(ok.Headers, header("cookie", rest))
	}
}

// anonymousResponse lets a public route's request on with no identity:
// every managed header removed (so that a client cannot supply one), none
// set.
//
// unusable: a token was presented and could not be used (invalid, revoked,
// two of them, or not to be vouched for yet): it is kept from the
// upstream, which must not take a token tokengate did not accept.
func (s *Server) anonymousResponse(p *routed, req *authv3.CheckRequest, decisionID string, unusable bool) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{HeadersToRemove: slices.Concat(s.managed, p.parts.remove)}
	rule := p.rt.Rule()
	if !s.sources.authorization {
		ok.HeadersToRemove = append(ok.HeadersToRemove, "authorization")
	}
	if unusable || rule != nil && !rule.ForwardToken() {
		withoutToken(ok, req, s.sources)
	}
	rp := p.rule
	return &authv3.CheckResponse{
		Status:       okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reason":      reasonValues[ReasonAnonymous],
			"decision_id": structpb.NewStringValue(decisionID),
			"rule":        rp.name,
			"policy":      rp.policyName,
		}},
	}
}

// shadows evaluates, counts and logs the shadow rules that matched before
// the deciding rule.
func (s *Server) shadows(p *routed, sub *policy.Subject, decisionID string) {
	if !p.rt.HasShadows() {
		return
	}
	p.rt.Shadows(sub, &p.req, func(rule *policy.Rule, d policy.Decision) {
		would := decisionAllow
		if d.Outcome != policy.OutcomeAllow {
			would = decisionOf(policyReason(d))
		}
		rp := p.parts.rule(rule, p.name)
		counter(&rp.shadow, s.policyMetrics.shadow, rp.labels, would).Inc()
		if s.shadowLogs.Allow() {
			// Their own budget: a busy shadow rule must not crowd out the
			// denial lines (the counter has every one).
			s.log.Info("shadow rule", "policy", p.name, "rule", rule.Name(),
				"would_be", decisionNames[would], "decision_id", decisionID)
		}
	})
}

// policyReason is the reason of a decision that is not an allow.
func policyReason(d policy.Decision) Reason {
	switch d.Outcome {
	case policy.OutcomeInsufficientScope:
		return ReasonInsufficientScope
	case policy.OutcomeUnmatched:
		return ReasonRouteUnmatched
	case policy.OutcomeUnauthenticated:
		return ReasonTokenMissing
	}
	return ReasonForbidden
}

// denyRule is deny with the route's rule in the metadata and the log line,
// and for insufficient_scope the RFC 6750 §3.1 challenge naming scope.
func (s *Server) denyRule(p *routed, r request, reason Reason, decisionID string, id *token.Identity, scope string, start time.Time) *authv3.CheckResponse {
	rule := ""
	if p.rt.Rule() != nil {
		rule = p.rt.Rule().Name()
	}
	resp := s.denyLogged(r, reason, decisionID, id, start, "policy", p.name, "rule", rule)
	resp.DynamicMetadata.Fields["rule"] = structpb.NewStringValue(rule)
	resp.DynamicMetadata.Fields["policy"] = structpb.NewStringValue(p.name)
	if reason == ReasonInsufficientScope {
		d := resp.GetDeniedResponse()
		challenge := `Bearer realm="` + Realm + `", error="insufficient_scope", error_description="insufficient scope"`
		if scope != "" && quotable(scope) {
			challenge += `, scope="` + scope + `"`
		}
		resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: d.GetStatus().GetCode()},
			Headers: append([]*corev3.HeaderValueOption{header("www-authenticate", challenge)}, d.GetHeaders()...),
			Body:    d.GetBody(),
		}}
	}
	return resp
}

// quotable: s may go in an RFC 6750 quoted string as it is (scope-tokens
// are %x21 / %x23-5B / %x5D-7E, separated by spaces).
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// hasVariant reports whether the request has a header that is one of names
// but for case or '_' for '-' (see variantOf).
func hasVariant(req *authv3.CheckRequest, names []string) bool {
	h := req.GetAttributes().GetRequest().GetHttp()
	// A name with '_' has variants spelled with '-' only: every header is
	// compared then.
	all := slices.ContainsFunc(names, func(m string) bool { return strings.IndexByte(m, '_') >= 0 })
	variant := func(k string) bool {
		return (all || mayBeVariant(k)) && slices.ContainsFunc(names, func(m string) bool { return variantOf(k, m) })
	}
	for k := range h.GetHeaders() {
		if variant(k) {
			return true
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if variant(hv.GetKey()) {
			return true
		}
	}
	return false
}

// truncate is s cut to at most n bytes, for a log field.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
