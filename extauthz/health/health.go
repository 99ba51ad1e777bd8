// Package health says whether tokengate can serve. Named components (in
// tokengate: each issuer's keys and the revocation store) are registered not
// ready and later marked ready or not, with the reason why not. The server is
// ready when every component is and Shutdown has not been called; that one
// state sets both gRPC health services in Services (SERVING or NOT_SERVING)
// and the HTTP readiness probe (200, or 503 listing what is not ready).
// Shutdown makes it NOT_SERVING for good, whatever the components say; the
// caller then waits before it stops the servers, so that load balancers and
// Envoy's health checks steer traffic away first.
package health

import (
	"encoding/json"
	"net/http"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Services whose gRPC health status follows readiness: the overall server
// ("") and the ext_authz service.
var Services = []string{"", "envoy.service.auth.v3.Authorization"}

// Health aggregates component readiness.
type Health struct {
	grpc *health.Server

	mu         sync.Mutex
	components map[string]string // name → "" when ready, else why not
	shutdown   bool
}

// New returns a Health with no components, and so ready (SERVING) until the
// first component registers.
func New() *Health {
	h := &Health{grpc: health.NewServer(), components: map[string]string{}}
	h.update()
	return h
}

// GRPC is the grpc.health.v1 service to register.
func (h *Health) GRPC() healthpb.HealthServer { return h.grpc }

// Register adds a component that is not ready yet.
func (h *Health) Register(name, why string) {
	h.Set(name, false, why)
}

// Set records a component's state; why says what is missing when not ready.
func (h *Health) Set(name string, ready bool, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ready {
		why = ""
	} else if why == "" {
		why = "not ready"
	}
	h.components[name] = why
	h.update()
}

// Shutdown marks the server NOT_SERVING for good.
func (h *Health) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shutdown = true
	h.update()
}

// Ready reports whether every component is ready and the server is not
// shutting down, with the reasons it is not.
func (h *Health) Ready() (bool, map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readyLocked()
}

func (h *Health) readyLocked() (bool, map[string]string) {
	problems := map[string]string{}
	for name, why := range h.components {
		if why != "" {
			problems[name] = why
		}
	}
	if h.shutdown {
		problems["server"] = "shutting down"
	}
	return len(problems) == 0, problems
}

func (h *Health) update() {
	ready, _ := h.readyLocked()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range Services {
		h.grpc.SetServingStatus(svc, st)
	}
}

// ServeHTTP is the readiness probe: 200 when ready, else 503 with the
// components that are not, as JSON.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ready, problems := h.Ready()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	body := struct {
		Ready    bool              `json:"ready"`
		NotReady map[string]string `json:"not_ready,omitempty"`
	}{ready, problems}
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(body)
}
