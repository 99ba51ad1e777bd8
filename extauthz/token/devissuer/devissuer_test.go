package devissuer_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokengate/tokengate/extauthz/token/devissuer"
)

func TestListenServesDiscoveryAndJWKS(t *testing.T) {
	srv, err := devissuer.Listen("127.0.0.1:0", "api")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	iss := srv.Issuer
	if iss.URL != srv.URL || !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("issuer URL %q, server URL %q; want the same http://127.0.0.1:PORT", iss.URL, srv.URL)
	}

	var discovery map[string]string
	getJSON(t, srv.URL+"/.well-known/openid-configuration", http.StatusOK, &discovery)
	if discovery["issuer"] != iss.URL || discovery["jwks_uri"] != iss.URL+"/jwks.json" {
		t.Errorf("discovery = %v, want issuer %s and jwks_uri %s/jwks.json", discovery, iss.URL, iss.URL)
	}
	var jwks struct {
		Keys []struct{ KID, ALG string }
	}
	getJSON(t, discovery["jwks_uri"], http.StatusOK, &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0].KID != iss.KID() || jwks.Keys[0].ALG != "RS256" {
		t.Errorf("JWKS keys = %+v, want one RS256 key %s", jwks.Keys, iss.KID())
	}
	if got := iss.Fetches(); got != 1 {
		t.Errorf("Fetches = %d, want 1", got)
	}

	iss.FailJWKS(true)
	getJSON(t, srv.URL+"/jwks.json", http.StatusServiceUnavailable, nil)
	iss.FailJWKS(false)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if resp, err := http.Get(srv.URL + "/jwks.json"); err == nil {
		resp.Body.Close()
		t.Error("the server still answers after Close")
	}
}

func TestMintVerifiesWithPublishedKey(t *testing.T) {
	iss, err := devissuer.New("https://idp.example", "api")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint("alice", time.Hour, map[string]any{"roles": []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		return iss.PublicKey(t.Header["kid"].(string)), nil
	}, jwt.WithIssuer("https://idp.example"), jwt.WithAudience("api"), jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if claims["sub"] != "alice" || claims["jti"] == "" {
		t.Errorf("claims = %v, want sub alice and a jti", claims)
	}
}

func TestServeKeepsIssuerName(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devissuer.New("acme.com", "api")
	if err != nil {
		t.Fatal(err)
	}
	srv := devissuer.Serve(lis, iss)
	defer srv.Close()
	if iss.URL != "acme.com" || srv.URL != "http://"+lis.Addr().String() {
		t.Errorf("issuer URL %q, server URL %q; want acme.com and the listener's", iss.URL, srv.URL)
	}
	getJSON(t, srv.URL+"/jwks.json", http.StatusOK, nil)
}

func getJSON(t *testing.T, url string, wantStatus int, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %s %s, want %d", url, resp.Status, body, wantStatus)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
}
