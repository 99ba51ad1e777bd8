package extauthz

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TokenSource is one place where a request's token may be: Header names a
// header (authorization carries "Bearer <token>" as RFC 6750 §2.1 has it;
// any other header the bare token), Cookie a cookie in the Cookie header.
// Exactly one of them is set.
type TokenSource struct {
	Header string
	Cookie string
}

// DefaultTokenSources is where the token is when Options names no source:
// the Authorization header.
var DefaultTokenSources = []TokenSource{{Header: "authorization"}}

// maxTokenSources bounds the sources (request.headerSeen is a bit set).
const maxTokenSources = 16

// reservedHeaders may not be token sources: the proxy or the upstream give
// them another meaning (a pseudo-header, with its leading ':', is refused
// as well).
var reservedHeaders = []string{
	"cookie", "host", "x-request-id", "content-length", "content-type",
	"transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
	"proxy-authorization", "forwarded", "x-forwarded-for", "x-forwarded-host",
	"x-forwarded-proto", "x-envoy-original-path",
}

// ValidateTokenSources reports every problem of a source list, each error
// naming the source by its index (sources[i]): exactly one of a header or
// a cookie; a header name a lower-case RFC 9110 token, not a pseudo-header,
// not one of reservedHeaders, and neither one of managed (the identity
// headers tokengate sets for the upstream) nor a variant of one ('_' for
// '-'); a cookie name an RFC 6265 token; no source twice, nor two that an
// upstream reads as one (headers alike but for '_' and '-', cookies alike
// under cookieFold); between 1 and 16 sources.
func ValidateTokenSources(list []TokenSource, managed []string) error {
	var errs []error
	if len(list) == 0 || len(list) > maxTokenSources {
		errs = append(errs, fmt.Errorf("sources: want at least one and at most %d", maxTokenSources))
	}
	seen := map[TokenSource]bool{}
	for i, ts := range list {
		switch {
		case (ts.Header == "") == (ts.Cookie == ""):
			errs = append(errs, fmt.Errorf("sources[%d]: exactly one of header or cookie", i))
			continue
		case strings.HasPrefix(ts.Header, ":"):
			errs = append(errs, fmt.Errorf("sources[%d].header: %q is a pseudo-header", i, ts.Header))
		case ts.Header != "" && (!isToken(ts.Header) || strings.ToLower(ts.Header) != ts.Header):
			errs = append(errs, fmt.Errorf("sources[%d].header: %q is not a lower-case header name", i, ts.Header))
		case slices.Contains(managed, ts.Header):
			errs = append(errs, fmt.Errorf("sources[%d].header: %q is a header tokengate manages itself", i, ts.Header))
		case ts.Header != "" && slices.ContainsFunc(managed, func(m string) bool { return variantOf(ts.Header, m) }):
			errs = append(errs, fmt.Errorf("sources[%d].header: %q is a variant of %s, a header tokengate manages itself", i, ts.Header,
				managed[slices.IndexFunc(managed, func(m string) bool { return variantOf(ts.Header, m) })]))
		case ts.Header != "" && slices.ContainsFunc(reservedHeaders, func(m string) bool { return ts.Header == m || variantOf(ts.Header, m) }):
			errs = append(errs, fmt.Errorf("sources[%d].header: %q is a header the proxy or the upstream reads as something else", i, ts.Header))
		case ts.Cookie != "" && !isToken(ts.Cookie):
			errs = append(errs, fmt.Errorf("sources[%d].cookie: %q is not a cookie name (an RFC 6265 token)", i, ts.Cookie))
		case seen[ts]:
			errs = append(errs, fmt.Errorf("sources[%d]: %s is listed twice", i, ts.Header+ts.Cookie))
		default:
			for j, o := range list[:i] {
				switch {
				case ts.Header != "" && variantOf(ts.Header, o.Header):
					errs = append(errs, fmt.Errorf("sources[%d].header: %q is a variant of sources[%d], which an upstream reads as the same header", i, ts.Header, j))
				case ts.Cookie != "" && o.Cookie != "" && ts.Cookie != o.Cookie && cookieFoldEqual(ts.Cookie, o.Cookie):
					errs = append(errs, fmt.Errorf("sources[%d].cookie: %q is a variant of sources[%d], which an upstream reads as the same cookie", i, ts.Cookie, j))
				default:
					continue
				}
				break
			}
		}
		seen[ts] = true
	}
	return errors.Join(errs...)
}

