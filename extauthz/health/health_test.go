package health_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/extauthz/health"
)

const authorization = "envoy.service.auth.v3.Authorization"

// readiness is what both probes say about a Health.
type readiness struct {
	grpc     map[string]healthpb.HealthCheckResponse_ServingStatus // by service
	http     int
	notReady map[string]string
}

func probe(t *testing.T, h *health.Health) readiness {
	t.Helper()
	r := readiness{grpc: map[string]healthpb.HealthCheckResponse_ServingStatus{}}
	for _, svc := range []string{"", authorization} {
		resp, err := h.GRPC().Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("gRPC health Check(%q): %v", svc, err)
		}
		r.grpc[svc] = resp.GetStatus()
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	r.http = rec.Code
	var body struct {
		Ready    bool              `json:"ready"`
		NotReady map[string]string `json:"not_ready"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("readiness body %q: %v", rec.Body, err)
	}
	if body.Ready != (rec.Code == http.StatusOK) {
		t.Errorf("readiness body says ready=%v with HTTP %d", body.Ready, rec.Code)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	r.notReady = body.NotReady
	return r
}

func serving(ok bool) readiness {
	st, code := healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable
	if ok {
		st, code = healthpb.HealthCheckResponse_SERVING, http.StatusOK
	}
	return readiness{grpc: map[string]healthpb.HealthCheckResponse_ServingStatus{"": st, authorization: st}, http: code}
}

func notServing(notReady map[string]string) readiness {
	r := serving(false)
	r.notReady = notReady
	return r
}

// TestComponentsDriveReadiness: the server is ready only when every
// registered component is, and says which are not; the gRPC health of the
// server ("") and of the Authorization service, and the HTTP probe, agree.
func TestComponentsDriveReadiness(t *testing.T) {
	cases := map[string]struct {
		steps func(h *health.Health)
		want  readiness
	}{
		"no components": {
			steps: func(*health.Health) {},
			want:  serving(true),
		},
		"registered, not ready": {
			steps: func(h *health.Health) {
				h.Register("issuer/a", "keys not loaded yet")
				h.Register("store", "revocations not loaded yet")
			},
			want: notServing(map[string]string{"issuer/a": "keys not loaded yet", "store": "revocations not loaded yet"}),
		},
		"one of two ready": {
			steps: func(h *health.Health) {
				h.Register("issuer/a", "keys not loaded yet")
				h.Register("store", "revocations not loaded yet")
				h.Set("issuer/a", true, "")
			},
			want: notServing(map[string]string{"store": "revocations not loaded yet"}),
		},
		"all ready": {
			steps: func(h *health.Health) {
				h.Register("issuer/a", "keys not loaded yet")
				h.Register("store", "revocations not loaded yet")
				h.Set("issuer/a", true, "")
				h.Set("store", true, "ignored when ready")
			},
			want: serving(true),
		},
		"ready, then lost": {
			steps: func(h *health.Health) {
				h.Register("store", "revocations not loaded yet")
				h.Set("store", true, "")
				h.Set("store", false, "")
			},
			want: notServing(map[string]string{"store": "not ready"}),
		},
		"shut down": {
			steps: func(h *health.Health) {
				h.Register("store", "revocations not loaded yet")
				h.Set("store", true, "")
				h.Shutdown()
			},
			want: notServing(map[string]string{"server": "shutting down"}),
		},
		"a component ready after shutdown": {
			steps: func(h *health.Health) {
				h.Register("store", "revocations not loaded yet")
				h.Shutdown()
				h.Set("store", true, "")
			},
			want: notServing(map[string]string{"server": "shutting down"}),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := health.New()
			tc.steps(h)
			got := probe(t, h)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(readiness{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("readiness (-want +got):\n%s", diff)
			}
			ready, notReady := h.Ready()
			if ready != (tc.want.http == http.StatusOK) || !cmp.Equal(notReady, tc.want.notReady, cmpopts.EquateEmpty()) {
				t.Errorf("Ready() = %v, %v; want it to agree with the probes", ready, notReady)
			}
		})
	}
}

// TestShutdownReachesWatchers: a client watching the Authorization service's
// health over gRPC (as Envoy's gRPC health check does) sees it go
// NOT_SERVING on Shutdown.
func TestShutdownReachesWatchers(t *testing.T) {
	h := health.New()
	h.Register("store", "revocations not loaded yet")
	h.Set("store", true, "")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, h.GRPC())
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	watch, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: authorization})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		return resp.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status = %v, want SERVING", got)
	}
	h.Shutdown()
	// Asked first, so that a Shutdown that changes nothing fails here
	// instead of leaving the watch waiting for an update that never comes.
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: authorization})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check after Shutdown = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watched status after Shutdown = %v, want NOT_SERVING", got)
	}
}
