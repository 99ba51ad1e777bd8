// Package devissuer is a small OAuth token issuer for development: it
// generates signing keys, serves them as a JWKS (and an OIDC discovery
// document) over HTTP, and mints signed JWTs. `tokengate dev` and
// tokengate-bench run it; tests use it through tokentest. It is the
// counterpart of the verifier, and it imports nothing made for tests, so the
// binaries can carry it.
package devissuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Issuer signs tokens with keys it generated.
type Issuer struct {
	// URL is the iss claim of minted tokens; for discovery it must be where
	// Handler is served.
	URL string
	// Audience is the default aud of minted tokens.
	Audience string

	mu      sync.RWMutex
	keys    []signer // published; the first one signs by default
	fetches atomic.Int64
	jwksErr atomic.Bool
}

type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

// New returns an issuer with one RSA-2048 key (RS256).
func New(url, audience string) (*Issuer, error) {
	iss := &Issuer{URL: url, Audience: audience}
	if _, err := iss.AddKey("RS256"); err != nil {
		return nil, err
	}
	return iss, nil
}

// AddKey generates a key for alg (RS256, RS384, RS512, PS256, PS384, PS512,
// ES256, ES384 or ES512), publishes it
// and makes it the default signer. It returns its kid.
func (iss *Issuer) AddKey(alg string) (string, error) {
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return "", fmt.Errorf("devissuer: unsupported algorithm %s", alg)
	}
	if err != nil {
		return "", err
	}
	kid := randomID()
	iss.mu.Lock()
	iss.keys = append([]signer{{kid: kid, method: jwt.GetSigningMethod(alg), key: key}}, iss.keys...)
	iss.mu.Unlock()
	return kid, nil
}

// UseKey publishes key under kid and makes it the default signer. The
// algorithm follows the key: EdDSA for Ed25519, ES256, ES384 or ES512 for
// ECDSA P-256, P-384 or P-521, RS256 for RSA. With a key derived from a fixed seed (see
// ed25519.NewKeyFromSeed) and fixed claims, the minted tokens are the same
// on every run: Ed25519 signatures are deterministic.
func (iss *Issuer) UseKey(kid string, key crypto.Signer) error {
	var alg string
	switch k := key.(type) {
	case ed25519.PrivateKey:
		alg = "EdDSA"
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			alg = "ES256"
		case elliptic.P384():
			alg = "ES384"
		case elliptic.P521():
			alg = "ES512"
		default:
			return fmt.Errorf("tokentest: unsupported curve %s", k.Curve.Params().Name)
		}
	case *rsa.PrivateKey:
		alg = "RS256"
	default:
		return fmt.Errorf("tokentest: unsupported key type %T", key)
	}
	iss.mu.Lock()
	defer iss.mu.Unlock()
	for _, s := range iss.keys {
		if s.kid == kid {
			return fmt.Errorf("tokentest: kid %q already published", kid)
		}
	}
	iss.keys = append([]signer{{kid: kid, method: jwt.GetSigningMethod(alg), key: key}}, iss.keys...)
	return nil
}

// PublicKey returns the public key with the given kid, or nil.
func (iss *Issuer) PublicKey(kid string) crypto.PublicKey {
	iss.mu.RLock()
	defer iss.mu.RUnlock()
	for _, s := range iss.keys {
		if s.kid == kid {
			return s.key.Public()
		}
	}
	return nil
}

// KID returns the default signing key's id.
func (iss *Issuer) KID() string {
	iss.mu.RLock()
	defer iss.mu.RUnlock()
	return iss.keys[0].kid
}

// JWKS is the public key set, as served.
func (iss *Issuer) JWKS() ([]byte, error) {
	iss.mu.RLock()
	defer iss.mu.RUnlock()
	store := jwkset.NewMemoryStorage()
	for _, s := range iss.keys {
		jwk, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.ALG(s.method.Alg()), USE: jwkset.UseSig},
		})
		if err != nil {
			return nil, err
		}
		if err := store.KeyWrite(context.Background(), jwk); err != nil {
			return nil, err
		}
	}
	return store.JSONPublic(context.Background())
}

// Fetches counts JWKS requests served by Handler.
func (iss *Issuer) Fetches() int64 { return iss.fetches.Load() }

// FailJWKS makes Handler answer 503 for the JWKS while on, as an IdP outage.
func (iss *Issuer) FailJWKS(on bool) { iss.jwksErr.Store(on) }

// Handler serves /jwks.json and /.well-known/openid-configuration.
func (iss *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, r *http.Request) {
		iss.fetches.Add(1)
		if iss.jwksErr.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		body, err := iss.JWKS()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss.URL, "jwks_uri": iss.URL + "/jwks.json"})
	})
	return mux
}

// Claims returns the claims of a fresh token for sub, valid for ttl: iss,
// aud, sub, jti, iat and exp.
func (iss *Issuer) Claims(sub string, ttl time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": iss.URL,
		"aud": iss.Audience,
		"sub": sub,
		"jti": randomID(),
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}
}

// Mint signs a fresh token for sub, valid for ttl, with extra claims merged in.
func (iss *Issuer) Mint(sub string, ttl time.Duration, extra map[string]any) (string, error) {
	c := iss.Claims(sub, ttl)
	maps.Copy(c, extra)
	return iss.Sign(c, nil)
}

// Sign signs claims with the default key. header entries are set on the JWS
// header after kid and typ, so a test can override or delete (nil) them.
func (iss *Issuer) Sign(claims jwt.MapClaims, header map[string]any) (string, error) {
	iss.mu.RLock()
	s := iss.keys[0]
	iss.mu.RUnlock()
	t := jwt.NewWithClaims(s.method, claims)
	t.Header["kid"] = s.kid
	for k, v := range header {
		if v == nil {
			delete(t.Header, k)
			continue
		}
		t.Header[k] = v
	}
	return t.SignedString(s.key)
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// A Server serves an issuer's JWKS and discovery document ([Issuer.Handler])
// over HTTP on a listener of its own, until [Server.Close].
type Server struct {
	// Issuer is the issuer served.
	Issuer *Issuer
	// URL is where the server listens: http://host:port.
	URL string

	srv       *http.Server
	done      chan error // Serve's result, once it returns
	closeOnce sync.Once
	closeErr  error
}

// Listen listens on addr (host:port; port 0 picks a free port) and serves a
// new issuer there, with one RS256 key and the default audience audience.
// The issuer's URL, the iss claim of its tokens, is the server's, so that
// OIDC discovery finds its JWKS.
func Listen(addr, audience string) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	iss, err := New("http://"+lis.Addr().String(), audience)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	return Serve(lis, iss), nil
}

// Serve serves iss on lis, in a goroutine that Close ends. iss.URL is left
// as it is: an issuer may be served somewhere other than its iss claim
// says, as long as nothing looks it up by discovery.
func Serve(lis net.Listener, iss *Issuer) *Server {
	s := &Server{
		Issuer: iss,
		URL:    "http://" + lis.Addr().String(),
		srv:    &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second},
		done:   make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(lis) }()
	return s
}

// Close closes the listener and every connection, and returns once the
// server has stopped. Closing a closed server returns the first Close's
// result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.srv.Close()
		if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
			err = errors.Join(err, serveErr)
		}
		if err != nil {
			s.closeErr = fmt.Errorf("devissuer: close server %s: %w", s.URL, err)
		}
	})
	return s.closeErr
}
