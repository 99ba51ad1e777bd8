package extauthz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/url"
	"slices"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extauthz/token"
)

// issuerKnower is a Verifier that can say whether a token's iss claim
// names a configured issuer (token.Verifier can).
type issuerKnower interface {
	KnowsIssuer(iss string) bool
}

// RouteMarkerKey and RouteMarkerIntrospection: Envoy's route that forwards
// to the IdP's introspection endpoint with the body (with_request_body)
// sets this entry in its per-route check_settings.context_extensions. It is
// Envoy's own routing decision: a request is judged as an introspection
// only with it, and only on a path introspection_routes matches. Without
// it, a request is checked like any other (a bearer token is required),
// whatever its path: Envoy may have routed it to the protected app.
const (
	RouteMarkerKey           = "tokengate_route"
	RouteMarkerIntrospection = "introspection"
)

// formType is the media type of an introspection request (RFC 7662 §2.1).
const formType = "application/x-www-form-urlencoded"

// introspect decides a request on an introspection route (RFC 7662). The
// token to judge is the form body's token parameter; the request needs no
// token of its own, since the caller authenticates to the IdP as a client.
//
// tokengate answers for the IdP only when it knows the token is inactive:
// revoked, or invalid (expired, not yet valid, badly signed…) while its iss
// names a configured issuer. The answer is a denial to Envoy whose HTTP
// status is 200 and whose body is {"active":false} (RFC 7662 §2.2). Every
// other request goes on to the IdP, with no identity, and the IdP answers
// as it would: a valid unrevoked token; a token of an issuer tokengate does
// not know, or one it cannot attribute to any issuer (an opaque refresh
// token); a token for an audience tokengate is not configured for (the IdP
// serves other applications too); and a request tokengate cannot read: no
// form body, another content type, no token or more than one, a token over
// the size limit, or a body too large or cut short by Envoy
// (allow_partial_message).
//
// What tokengate cannot decide elsewhere it cannot decide here either: keys
// that never loaded are a gRPC UNAVAILABLE, stale revocations a 503.
//
// remove are the route policy's rule header names, removed as the
// identity headers are.
func (s *Server) introspect(ctx context.Context, req *authv3.CheckRequest, r request, decisionID string, remove []string, start time.Time) (*authv3.CheckResponse, error) {
	raw, ok := introspectedToken(req.GetAttributes().GetRequest().GetHttp(), s.sources.maxBytes)
	if !ok {
		return s.passIntrospection(r.protocol, decisionID, remove, start), nil
	}
	id, err := s.verifier.Verify(ctx, raw)
	if err != nil {
		if _, ok := ReasonFor(err); !ok {
			s.metrics.observeError(r.protocol, start)
			s.cannotDecide(r, err, decisionID)
			return nil, grpcstatus.Error(codes.Unavailable, "tokengate cannot decide yet: issuer keys not loaded")
		}
		if errors.Is(err, token.ErrIssuerUnknown) || errors.Is(err, token.ErrAudience) || !s.knowsIssuerOf(raw) {
			return s.passIntrospection(r.protocol, decisionID, remove, start), nil
		}
		return s.deny(r, ReasonIntrospectionInactive, decisionID, nil, start), nil
	}
	if s.revocations != nil {
		a, ok := id.Derived.(*allowed)
		if !ok {
			a = newAllowed(s.headers, s.revocations, id, nil, nil)
		}
		switch reason := s.revocationCheck(a, id); reason {
		case ReasonAllowed:
		case ReasonTokenRevoked:
			return s.deny(r, ReasonIntrospectionInactive, decisionID, id, start), nil
		default:
			return s.deny(r, reason, decisionID, id, start), nil
		}
	}
	return s.passIntrospection(r.protocol, decisionID, remove, start), nil
}

// passIntrospection lets the request on to the IdP with no identity:
// every identity header removed (a client cannot supply one either), none
// set, and authorization kept (it is the caller's client authentication).
func (s *Server) passIntrospection(protocol Protocol, decisionID string, remove []string, start time.Time) *authv3.CheckResponse {
	s.metrics.observe(protocol, ReasonIntrospectionPassed, start)
	answer := s.introspectionPassed
	if len(remove) > 0 {
		answer = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			HeadersToRemove: slices.Concat(answer.OkResponse.GetHeadersToRemove(), remove),
		}}
	}
	return &authv3.CheckResponse{
		Status:       okStatus,
		HttpResponse: answer,
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reason":      reasonValues[ReasonIntrospectionPassed],
			"decision_id": structpb.NewStringValue(decisionID),
		}},
	}
}

// knowsIssuerOf reports whether raw's iss claim, read without verifying
// anything, names a configured issuer: whether the token's invalidity is
// tokengate's to tell. A verifier that cannot say is taken to know.
func (s *Server) knowsIssuerOf(raw string) bool {
	k, ok := s.verifier.(issuerKnower)
	if !ok {
		return true
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return false
	}
	var claims struct {
		Iss any `json:"iss"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return false
	}
	iss, _ := claims.Iss.(string)
	return iss != "" && k.KnowsIssuer(iss)
}

// introspectedToken is the token parameter of an introspection request's
// form body, and false when there is none to judge: Envoy sent a partial
// body (x-envoy-auth-partial-body), no body, or a body longer than a form
// around a token of maxBytes can be; the content type is not a form; the
// form does not parse; it has no token, or more than one; the token is
// longer than maxBytes (0: no limit but the body's).
func introspectedToken(h *authv3.AttributeContext_HttpRequest, maxBytes int) (string, bool) {
	limit := maxBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	body := h.GetBody()
	if body == "" {
		body = string(h.GetRawBody())
	}
	// Percent-encoding triples a byte at most; the rest of a form (the
	// type hint, a client's id and secret) is small.
	if body == "" || len(body) > 3*limit+4096 {
		return "", false
	}
	partial, n := headerValue(h, "x-envoy-auth-partial-body")
	if n > 0 && !strings.EqualFold(partial, "false") {
		return "", false
	}
	ct, n := headerValue(h, "content-type")
	if n != 1 {
		return "", false
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != formType {
		return "", false
	}
	form, err := url.ParseQuery(body)
	if err != nil {
		return "", false
	}
	toks := form["token"]
	if len(toks) != 1 || toks[0] == "" || maxBytes > 0 && len(toks[0]) > maxBytes {
		return "", false
	}
	return toks[0], true
}

// headerValue is the value of the (lower-case) header name and how many
// times it came, from the headers map or the raw header_map.
func headerValue(h *authv3.AttributeContext_HttpRequest, name string) (string, int) {
	if headers := h.GetHeaders(); len(headers) > 0 {
		n := 0
		v := ""
		for k, val := range headers {
			if strings.EqualFold(k, name) {
				v = val
				n++
			}
		}
		return v, n
	}
	v, n := "", 0
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			v = hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			n++
		}
	}
	return v, n
}
