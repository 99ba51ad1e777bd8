package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/extauthz/token/tokentest"
)

// TestOptionalIssuerDownDoesNotBlockReadiness: one issuer's JWKS is down at
// start, and that issuer is not required. The replica is ready (/readyz 200,
// gRPC health SERVING), the healthy issuer's tokens are decided, and the
// down issuer's tokens alone get UNAVAILABLE (Envoy's failure mode decides).
func TestOptionalIssuerDownDoesNotBlockReadiness(t *testing.T) {
	up := tokentest.NewServer(t, "api")
	down := tokentest.NewServer(t, "api")
	down.FailJWKS(true)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers:
  - {name: up, issuer: %q, jwks_uri: %q, audiences: [api]}
  - {name: down, issuer: %q, jwks_uri: %q, audiences: [api], required: false}
`, up.URL, up.URL+"/jwks.json", down.URL, down.URL+"/jwks.json"))
	in := start(t, []string{"serve", "--config", cfg}, nil)

	waitReady(t, in)
	if code, body := httpGet(t, "http://"+in.httpAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		hc, err := in.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health %q = %v, %v; want SERVING", svc, hc.GetStatus(), err)
		}
	}

	if resp := in.check(t, mintToken(t, up, "u", time.Minute, nil)); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Errorf("a token of the healthy issuer: %v, want allowed", resp.GetDynamicMetadata().AsMap())
	}
	_, err := in.client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{"authorization": "Bearer " + mintToken(t, down, "u", time.Minute, nil)}}}}})
	if got := grpcCode(err); got != codes.Unavailable {
		t.Errorf("a token of the down issuer: %v, want Unavailable", err)
	}
}
