package extauthz

import (
	"encoding/json"
	"net/http"
	"sync"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// Realm is the RFC 6750 realm in every challenge.
const Realm = "tokengate"

var okStatus = &status.Status{Code: int32(reasons[ReasonAllowed].grpc)}

// allowed is what an allow answer needs for one identity. It is built once per
// verified token (kept with it in the verifier's cache) and shared, read only,
// by every answer for that token. It is one allocation, plus its headers
// (two), the token's revocation lookups and the claim header values: a cache
// of 100,000 tokens holds 100,000 of them.
type allowed struct {
	answer     authv3.CheckResponse_OkResponse
	ok         authv3.OkHttpResponse
	sub, jti   structpb.Value
	subV, jtiV structpb.Value_StringValue
	iss        *structpb.Value // shared by the issuer's tokens
	keys       *storage.Keys   // the token's revocation lookups
	subject    *policy.Subject // what the route policy reads; nil without one
	size       int             // bytes held, for the verifier's cache
}

// headerPair is one upstream header in one allocation with its value.
type headerPair struct {
	option corev3.HeaderValueOption
	value  corev3.HeaderValue
}

// issuerParts are the parts of an allow answer every token of one issuer
// shares: its x-auth-issuer header and its metadata value.
type issuerParts struct {
	header *corev3.HeaderValueOption
	value  *structpb.Value
}

func newIssuerParts(iss string) *issuerParts {
	return &issuerParts{header: header(policy.HeaderIssuer, iss), value: structpb.NewStringValue(iss)}
}

// Derive returns the function the verifier calls once per verified token to
// prepare its allow answer: identity headers set with OVERWRITE_IF_EXISTS_OR_ADD,
// and every identity header it does not set listed in headers_to_remove.
// Claim header values are computed here, once: the verifier keeps no claims.
//
// With subjects set (a route policy is configured), the token's policy
// subject (issuer, audiences, scopes, roles, and the claims when the policy
// reads them) is made here too and kept with the answer.
func Derive(headers *policy.HeaderMap, revocations Revocations, subjects *policy.Subjects) func(*token.Identity, map[string]any) any {
	var issuers sync.Map // issuer → *issuerParts; bounded by the configured issuers
	return func(id *token.Identity, claims map[string]any) any {
		p, ok := issuers.Load(id.Issuer)
		if !ok {
			p, _ = issuers.LoadOrStore(id.Issuer, newIssuerParts(id.Issuer))
		}
		a := newAllowed(headers, revocations, id, claims, p.(*issuerParts))
		if subjects != nil {
			a.subject = subjects.Make(id.IssuerName, id.Audience, claims)
			a.size += subjectBytes(a.subject)
		}
		return a
	}
}

// newAllowed prepares the allow answer for id. With shared nil, the
// issuer's parts are made for this answer alone.
func newAllowed(headers *policy.HeaderMap, revocations Revocations, id *token.Identity, claims map[string]any, shared *issuerParts) *allowed {
	set := headers.Headers(id.Issuer, id.Subject, id.TokenID, claims)
	if shared == nil {
		shared = newIssuerParts(id.Issuer)
	}
	a := &allowed{iss: shared.value}
	a.answer.OkResponse = &a.ok
	a.subV.StringValue, a.sub.Kind = id.Subject, &a.subV
	a.jtiV.StringValue, a.jti.Kind = id.TokenID, &a.jtiV
	a.size = token.HeapBytes(int(unsafe.Sizeof(*a)))

	own := len(set) // headers of this answer alone: all but the issuer's
	for _, h := range set {
		if h.Name == policy.HeaderIssuer {
			own--
		}
	}
	pairs := make([]headerPair, own)
	a.ok.Headers = make([]*corev3.HeaderValueOption, 0, len(set))
	a.size += token.HeapBytes(own*int(unsafe.Sizeof(headerPair{}))) + token.HeapBytes(8*len(set))
	isSet := make(map[string]bool, len(set))
	for _, h := range set {
		isSet[h.Name] = true
		if h.Name == policy.HeaderIssuer {
			a.ok.Headers = append(a.ok.Headers, shared.header)
			continue
		}
		p := &pairs[0]
		pairs = pairs[1:]
		p.value.Key, p.value.Value = h.Name, h.Value
		p.option.Header = &p.value
		p.option.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		a.ok.Headers = append(a.ok.Headers, &p.option)
		if h.Name != policy.HeaderSubject && h.Name != policy.HeaderTokenID {
			a.size += token.HeapBytes(len(h.Value)) // a claim's value: this answer's own
		}
	}
	for _, name := range headers.Names() {
		if !isSet[name] {
			a.ok.HeadersToRemove = append(a.ok.HeadersToRemove, name)
		}
	}
	a.size += token.HeapBytes(cap(a.ok.HeadersToRemove) * int(unsafe.Sizeof("")))
	if revocations != nil {
		a.keys = revocations.Keys(id.Issuer, id.TokenID, id.SessionID, id.Subject, id.Audience)
		// storage.Keys: two hashed keys, flags and the cutoff levels (the
		// issuer, each audience, and with a subject, the subject and
		// subject + each audience), 16 bytes each.
		levels := 1 + len(id.Audience)
		if id.Subject != "" {
			levels *= 2
		}
		a.size += token.HeapBytes(64) + token.HeapBytes(16*levels)
	}
	return a
}

// Size is the bytes a holds, as the verifier's cache counts them.
func (a *allowed) Size() int { return a.size }

// allowAnswer holds every per-request object of an allow answer, so that
// one allocation makes them all; the identity's parts are shared.
type allowAnswer struct {
	resp    authv3.CheckResponse
	meta    structpb.Struct
	id      structpb.Value
	idValue structpb.Value_StringValue
}

func allowResponse(a *allowed, decisionID string) *authv3.CheckResponse {
	return allowRuleResponse(a, decisionID, nil, nil)
}

// allowRuleResponse is allowResponse with the route policy's rule and
// policy in the metadata (when rule is not nil).
func allowRuleResponse(a *allowed, decisionID string, rule, policyName *structpb.Value) *authv3.CheckResponse {
	x := &allowAnswer{}
	x.idValue.StringValue = decisionID
	x.id.Kind = &x.idValue
	n := 5
	if rule != nil {
		n = 7
	}
	m := make(map[string]*structpb.Value, n)
	m["reason"], m["decision_id"] = reasonValues[ReasonAllowed], &x.id
	m["iss"], m["sub"], m["jti"] = a.iss, &a.sub, &a.jti
	if rule != nil {
		m["rule"], m["policy"] = rule, policyName
	}
	x.meta.Fields = m
	x.resp.Status = okStatus
	x.resp.HttpResponse = &a.answer
	x.resp.DynamicMetadata = &x.meta
	return &x.resp
}

// denial is the fixed part of a denied answer for one reason.
type denial struct {
	status *status.Status
	http   *authv3.CheckResponse_DeniedResponse
}

var (
	denials      [numReasons]denial
	reasonValues [numReasons]*structpb.Value
)

func init() {
	for _, r := range Reasons() {
		reasonValues[r] = structpb.NewStringValue(r.String())
		if reasons[r].grpc != codes.OK {
			denials[r] = newDenial(r)
		}
	}
	prepareHTTPReasons()
}

func newDenial(r Reason) denial {
	info := reasons[r]
	headers := []*corev3.HeaderValueOption{
		header("content-type", "application/json"),
		header("cache-control", "no-store"),
	}
	switch info.http {
	case http.StatusUnauthorized:
		challenge := `Bearer realm="` + Realm + `"`
		if r != ReasonTokenMissing {
			// RFC 6750 §3.1: a request without a token gets no error code.
			challenge += `, error="` + info.errorCode + `", error_description="` + info.description + `"`
		}
		headers = append([]*corev3.HeaderValueOption{header("www-authenticate", challenge)}, headers...)
	case http.StatusServiceUnavailable:
		headers = append(headers, header("retry-after", "1"))
	}
	body, _ := json.Marshal(map[string]string{"error": info.errorCode, "reason": info.name})
	if r == ReasonIntrospectionInactive {
		// RFC 7662 §2.2: the introspection response of an inactive token.
		body = []byte(`{"active":false}`)
	}
	return denial{
		status: &status.Status{Code: int32(info.grpc), Message: info.name},
		http: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(info.http)},
			Headers: headers,
			Body:    string(body),
		}},
	}
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func denyResponse(r Reason, decisionID string, id *token.Identity) *authv3.CheckResponse {
	fields := map[string]*structpb.Value{
		"reason":      reasonValues[r],
		"decision_id": structpb.NewStringValue(decisionID),
	}
	if id != nil {
		fields["iss"] = structpb.NewStringValue(id.Issuer)
		fields["sub"] = structpb.NewStringValue(id.Subject)
		fields["jti"] = structpb.NewStringValue(id.TokenID)
	}
	d := denials[r]
	return &authv3.CheckResponse{
		Status:          d.status,
		HttpResponse:    d.http,
		DynamicMetadata: &structpb.Struct{Fields: fields},
	}
}

// subjectBytes estimates the heap a policy subject holds: its strings, and
// its claims when kept (a decoded JSON object: each key and value, with
// the map's and interfaces' overhead).
func subjectBytes(sub *policy.Subject) int {
	n := token.HeapBytes(int(unsafe.Sizeof(*sub)))
	for _, list := range [][]string{sub.Audiences, sub.Scopes, sub.Roles} {
		n += token.HeapBytes(cap(list) * int(unsafe.Sizeof("")))
		for _, s := range list {
			n += token.HeapBytes(len(s))
		}
	}
	if sub.Claims != nil {
		n += valueBytes(sub.Claims)
	}
	return n
}

func valueBytes(v any) int {
	const slot = 48 // a map entry or slice element: a string header and an interface, with overhead
	switch v := v.(type) {
	case map[string]any:
		n := 64
		for k, e := range v {
			n += slot + len(k) + valueBytes(e)
		}
		return n
	case []any:
		n := 24
		for _, e := range v {
			n += slot + valueBytes(e)
		}
		return n
	case string:
		return len(v)
	}
	return 8
}
