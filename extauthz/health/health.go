// Package health tracks whether tokengate can serve: named components (each
// issuer's keys, later the revocation store) report ready or not, and the
// aggregate drives both the gRPC health service and the HTTP readiness probe.
// Shutdown turns everything NOT_SERVING first, so that load balancers and
// Envoy's health checks stop sending traffic before the server drains.
package health

import (
	"encoding/json"
	"net/http"
	"sort"
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

// New returns a Health whose gRPC service starts NOT_SERVING.
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

// Components lists the registered component names, sorted.
func (h *Health) Components() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.components))
	for n := range h.components {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
