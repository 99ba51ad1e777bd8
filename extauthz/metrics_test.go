package extauthz_test

import (
	"errors"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz"
)

// decisions is tokengate_check_decisions_total by reason in reg, summed
// over the protocols.
func decisions(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for key, v := range decisionsByProtocol(t, reg) {
		out[key[1]] += v
	}
	return out
}

// decisionsByProtocol is tokengate_check_decisions_total by protocol and
// reason in reg.
func decisionsByProtocol(t *testing.T, reg *prometheus.Registry) map[[2]string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tokengate_check_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key [2]string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "protocol":
					key[0] = l.GetValue()
				case "reason":
					key[1] = l.GetValue()
				}
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// TestDecisionsExportedFromTheStart: every reason has its series at zero
// before the first Check (an alert on token_revoked or revocations_stale
// has something to watch), and a Check counts under its reason.
func TestDecisionsExportedFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := newServer(t, extauthz.Options{Registerer: reg})
	got := decisions(t, reg)
	if len(got) != len(extauthz.Reasons()) {
		t.Errorf("%d reasons exported, want %d: %v", len(got), len(extauthz.Reasons()), got)
	}
	for _, r := range extauthz.Reasons() {
		if v, ok := got[r.String()]; !ok || v != 0 {
			t.Errorf("before any Check, %s = %v (exported %v), want 0", r, v, ok)
		}
	}
	if _, err := srv.Check(t.Context(), &authv3.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := decisions(t, reg)["token_missing"]; got != 1 {
		t.Errorf("token_missing after a Check without a token = %v, want 1", got)
	}
	byProtocol := decisionsByProtocol(t, reg)
	for _, p := range []string{"grpc", "http"} {
		for _, r := range extauthz.Reasons() {
			if _, ok := byProtocol[[2]string{p, r.String()}]; !ok {
				t.Errorf("no series for protocol %s, reason %s", p, r)
			}
		}
	}
	if got := byProtocol[[2]string{"grpc", "token_missing"}]; got != 1 {
		t.Errorf("token_missing over gRPC = %v, want 1", got)
	}
}

// TestNewServerTwiceIntoOneRegistry: a second Server registering into the
// same registry gets an error that wraps prometheus's, not a panic, and the
// first one's series are still exported.
func TestNewServerTwiceIntoOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	newServer(t, extauthz.Options{Registerer: reg})
	srv, err := extauthz.NewServer(extauthz.Options{Registerer: reg})
	if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok || srv != nil {
		t.Fatalf("second NewServer = %v, %v; want nil and an AlreadyRegisteredError", srv, err)
	}
	if got := len(decisions(t, reg)); got != len(extauthz.Reasons()) {
		t.Errorf("%d reasons exported after the refused second server, want %d", got, len(extauthz.Reasons()))
	}
}

// TestNewServerRegistersAllOrNone: when one of the Check series' names is
// taken, NewServer fails and leaves none of its series registered.
func TestNewServerRegistersAllOrNone(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokengate_check_duration_seconds", Help: "Someone else's."})
	if err := reg.Register(taken); err != nil {
		t.Fatal(err)
	}
	if _, err := extauthz.NewServer(extauthz.Options{Registerer: reg}); err == nil {
		t.Fatal("NewServer with tokengate_check_duration_seconds taken succeeded")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokengate_check_duration_seconds" {
			t.Errorf("%s registered by a NewServer that failed", mf.GetName())
		}
	}
}
