package extauthz

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// request is what a decision needs from a CheckRequest.
type request struct {
	authorization string
	// authorizations counts the Authorization headers: more than one is
	// malformed, whichever comes first (an upstream may read another one
	// than we do).
	authorizations int
	// variant is set when a header is a managed identity header but for
	// '_' in place of '-' or the case of its letters.
	variant   bool
	requestID string
	method    string
	host      string
	path      string
}

// parseRequest reads the HTTP attributes Envoy sends. Header names arrive in
// lower case, either in the headers map (where Envoy joins repeated headers
// with ",") or, when Envoy is configured with encode_raw_headers, in
// header_map (one entry per header line). managed are the identity header
// names tokengate sets or removes upstream.
func parseRequest(req *authv3.CheckRequest, managed []string) request {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := request{method: h.GetMethod(), host: h.GetHost(), path: h.GetPath()}
	if headers := h.GetHeaders(); len(headers) > 0 {
		for k, v := range headers {
			r.header(k, v, managed)
		}
		return r
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		r.header(hv.GetKey(), v, managed)
	}
	return r
}

func (r *request) header(k, v string, managed []string) {
	switch {
	case strings.EqualFold(k, "authorization"):
		r.authorization = v
		r.authorizations++
	case k == "x-request-id":
		r.requestID = v
	case !r.variant:
		for _, m := range managed {
			if variantOf(k, m) {
				r.variant = true
				break
			}
		}
	}
}

// variantOf reports whether header name h is managed name m spelled
// differently: the same letters with any case, and '_' and '-' mixed. CGI,
// WSGI, PHP and others read HTTP_X_AUTH_SUBJECT for both x-auth-subject and
// x_auth_subject, so a client-sent variant would reach them as the identity
// header that tokengate overwrites or removes only under its own name.
func variantOf(h, m string) bool {
	if len(h) != len(m) || h == m {
		return false
	}
	for i := 0; i < len(h); i++ {
		if canonicalByte(h[i]) != canonicalByte(m[i]) {
			return false
		}
	}
	return true
}

func canonicalByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// bearerToken extracts the token from an Authorization header value
// (RFC 6750 §2.1: the scheme is case-insensitive). No header, or another
// scheme, is a missing token; "Bearer" with nothing usable after it is
// malformed, and so is any comma: no bearer credential has one, and it is
// how Envoy joins two Authorization headers. The token's own syntax (two
// tokens, stray spaces included) is the verifier's to judge.
func bearerToken(authorization string) (string, Reason) {
	if strings.IndexByte(authorization, ',') >= 0 {
		return "", ReasonTokenMalformed
	}
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
