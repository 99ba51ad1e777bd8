package policy

import "strings"

// NormalizePath returns the path as the rules see it: the query and
// fragment dropped, percent-encoded unreserved characters decoded, "//"
// merged, "." and ".." segments resolved; a trailing slash is kept. It
// returns ErrPathInvalid for an encoded "/", "\" or NUL (%2F, %5C, %00), a
// literal "\", a malformed escape, a path not starting with "/", and a
// path climbing above "/".
//
// Escapes that stay (every one but the unreserved characters) are written
// with upper-case hex digits (RFC 3986 6.2.2.1), so that %c3%a9 and %C3%A9
// are the same path; a rule's path must be written that way. A control
// character (below 0x20, or DEL) is invalid: Envoy refuses one, and no
// rule can name it. A segment made a dot segment by decoding (%2e%2e) is
// resolved like the one written so. A trailing "." or ".." segment leaves
// a trailing slash ("/a/b/.." is "/a/"), as RFC 3986 5.2.4 does.
//
// The usual path (no "//", "/.", "%", "#", nor anything invalid) is
// returned as it is, its query cut off: no allocation.
func NormalizePath(path string) (string, error) {
	p, _, err := normalizePath(path)
	return p, err
}

// Byte classes of a path, for normalizePath's scan.
const (
	plainByte uint8 = iota
	endByte         // '?', '#'
	slashByte
	semicolonByte
	percentByte
	invalidByte // '\', a control character
)

var pathClass = func() (t [256]uint8) {
	for c := range 0x20 {
		t[c] = invalidByte
	}
	t[0x7f], t['\\'] = invalidByte, invalidByte
	t['?'], t['#'] = endByte, endByte
	t['/'], t[';'], t['%'] = slashByte, semicolonByte, percentByte
	return t
}()

// normalizePath is NormalizePath, and whether the normalised path has a
// ";" (to be read again without parameters).
func normalizePath(path string) (p string, semicolon bool, err error) {
	if path == "" || path[0] != '/' {
		return "", false, ErrPathInvalid
	}
	for i := 0; i < len(path); i++ {
		switch pathClass[path[i]] {
		case plainByte:
		case endByte:
			return path[:i], semicolon, nil
		case slashByte:
			if i+1 < len(path) && (path[i+1] == '/' || path[i+1] == '.') {
				return normalizeSlowSemicolon(path)
			}
		case semicolonByte:
			semicolon = true
		case percentByte:
			return normalizeSlowSemicolon(path)
		default:
			return "", false, ErrPathInvalid
		}
	}
	return path, semicolon, nil
}

// normalizeSlowSemicolon is normalizeSlow, and whether the path as sent
// (before its fragment or query) has a ";": resolving may remove the
// segment that had it ("..;" kept as a name, then popped by ".."), while
// Tomcat reads that segment as "..".
func normalizeSlowSemicolon(path string) (string, bool, error) {
	p, err := normalizeSlow(path)
	raw := path
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	return p, strings.IndexByte(raw, ';') >= 0, err
}

// normalizeSlow is NormalizePath for a path with something to decode or
// resolve.
func normalizeSlow(path string) (string, error) {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	// Decode first, so that %2e%2e is a ".." segment to resolve.
	var b strings.Builder
	b.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\' || c < 0x20 || c == 0x7f:
			return "", ErrPathInvalid
		case c != '%':
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(path) {
			return "", ErrPathInvalid
		}
		d, ok := unhex(path[i+1], path[i+2])
		if !ok {
			return "", ErrPathInvalid
		}
		switch {
		case d == '/' || d == '\\' || d == 0:
			return "", ErrPathInvalid
		case unreserved(d):
			b.WriteByte(d)
		default:
			const hexDigits = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexDigits[d>>4])
			b.WriteByte(hexDigits[d&0xf])
		}
		i += 2
	}
	decoded := b.String()
	// %252e, %252F (or %25%32%65, whose digits decode to the same): an
	// upstream that decodes twice reads a dot segment or a slash the rules
	// never saw.
	for i := strings.Index(decoded, "%25"); i >= 0; i = strings.Index(decoded, "%25") {
		if i+4 < len(decoded) && doubleEncoded(decoded[i+3], decoded[i+4]) {
			return "", ErrPathInvalid
		}
		decoded = decoded[i+3:]
	}
	return resolveDots(b.String())
}

// resolveDots merges empty segments and resolves "." and ".." in a decoded
// path starting with "/"; climbing above "/" is ErrPathInvalid.
func resolveDots(p string) (string, error) {
	segs := strings.Split(p[1:], "/")
	out := segs[:0]
	trailing := false
	for i, seg := range segs {
		last := i == len(segs)-1
		switch seg {
		case "":
			trailing = last
		case ".":
			trailing = last
		case "..":
			if len(out) == 0 {
				return "", ErrPathInvalid
			}
			out = out[:len(out)-1]
			trailing = last
		default:
			out = append(out, seg)
		}
	}
	if len(out) == 0 {
		return "/", nil
	}
	n := len(out)
	for _, s := range out {
		n += len(s)
	}
	if trailing {
		n++
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range out {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing {
		b.WriteByte('/')
	}
	return b.String(), nil
}

// dropParams is path (its query and fragment cut off) with the ";"
// parameters of every segment dropped, as Java servers read it (Tomcat
// reads "/public/..;/admin" as "/admin").
func dropParams(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	var b strings.Builder
	b.Grow(len(path))
	for len(path) > 0 {
		seg, rest, more := strings.Cut(path, "/")
		seg, _, _ = strings.Cut(seg, ";")
		b.WriteString(seg)
		if more {
			b.WriteByte('/')
		}
		path = rest
	}
	return b.String()
}

// doubleEncoded reports whether hi, lo are the hex digits of a byte that,
// escaped once more (%25 before them), hides a path delimiter from a
// single decoding: '.', '/', '\\', NUL or '%'.
func doubleEncoded(hi, lo byte) bool {
	d, ok := unhex(hi, lo)
	return ok && (d == '.' || d == '/' || d == '\\' || d == 0 || d == '%')
}
