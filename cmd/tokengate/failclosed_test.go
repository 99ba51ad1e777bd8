package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// unreachablePostgres returns the URL of a PostgreSQL server that is not
// there: a loopback port that was free a moment ago.
func unreachablePostgres(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://tokengate@%s/tokengate?sslmode=disable&connect_timeout=2", addr)
}

// notReady returns what /readyz says is not ready.
func notReady(t *testing.T, in *instance) map[string]string {
	t.Helper()
	_, body := httpGet(t, "http://"+in.httpAddr+"/readyz")
	var r struct {
		NotReady map[string]string `json:"not_ready"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return r.NotReady
}

// TestStoreUnreachableAtStartFailsClosedEvenWhenAllowed: with the store
// unreachable from the start, a replica has no revocations to decide from.
// revocation.on_stale: allow lets a replica that has loaded them once keep
// allowing when they go stale; it must not let one that never loaded them
// allow anything: Check is UNAVAILABLE (Envoy's failure mode decides) and
// gRPC health NOT_SERVING.
func TestStoreUnreachableAtStartFailsClosedEvenWhenAllowed(t *testing.T) {
	iss := tokentest.NewServer(t, "api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
revocation: {on_stale: allow, max_staleness: 1s, poll_interval: 200ms}
storage: {postgres_url: %q}
`, iss.URL, unreachablePostgres(t)))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	// Wait until the only thing missing is the store: the keys are loaded
	// and the store has been tried, so the answers below are the store's.
	eventually(t, "the issuer's keys load and the store is tried", func() bool {
		nr := notReady(t, in)
		_, keys := nr["issuer/idp"]
		_, store := nr["store"]
		return !keys && store && strings.Contains(in.logs.String(), "revocation store not ready; retrying")
	})
	for _, service := range []string{"", "envoy.service.auth.v3.Authorization"} {
		hc, err := in.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("gRPC health of %q = %v, %v; want NOT_SERVING", service, hc.GetStatus(), err)
		}
	}
	tok, err := iss.Mint("u", 10*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "api.example.com", Path: "/",
			Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
	if got := grpcCode(err); got != codes.Unavailable {
		t.Errorf("Check with the store unreachable since start = %v, %v; want Unavailable", resp, err)
	}
	if err := in.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestReplicasGoStaleWithPostgresDown: two replicas with max_staleness 1s
// (fail closed, the default) keep deciding from memory while PostgreSQL is
// down only until their view is older than that; then every token is denied
// with revocations_stale. Once it is back they catch up and allow again.
func TestReplicasGoStaleWithPostgresDown(t *testing.T) {
	cluster, url := tokengateDatabase(t)
	iss := tokentest.NewServer(t, "api")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: idp, issuer: %q, audiences: [api]}]
admin: {token: %q}
revocation: {max_staleness: 1s, poll_interval: 200ms}
storage: {postgres_url: %q}
`, iss.URL, testAdminToken, url))
	a := start(t, []string{"serve", "--config", cfg}, nil)
	b := start(t, []string{"serve", "--config", cfg}, nil)
	waitReady(t, a)
	waitReady(t, b)
	revoked, err := iss.Mint("one", 10*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	valid, err := iss.Mint("two", 10*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := a.revoke(t, `{"token":"`+revoked+`"}`); code != http.StatusCreated {
		t.Fatalf("revoke through A: %d", code)
	}
	eventually(t, "B denies the revoked token", func() bool { return b.decision(t, revoked) == "token_revoked" })
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if got := in.decision(t, valid); got != "allowed" {
			t.Fatalf("%s before the outage: %s, want allowed", name, got)
		}
	}

	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		eventually(t, name+" denies with revocations_stale", func() bool { return in.decision(t, valid) == "revocations_stale" })
		if got := in.decision(t, revoked); got != "revocations_stale" && got != "token_revoked" {
			t.Errorf("%s, stale, the revoked token: %s; want a denial", name, got)
		}
	}

	if err := cluster.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		eventually(t, name+" allows again once caught up", func() bool { return in.decision(t, valid) == "allowed" })
		if got := in.decision(t, revoked); got != "token_revoked" {
			t.Errorf("%s after the outage, the revoked token: %s, want token_revoked", name, got)
		}
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if err := in.stop(); err != nil {
			t.Errorf("%s shutdown: %v", name, err)
		}
	}
}
