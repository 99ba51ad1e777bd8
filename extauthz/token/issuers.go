package token

// KnowsIssuer reports whether iss (a token's iss claim) is a configured
// issuer's.
func (v *Verifier) KnowsIssuer(iss string) bool {
	_, ok := v.issuers[iss]
	return ok
}
