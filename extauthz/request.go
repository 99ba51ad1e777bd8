package extauthz

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// request is what a decision needs from a CheckRequest.
type request struct {
	authorization string
	requestID     string
	method        string
	host          string
	path          string
}

// parseRequest reads the HTTP attributes Envoy sends. Header names arrive in
// lower case, either in the headers map or, when Envoy is configured with
// encode_raw_headers, in header_map.
func parseRequest(req *authv3.CheckRequest) request {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := request{method: h.GetMethod(), host: h.GetHost(), path: h.GetPath()}
	if headers := h.GetHeaders(); len(headers) > 0 {
		r.authorization = headers["authorization"]
		r.requestID = headers["x-request-id"]
		return r
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		switch hv.GetKey() {
		case "authorization":
			r.authorization = v
		case "x-request-id":
			r.requestID = v
		}
	}
	return r
}

// bearerToken extracts the token from an Authorization header value
// (RFC 6750 §2.1: the scheme is case-insensitive). No header, or another
// scheme, is a missing token; "Bearer" with nothing usable after it is
// malformed. The token's own syntax (two tokens, stray spaces or commas
// included) is the verifier's to judge.
func bearerToken(authorization string) (string, Reason) {
	if authorization == "" {
		return "", ReasonTokenMissing
	}
	scheme, rest, _ := strings.Cut(authorization, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ReasonTokenMissing
	}
	tok := strings.Trim(rest, " \t")
	if tok == "" {
		return "", ReasonTokenMalformed
	}
	return tok, ReasonAllowed
}
