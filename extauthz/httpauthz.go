package extauthz

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/status"
)

// Protocol is how a request to authorise reached tokengate. It labels
// metrics and logs; the decision is the same (decide).
type Protocol uint8

const (
	ProtocolGRPC Protocol = iota // Envoy's ext_authz gRPC service
	ProtocolHTTP                 // the HTTP endpoint (HTTPHandler)
	numProtocols
)

func (p Protocol) String() string {
	if p == ProtocolHTTP {
		return "http"
	}
	return "grpc"
}

// HTTPMode says where the HTTP endpoint reads the request to authorise
// from. Only that source is trusted; the other modes' headers are ignored.
type HTTPMode uint8

const (
	// HTTPModeEnvoy: the request itself (Envoy's ext_authz HTTP service,
	// Istio's envoyExtAuthzHttp): its method, Host and request-target,
	// behind HTTPOptions.PathPrefix.
	HTTPModeEnvoy HTTPMode = iota
	// HTTPModeForwarded: X-Forwarded-Method, -Host, -Uri (and -Proto), as
	// Caddy's forward_auth and Traefik's forwardAuth send them.
	HTTPModeForwarded
	// HTTPModeNginx: X-Original-Method and X-Original-URI, with Host, as
	// the shipped nginx configuration sets them. nginx's own auth_request
	// example sets X-Original-URI alone; its subrequest is always a GET,
	// with the upstream's Host: without the other two set from the
	// request, a POST would be judged as the client's X-Original-Method
	// says, and no host rule would match.
	HTTPModeNginx
)

var httpModes = [...]string{HTTPModeEnvoy: "envoy", HTTPModeForwarded: "forwarded", HTTPModeNginx: "nginx"}

func (m HTTPMode) String() string {
	if int(m) < len(httpModes) {
		return httpModes[m]
	}
	return "unknown"
}

