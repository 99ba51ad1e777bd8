package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/extauthz/token/devissuer"
)

const devAudience = "tokengate-dev"

// runDev serves on loopback with a development issuer whose key is generated
// at start. It is the README's run command: nothing else needs installing.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := defaultConfig()
	cfg.Listen.AuthzHTTP = "127.0.0.1:9192"
	fs := newFlagSet("dev", "[--grpc ADDR] [--http ADDR] [--authz-http ADDR] [--data DIR] [--log-format FORMAT]",
		"Serves on loopback with a built-in development issuer, an admin token generated\nat start and the embedded store in DIR, and prints a walkthrough. Never use it\nin front of real traffic.")
	fs.StringVar(&cfg.Listen.GRPC, "grpc", cfg.Listen.GRPC, "gRPC listen address `ADDR` (loopback only)")
	fs.StringVar(&cfg.Listen.HTTP, "http", cfg.Listen.HTTP, "HTTP listen address `ADDR` (loopback only)")
	fs.StringVar(&cfg.Listen.AuthzHTTP, "authz-http", cfg.Listen.AuthzHTTP, "HTTP authorization endpoint's listen address `ADDR`, envoy mode (loopback only; empty: off)")
	fs.StringVar(&cfg.Log.Format, "log-format", "text", "log `FORMAT`: text or json")
	data := fs.String("data", "./tokengate-data", "directory `DIR` of the embedded revocation store (created if missing)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	cfg.Shutdown.DrainDelay = 0
	cfg.Storage.Path = filepath.Join(*data, "tokengate.db")
	addrs := []string{cfg.Listen.GRPC, cfg.Listen.HTTP}
	if cfg.Listen.AuthzHTTP != "" {
		addrs = append(addrs, cfg.Listen.AuthzHTTP)
	}
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || !token.IsLoopback(host) {
			return fmt.Errorf("dev: %q is not a loopback address; dev mode never listens beyond this machine", addr)
		}
	}
	grpcLis, err := net.Listen("tcp", cfg.Listen.GRPC)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("dev: %w", err)
	}
	base := "http://" + httpLis.Addr().String() + "/dev"
	iss, err := devissuer.New(base, devAudience)
	if err != nil {
		return err
	}
	dev := defaultIssuer()
	dev.Name, dev.Issuer, dev.JWKSURI, dev.Audiences = "dev", base, base+"/jwks.json", []string{devAudience}
	cfg.Issuers = []IssuerConfig{dev}
	var secret [24]byte
	rand.Read(secret[:])
	cfg.Admin.Token = hex.EncodeToString(secret[:])
	cfg.JWKS.RefreshInterval = time.Minute
	built, err := cfg.build()
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	tuneMemory(getenv, "/", log)
	return serve(ctx, built, log, serveHooks{
		grpcListener: grpcLis,
		httpListener: httpLis,
		mount: func(mux *http.ServeMux) {
			mux.Handle("GET /dev/", http.StripPrefix("/dev", iss.Handler()))
			mux.Handle("POST /dev/token", devTokenHandler(iss))
		},
		started: func(addrs listenAddrs) {
			tok, err := iss.Mint("dev-user", 15*time.Minute, nil)
			if err != nil {
				return
			}
			fmt.Fprint(stdout, devBanner(addrs, tok, cfg.Admin.Token))
		},
	})
}

// devTokenHandler mints a token: POST {"sub": "...", "ttl": "15m", "claims": {...}}.
func devTokenHandler(iss *devissuer.Issuer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Sub    string         `json:"sub"`
			TTL    string         `json:"ttl"`
			Claims map[string]any `json:"claims"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			devError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return
		}
		if req.Sub == "" {
			req.Sub = "dev-user"
		}
		ttl := 15 * time.Minute
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 || d > time.Hour {
				devError(w, http.StatusBadRequest, "ttl must be a duration between 1s and 1h")
				return
			}
			ttl = d
		}
		for _, k := range []string{"iss", "iat", "exp"} {
			delete(req.Claims, k)
		}
		tok, err := iss.Mint(req.Sub, ttl, req.Claims)
		if err != nil {
			devError(w, http.StatusInternalServerError, "sign: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": int(ttl.Seconds())})
	})
}

func devError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func devBanner(addrs listenAddrs, tok, admin string) string {
	line := strings.Repeat("!", 78)
	authz := ""
	if addrs.authzHTTP != "" {
		authz = fmt.Sprintf(`
Or over HTTP, as Envoy's HTTP ext_authz, nginx or Caddy would ask (200 with
x-auth-subject: allowed; 401 with a challenge: denied):

  curl -i http://%s/orders -H "Authorization: Bearer $TOKEN"
`, addrs.authzHTTP)
	}
	return fmt.Sprintf(`%[1]s
!! tokengate DEV MODE — for development only. The issuer key is generated at
!! start and anyone on this machine can mint tokens at POST /dev/token.
!! Never use dev mode in front of real traffic.
%[1]s

gRPC ext_authz:  %[2]s
HTTP:            http://%[3]s  (/healthz /readyz /metrics /dev/jwks.json)
HTTP ext_authz:  %[6]s

A token for sub "dev-user", valid 15 minutes:

  TOKEN=%[4]s

Check it as Envoy would (grpcurl uses the server's reflection):

  grpcurl -plaintext -d '{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"authorization":"Bearer '"$TOKEN"'"}}}}}' \
    %[2]s envoy.service.auth.v3.Authorization/Check
%[7]s
Log it out for real: revoke it through the admin API, then run the check
again (now denied: 401, reason token_revoked):

  ADMIN=%[5]s
  curl -s -X POST http://%[3]s/v1/revocations -H "Authorization: Bearer $ADMIN" -d '{"token":"'"$TOKEN"'"}'

Mint another:

  curl -s -X POST http://%[3]s/dev/token -d '{"sub":"alice","ttl":"5m","claims":{"roles":["admin"]}}'

`, line, addrs.grpc, addrs.http, tok, admin, orOff(addrs.authzHTTP), authz)
}

// orOff is addr, or "off" when empty.
func orOff(addr string) string {
	if addr == "" {
		return "off"
	}
	return "http://" + addr + "  (any path; envoy mode)"
}
