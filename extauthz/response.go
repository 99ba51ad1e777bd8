package extauthz

import (
	"encoding/json"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
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
// by every answer for that token.
type allowed struct {
	answer        *authv3.CheckResponse_OkResponse
	iss, sub, jti *structpb.Value
	keys          *storage.Keys // the token's revocation lookups
}

// Derive returns the function the verifier calls once per verified token to
// prepare its allow answer: identity headers set with OVERWRITE_IF_EXISTS_OR_ADD,
// and every identity header it does not set listed in headers_to_remove.
func Derive(headers *policy.HeaderMap, revocations Revocations) func(*token.Identity) any {
	return func(id *token.Identity) any { return newAllowed(headers, revocations, id) }
}

func newAllowed(headers *policy.HeaderMap, revocations Revocations, id *token.Identity) *allowed {
	set := headers.Headers(id.Issuer, id.Subject, id.TokenID, id.Claims)
	ok := &authv3.OkHttpResponse{Headers: make([]*corev3.HeaderValueOption, 0, len(set))}
	isSet := make(map[string]bool, len(set))
	for _, h := range set {
		isSet[h.Name] = true
		ok.Headers = append(ok.Headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, name := range headers.Names() {
		if !isSet[name] {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	a := &allowed{
		answer: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		iss:    structpb.NewStringValue(id.Issuer),
		sub:    structpb.NewStringValue(id.Subject),
		jti:    structpb.NewStringValue(id.TokenID),
	}
	if revocations != nil {
		a.keys = revocations.Keys(id.Issuer, id.TokenID, id.SessionID, id.Subject, id.Audience)
	}
	return a
}

// allowAnswer holds every per-request object of an allow answer, so that
// one allocation makes them all; the identity's parts are shared.
type allowAnswer struct {
	resp    authv3.CheckResponse
	meta    structpb.Struct
	id      structpb.Value
	idValue structpb.Value_StringValue
}

func allowResponse(a *allowed, decisionID string) *authv3.CheckResponse {
	x := &allowAnswer{}
	x.idValue.StringValue = decisionID
	x.id.Kind = &x.idValue
	x.meta.Fields = map[string]*structpb.Value{
		"reason":      reasonValues[ReasonAllowed],
		"decision_id": &x.id,
		"iss":         a.iss,
		"sub":         a.sub,
		"jti":         a.jti,
	}
	x.resp.Status = okStatus
	x.resp.HttpResponse = a.answer
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
		if r != ReasonAllowed {
			denials[r] = newDenial(r)
		}
	}
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