// ParseHTTPMode reads a mode's name: envoy, forwarded or nginx.
func ParseHTTPMode(s string) (HTTPMode, error) {
	for m, name := range httpModes {
		if s == name {
			return HTTPMode(m), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q: want envoy, forwarded or nginx", s)
}

// HTTPOptions configure the HTTP endpoint.
type HTTPOptions struct {
	Mode HTTPMode
	// PathPrefix (envoy mode): Envoy's http_service path_prefix, put before
	// the original path; a request-target without it is refused.
	PathPrefix string
}

// Headers of the HTTP endpoint's answers besides the decision's own.
const (
	// HeaderRemove lists the managed headers the identity does not fill:
	// Envoy's HTTP mode removes them from the upstream request.
	HeaderRemove = "x-envoy-auth-headers-to-remove"
	// HeaderReason and HeaderDecisionID are the dynamic metadata's reason
	// and decision id, on every answer.
	HeaderReason     = "x-tokengate-reason"
	HeaderDecisionID = "x-tokengate-decision-id"
	// HeaderError is a denial's RFC 6750 error code.
	HeaderError = "x-tokengate-error"
	// HeaderCookieRewritten is "1" on an allow that rewrites the Cookie
	// header (the token's cookies taken out): a proxy that copies answer
	// headers by name, and cannot tell an absent one from any value
	// (Caddy 2.6), sets Cookie from the answer on this flag alone, which
	// no client can make the answer's cookie imitate.
	HeaderCookieRewritten = "x-tokengate-cookie-rewritten"
	// HeaderStatus is a denial's status, for nginx: its auth_request
	// answers anything but 401 and 403 with 500, and a configuration can
	// answer the status itself (README: Behind nginx).
	HeaderStatus = "x-tokengate-status"
)

// The request headers each mode reads the original request from.
const (
	headerForwardedMethod = "X-Forwarded-Method"
	headerForwardedHost   = "X-Forwarded-Host"
	headerForwardedURI    = "X-Forwarded-Uri"
	headerForwardedProto  = "X-Forwarded-Proto"
	headerOriginalMethod  = "X-Original-Method"
	headerOriginalURI     = "X-Original-Uri"
)

// HTTPHandler serves the decision over HTTP: the protocol of Envoy's and
// Istio's HTTP ext_authz, nginx auth_request, Caddy forward_auth and
// Traefik forwardAuth. The request to authorise is read (as mode says)
// into a CheckRequest, decided by the very function that answers gRPC, and
// the answer written back: 200 with the identity headers to let the
// request on, or the denial's status, headers and body.
func (s *Server) HTTPHandler(opts HTTPOptions) (http.Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &httpHandler{s: s, opts: opts}, nil
}

// Validate reports what is wrong with o.
func (o HTTPOptions) Validate() error {
	if int(o.Mode) >= len(httpModes) {
		return fmt.Errorf("unknown HTTP mode %d", o.Mode)
	}
	if o.PathPrefix != "" && (o.Mode != HTTPModeEnvoy || !strings.HasPrefix(o.PathPrefix, "/") ||
		strings.HasSuffix(o.PathPrefix, "/") || strings.ContainsAny(o.PathPrefix, "?#%;")) {
		return fmt.Errorf("%q: only in envoy mode; it starts with / and does not end with one, without ?, #, %% or ;", o.PathPrefix)
	}
	return nil
}

type httpHandler struct {
	s    *Server
	opts HTTPOptions
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	start := time.Now()
	parts, problem := h.checkRequest(hr)
	if problem != "" {
		// The proxy did not say which request to authorise: its
		// configuration is wrong, or a client reached the endpoint itself.
		decisionID := h.s.decisionID()
		h.s.metrics.observe(ProtocolHTTP, ReasonRequestInvalid, start)
		h.s.logLimited(slog.LevelWarn, "denied", "reason", ReasonRequestInvalid.String(), "decision_id", decisionID,
			"protocol", ProtocolHTTP.String(), "mode", h.opts.Mode.String(), "problem", problem)
		writeHTTPAnswer(w, denyResponse(ReasonRequestInvalid, decisionID, nil))
		return
	}
	resp, err := h.s.decide(hr.Context(), &parts.req, ProtocolHTTP)
	parts.release()
	if err != nil {
		// No decision: 503, so that the proxy's own failure setting
		// applies. The gRPC status message is tokengate's fixed text.
		writeUndecided(w, status.Convert(err).Message())
		return
	}
	writeHTTPAnswer(w, resp)
}

// checkRequest reads the request to authorise, or says what is wrong
// with the one that asks.
func (h *httpHandler) checkRequest(hr *http.Request) (*checkParts, string) {
	var method, host, target, scheme, policyName string
	switch h.opts.Mode {
	case HTTPModeEnvoy:
		method, host, target = hr.Method, hr.Host, hr.RequestURI
		if h.opts.PathPrefix != "" {
			rest, ok := strings.CutPrefix(target, h.opts.PathPrefix)
			if !ok {
				return nil, "the path lacks the configured path_prefix"
			}
			target = rest
		}
		if hr.TLS != nil {
			scheme = "https"
		} else {
			scheme = "http"
		}
	case HTTPModeForwarded:
		var problem string
		if method, problem = single(hr.Header, headerForwardedMethod); problem != "" {
			return nil, problem
		}
		if host, problem = single(hr.Header, headerForwardedHost); problem != "" {
			return nil, problem
		}
		if target, problem = single(hr.Header, headerForwardedURI); problem != "" {
			return nil, problem
		}
		switch v := hr.Header[headerForwardedProto]; {
		case len(v) == 0:
		case len(v) == 1 && (v[0] == "http" || v[0] == "https"):
			scheme = v[0]
		default:
			return nil, headerForwardedProto + " is not one of http and https"
		}
		policyName = authPolicy(hr.RequestURI)
	case HTTPModeNginx:
		var problem string
		if method, problem = single(hr.Header, headerOriginalMethod); problem != "" {
			return nil, problem
		}
		if target, problem = single(hr.Header, headerOriginalURI); problem != "" {
			return nil, problem
		}
		host = hr.Host
		policyName = authPolicy(hr.RequestURI)
	}
	switch {
	case !isToken(method):
		return nil, "the method is not an HTTP token"
	case host == "" || strings.ContainsAny(host, " ,"):
		return nil, "the host is empty or a list"
	case !strings.HasPrefix(target, "/"):
		// Origin-form only: no absolute URI, no asterisk, nothing empty.
		return nil, "the request-target does not start with /"
	}
	return h.buildCheckRequest(hr, method, host, target, scheme, policyName), ""
}

// policyPathPrefix starts the auth request's path that names a route
// policy in forwarded and nginx modes: /policy/NAME.
const policyPathPrefix = "/policy/"

// authPolicy is the route policy the auth request's target names (""
// for the default): its path, /policy/NAME, which the proxy sets from its
// configuration. Never its query: Caddy's forward_auth, given a path
// alone, keeps the client's query string. A name no policy can have (empty,
// with a '/') is passed on as it is, and refused as unknown.
func authPolicy(target string) string {
	path, _, _ := strings.Cut(target, "?")
	name, ok := strings.CutPrefix(path, policyPathPrefix)
	if !ok {
		return ""
	}
	if name == "" {
		return "/" // named, and no policy's name
	}
	return name
}

// single is the one value of a header that must appear exactly once.
func single(h http.Header, name string) (string, string) {
	switch v := h[name]; len(v) {
	case 0:
		return "", name + " is missing"
	case 1:
		if v[0] == "" {
			return "", name + " is empty"
		}
		return v[0], ""
	default:
		return "", name + " is repeated"
	}
}

// checkParts hold a CheckRequest and everything in it, so that one
// pooled object makes them all: decide keeps nothing of the request once
// it has answered.
type checkParts struct {
	req   authv3.CheckRequest
	attrs authv3.AttributeContext
	r     authv3.AttributeContext_Request
	http  authv3.AttributeContext_HttpRequest
	hmap  corev3.HeaderMap
	lines []corev3.HeaderValue
	ptrs  []*corev3.HeaderValue
	ext   map[string]string
}

var checkPartsPool = sync.Pool{New: func() any { return new(checkParts) }}

// release returns p to the pool, holding no request's strings.
func (p *checkParts) release() {
	clear(p.lines)
	clear(p.ptrs)
	p.lines, p.ptrs = p.lines[:0], p.ptrs[:0]
	clear(p.ext)
	p.http.Reset()
	checkPartsPool.Put(p)
}

// buildCheckRequest is the CheckRequest Envoy would send for the request:
// its header lines one by one, in lower case (as Envoy's encode_raw_headers
// sends them), the pseudo-headers first. Release the parts once decided.
func (h *httpHandler) buildCheckRequest(hr *http.Request, method, host, target, scheme, policyName string) *checkParts {
	p := checkPartsPool.Get().(*checkParts)
	p.lines = append(p.lines,
		corev3.HeaderValue{Key: ":authority", Value: host},
		corev3.HeaderValue{Key: ":method", Value: method},
		corev3.HeaderValue{Key: ":path", Value: target})
	var requestID string
	for k, vs := range hr.Header {
		lk := lowerHeader(k)
		if lk == "x-request-id" && len(vs) > 0 {
			requestID = vs[0]
		}
		for _, v := range vs {
			p.lines = append(p.lines, corev3.HeaderValue{Key: lk, Value: v})
		}
	}
	for i := range p.lines {
		p.ptrs = append(p.ptrs, &p.lines[i])
	}
	_, query, _ := strings.Cut(target, "?")
	p.http.Id, p.http.Method, p.http.Host, p.http.Path, p.http.Query = requestID, method, host, target, query
	p.http.Scheme, p.http.Protocol = scheme, hr.Proto
	p.hmap.Headers = p.ptrs
	p.http.HeaderMap = &p.hmap
	p.r.Http = &p.http
	p.attrs.Request = &p.r
	p.attrs.ContextExtensions = nil
	if policyName != "" {
		if p.ext == nil {
			p.ext = make(map[string]string, 1)
		}
		p.ext[PolicyKey] = policyName
		p.attrs.ContextExtensions = p.ext
	}
	p.req.Attributes = &p.attrs
	return p
}

// lowerHeader is a header name in lower case; the common names without
// an allocation.
func lowerHeader(k string) string {
	switch k {
	case "Authorization":
		return "authorization"
	case "Cookie":
		return "cookie"
	case "Accept":
		return "accept"
	case "User-Agent":
		return "user-agent"
	case "X-Request-Id":
		return "x-request-id"
	case "X-Forwarded-For":
		return "x-forwarded-for"
	case "X-Forwarded-Proto":
		return "x-forwarded-proto"
	case "Content-Length":
		return "content-length"
	}
	return strings.ToLower(k)
}

// writeHTTPAnswer writes a decision as HTTP: an allow as 200 with the
// headers to set upstream and, in HeaderRemove, the ones to remove; a
// denial with its status, headers and body.
//
// Header names go out as the decision has them, in lower case: HTTP names
// are case-insensitive, and canonicalising each costs more than the rest
// of the answer. The fixed headers of each reason are prepared once
// (httpReasons).
func writeHTTPAnswer(w http.ResponseWriter, resp *authv3.CheckResponse) {
	out := w.Header()
	md := resp.GetDynamicMetadata().GetFields()
	reason, known := reasonByName[md["reason"].GetStringValue()]
	d := resp.GetDeniedResponse()
	if d == nil {
		ok := resp.GetOkResponse()
		headers, remove := ok.GetHeaders(), ok.GetHeadersToRemove()
		// One allocation holds every value: the headers', the decision id's
		// and the removal list's.
		n := len(headers) + 1
		if len(remove) > 0 {
			n++
		}
		vals := make([]string, n)
		for i, hv := range headers {
			k := hv.GetHeader().GetKey()
			vals[i] = hv.GetHeader().GetValue()
			if k == "cookie" {
				out[HeaderCookieRewritten] = cookieRewritten
			}
			if prev, dup := out[k]; dup && hv.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				out[k] = append(prev, vals[i])
				continue
			}
			out[k] = vals[i : i+1 : i+1]
		}
		i := len(headers)
		vals[i] = md["decision_id"].GetStringValue()
		out[HeaderDecisionID] = vals[i : i+1 : i+1]
		if len(remove) > 0 {
			vals[i+1] = strings.Join(remove, ", ")
			out[HeaderRemove] = vals[i+1:]
		}
		if known {
			out[HeaderReason] = httpReasons[reason].reason
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	code := int(d.GetStatus().GetCode())
	if code < 400 || code > 599 {
		// A denial the HTTP protocol cannot carry (an introspection
		// answered for the IdP is a 200, which here would let the request
		// on): refused instead. The gRPC path alone answers for the IdP.
		code = http.StatusForbidden
	}
	if known && d == denials[reason].http.DeniedResponse {
		// The reason's own denial: its headers are prepared.
		for k, v := range httpReasons[reason].denial {
			out[k] = v
		}
	} else {
		for _, hv := range d.GetHeaders() {
			out.Set(hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
		}
	}
	if known {
		out[HeaderReason] = httpReasons[reason].reason
		if e := httpReasons[reason].error; e != nil {
			out[HeaderError] = e
		}
	}
	out[HeaderDecisionID] = []string{md["decision_id"].GetStringValue()}
	out[HeaderStatus] = []string{strconv.Itoa(code)}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(d.GetBody()))
}

// cookieRewritten is HeaderCookieRewritten's value, shared read only.
var cookieRewritten = []string{"1"}

// httpReason is what every HTTP answer with one reason shares, read only.
type httpReason struct {
	reason []string    // HeaderReason's value
	error  []string    // HeaderError's, for a denial with an error code
	denial http.Header // the denial's fixed headers, canonical names
}

// httpReasons are prepared from the denials, by response.go's init.
var httpReasons [numReasons]httpReason

func prepareHTTPReasons() {
	out := &httpReasons
	for r := range numReasons {
		out[r].reason = []string{reasons[r].name}
		if reasons[r].errorCode != "" {
			out[r].error = []string{reasons[r].errorCode}
		}
		if d := denials[r].http; d != nil {
			out[r].denial = http.Header{}
			for _, hv := range d.DeniedResponse.GetHeaders() {
				out[r].denial.Set(hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
			}
		}
	}
}

// writeUndecided answers a request tokengate cannot decide (the issuer's
// keys or the revocations never loaded): 503 with Retry-After.
func writeUndecided(w http.ResponseWriter, msg string) {
	out := w.Header()
	out.Set("Content-Type", "application/json")
	out.Set("Cache-Control", "no-store")
	out.Set("Retry-After", "1")
	out.Set(HeaderStatus, "503")
	out.Set(HeaderError, "temporarily_unavailable")
	w.WriteHeader(http.StatusServiceUnavailable)
	body, _ := json.Marshal(map[string]string{"error": "temporarily_unavailable", "error_description": msg})
	_, _ = w.Write(body)
}

// reasonByName finds a reason by its name.
var reasonByName = func() map[string]Reason {
	m := make(map[string]Reason, numReasons)
	for r := range numReasons {
		m[reasons[r].name] = r
	}
	return m
}()