// sources is a validated source list, as the request parser reads it.
type sources struct {
	authorization bool
	headers       []string // bare-token headers
	cookies       []string
	maxBytes      int // per source; 0: no limit
	// underscores: a managed or source header name has a '_', so a header
	// spelled with '-' may be its variant and every header is compared.
	underscores bool
}

func newSources(list []TokenSource, managed []string, maxBytes int) (*sources, error) {
	if list == nil {
		list = DefaultTokenSources
	}
	if err := ValidateTokenSources(list, managed); err != nil {
		return nil, err
	}
	s := &sources{maxBytes: maxBytes}
	for _, ts := range list {
		switch {
		case ts.Header == "authorization":
			s.authorization = true
		case ts.Header != "":
			s.headers = append(s.headers, ts.Header)
		default:
			s.cookies = append(s.cookies, ts.Cookie)
		}
	}
	for _, h := range slices.Concat(managed, s.headers) {
		s.underscores = s.underscores || strings.IndexByte(h, '_') >= 0
	}
	return s, nil
}

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
	protocol  Protocol
	requestID string
	method    string
	host      string
	path      string

	// The token of the sources other than authorization: the first found,
	// and whether another source (or a repeat of one) disagreed with it or
	// was malformed.
	token     string
	malformed bool
	// headerSeen marks the bare-token header sources seen, by index: one
	// seen twice is malformed, as a second Authorization header is.
	headerSeen uint64
}

// parseRequest reads the HTTP attributes Envoy sends. Header names arrive in
// lower case, either in the headers map (where Envoy joins repeated headers
// with ",", and Cookie lines with "; ") or, when Envoy is configured with encode_raw_headers, in
// header_map (one entry per header line). managed are the identity header
// names tokengate sets or removes upstream.
func parseRequest(req *authv3.CheckRequest, managed []string, src *sources) request {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := request{method: h.GetMethod(), host: h.GetHost(), path: h.GetPath()}
	if headers := h.GetHeaders(); len(headers) > 0 {
		for k, v := range headers {
			if len(src.cookies) > 0 && strings.EqualFold(k, "cookie") {
				// Envoy joins Cookie header lines with "; "
				// (HeaderMapImpl::delimiterByHeader), which reads as one
				// cookie-string; other repeated headers with ",". No cookie
				// name or value contains a comma, so splitting on it too is
				// right whichever join was made.
				for line := range strings.SplitSeq(v, ",") {
					r.cookie(line, src.cookies)
				}
				continue
			}
			r.header(k, v, managed, src)
		}
		return r
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		if k := hv.GetKey(); len(src.cookies) > 0 && strings.EqualFold(k, "cookie") {
			r.cookie(v, src.cookies)
			continue
		}
		r.header(hv.GetKey(), v, managed, src)
	}
	return r
}

func (r *request) header(k, v string, managed []string, src *sources) {
	switch {
	case src.authorization && len(k) == len("authorization") && strings.EqualFold(k, "authorization"):
		r.authorization = v
		r.authorizations++
	case len(src.headers) > 0 && r.bareHeader(k, v, src.headers, src.underscores || mayBeVariant(k)):
	case k == "x-request-id":
		r.requestID = v
	case !r.variant && (src.underscores || mayBeVariant(k)):
		for _, m := range managed {
			if variantOf(k, m) {
				r.variant = true
				break
			}
		}
	}
}

