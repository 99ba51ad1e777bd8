package token

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// The rules below are the only statement of what tokengate accepts as a
// signing algorithm and as a place to fetch keys from; configuration
// validation and the verifiers both call them.

// DefaultAlgorithms are accepted when an issuer lists none. HS* is never among
// them: HMACAlgorithms are added only for an issuer configured with an HMAC
// secret.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// HMACAlgorithms are added to the defaults of an issuer with an HMAC secret.
var HMACAlgorithms = []string{"HS256", "HS384", "HS512"}

var knownAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"}

// Algorithms returns the allowlist for a configured list: the list itself,
// or when it is empty the defaults (with HMACAlgorithms when hmacSecret).
func Algorithms(configured []string, hmacSecret bool) []string {
	switch {
	case len(configured) > 0:
		return configured
	case hmacSecret:
		return slices.Concat(DefaultAlgorithms, HMACAlgorithms)
	}
	return slices.Clone(DefaultAlgorithms)
}

// CheckAlgorithm says whether alg may be allowed: a known JWS algorithm,
// never "none", and HS* only with an HMAC secret.
func CheckAlgorithm(alg string, hmacSecret bool) error {
	switch {
	case strings.EqualFold(alg, "none"):
		return errors.New("algorithm none is never allowed")
	case !slices.Contains(knownAlgorithms, alg):
		return fmt.Errorf("unknown algorithm %q", alg)
	case strings.HasPrefix(alg, "HS") && !hmacSecret:
		return fmt.Errorf("algorithm %s needs an HMAC secret", alg)
	}
	return nil
}

// CheckRequireTyp says whether typ may be an issuer's required access
// token type: empty (none required), or at+jwt (RFC 9068), with or without
// "application/". Any other would refuse every token, or none that
// matters.
func CheckRequireTyp(typ string) error {
	if typ == "" || sameType(typ, "at+jwt") {
		return nil
	}
	return fmt.Errorf("want at+jwt (RFC 9068) or nothing, got %q", typ)
}

// CheckURL is the rule for every URL keys are fetched from (a JWKS, a
// discovery document, a redirect): https; plain http only on a loopback
// host or when allowInsecureHTTP is set.
func CheckURL(raw string, allowInsecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("not an absolute URL: %q", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowInsecureHTTP || IsLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q is plain http: use https, a loopback host, or allow_insecure_http", raw)
	}
	return fmt.Errorf("unsupported scheme in %q", raw)
}

// IsLoopback reports whether host is "localhost" or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