// mayBeVariant reports whether header name h could be a variant of a
// lower-case name without '_': only a '_' or an upper-case letter makes one.
// Envoy sends header names in lower case, so most headers are ruled out by
// this one scan, before any name is compared.
func mayBeVariant(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c == '_' || c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
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

// offer records a token found in a source other than authorization. An
// empty value is no token.
func (r *request) offer(tok string) {
	switch {
	case tok == "":
	case r.token == "":
		r.token = tok
	case r.token != tok:
		r.malformed = true
	}
}

// bareHeader reads k if it is one of the headers that carry the bare token,
// and reports whether it is. A header seen twice, or with a comma (how
// Envoy joins repeated headers), is malformed. A variant of one (see
// variantOf) is refused as a managed header's is: CGI, WSGI and PHP read
// x_access_token as x-access-token, so the upstream could take its value
// for the token that tokengate checked.
func (r *request) bareHeader(k, v string, headers []string, mayVary bool) bool {
	for i, h := range headers {
		if k != h {
			if mayVary && variantOf(k, h) {
				r.variant = true
				return true
			}
			continue
		}
		if r.headerSeen&(1<<i) != 0 || strings.IndexByte(v, ',') >= 0 {
			r.malformed = true
		}
		r.headerSeen |= 1 << i
		r.offer(v)
		return true
	}
	return false
}

// cookie reads one Cookie header line for the named cookies. A line that
// does not mention any of them, even under cookieFold, is not looked at:
// it cannot carry the token under any parser. One that does must be an
// RFC 6265 §4.2.1 cookie-string, name=value pairs separated by "; ", every
// name a token and every value cookie-octets, optionally in double quotes
// (which are not part of the value); anything else is malformed, since a
// lenient parser upstream might find another token in it than we would.
// So is a cookie whose name is one of names under cookieFold but not
// exactly: an upstream may read it as ours.
func (r *request) cookie(line string, names []string) {
	mentioned := false
	for _, n := range names {
		if cookieFoldContains(line, n) {
			mentioned = true
			break
		}
	}
	if !mentioned {
		return
	}
	for {
		pair, rest, more := strings.Cut(line, "; ")
		name, value, ok := strings.Cut(pair, "=")
		if !ok || !isToken(name) {
			r.malformed = true
			return
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		for i := range len(value) {
			if !isCookieOctet(value[i]) {
				r.malformed = true
				return
			}
		}
		for _, n := range names {
			if name == n {
				r.offer(value)
				break
			}
			if cookieFoldEqual(name, n) {
				r.malformed = true
				return
			}
		}
		if !more {
			return
		}
		line = rest
	}
}

// cookieFoldAt reads one unit of a cookie name at s[i] as some upstream
// may read it, and returns it and its length: %XX percent-decoded (PHP
// decodes cookie names), letters in lower case (ASP.NET Core looks cookies
// up case-insensitively), and '.', ' ' and '[' as '_' (PHP's renaming).
// Cookie names a and b are the same to some upstream if they fold alike.
func cookieFoldAt(s string, i int) (byte, int) {
	c, n := s[i], 1
	if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
		c, n = unhex(s[i+1])<<4|unhex(s[i+2]), 3
	}
	switch {
	case c >= 'A' && c <= 'Z':
		c += 'a' - 'A'
	case c == '.' || c == ' ' || c == '[':
		c = '_'
	}
	return c, n
}

// cookieFoldPrefix reports whether s begins with name under cookieFoldAt,
// and how many bytes of s that takes.
func cookieFoldPrefix(s, name string) (int, bool) {
	i, j := 0, 0
	for j < len(name) {
		if i >= len(s) {
			return 0, false
		}
		a, n := cookieFoldAt(s, i)
		b, m := cookieFoldAt(name, j)
		if a != b {
			return 0, false
		}
		i, j = i+n, j+m
	}
	return i, true
}

// cookieFoldEqual reports whether cookie names a and b fold alike.
func cookieFoldEqual(a, b string) bool {
	n, ok := cookieFoldPrefix(a, b)
	return ok && n == len(a)
}

// cookieFoldContains reports whether line holds name under cookieFoldAt.
func cookieFoldContains(line, name string) bool {
	if strings.Contains(line, name) {
		return true
	}
	for i := range len(line) {
		if _, ok := cookieFoldPrefix(line[i:], name); ok {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// isCookieOctet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E (RFC 6265
// §4.2.1): visible ASCII but for DQUOTE, comma, semicolon and backslash.
func isCookieOctet(c byte) bool {
	return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\'
}

// isToken reports whether s is an RFC 9110 token (a header name, and an
// RFC 6265 cookie name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// tokenOf is the request's token from the configured sources: missing if
// none has one; malformed if one is malformed, longer than maxBytes (0: no
// limit), or two disagree.
func (r *request) tokenOf(src *sources) (string, Reason) {
	tok := ""
	if src.authorization {
		if r.authorizations > 1 {
			return "", ReasonTokenMalformed
		}
		var reason Reason
		switch tok, reason = bearerToken(r.authorization); reason {
		case ReasonTokenMalformed:
			return "", reason
		case ReasonTokenMissing:
			tok = ""
		}
	}
	if r.malformed || tok != "" && r.token != "" && tok != r.token {
		return "", ReasonTokenMalformed
	}
	if tok == "" {
		tok = r.token
	}
	if tok == "" {
		return "", ReasonTokenMissing
	}
	if src.maxBytes > 0 && len(tok) > src.maxBytes {
		return "", ReasonTokenMalformed
	}
	return tok, ReasonAllowed
}

// hasToken reports whether the request presents a token (or something a
// token source holds that is malformed).
func (r *request) hasToken(src *sources) bool {
	_, reason := r.tokenOf(src)
	return reason != ReasonTokenMissing
}
