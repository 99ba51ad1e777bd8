package extauthz

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// metrics are the adapter's Prometheus series. Label values come only from
// the closed set of reasons, and every reason is exported at zero from the
// start.
type metrics struct {
	decisions [numProtocols][numReasons]prometheus.Counter
	errors    [numProtocols]prometheus.Counter
	duration  [numProtocols]prometheus.Observer
}

// newMetrics registers the adapter's series with reg (nil: not registered):
// all of them, or none and an error.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_check_decisions_total",
		Help: "Check answers by protocol (grpc, http), decision (allow, deny) and reason.",
	}, []string{"protocol", "decision", "reason"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_check_errors_total",
		Help: "Checks answered without a decision (gRPC UNAVAILABLE, HTTP 503), by protocol.",
	}, []string{"protocol"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokengate_check_duration_seconds",
		Help:    "Time to decide one Check, in process, by protocol.",
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1},
	}, []string{"protocol"})
	if reg != nil {
		if err := register(reg, decisions, errs, duration); err != nil {
			return nil, err
		}
	}
	m := &metrics{}
	for p := range numProtocols {
		proto := p.String()
		m.errors[p] = errs.WithLabelValues(proto)
		m.duration[p] = duration.WithLabelValues(proto)
		for _, r := range Reasons() {
			decision := "deny"
			if r.GRPCCode() == codes.OK {
				decision = "allow"
			}
			m.decisions[p][r] = decisions.WithLabelValues(proto, decision, r.String())
		}
	}
	return m, nil
}

// register registers cs with reg, all or none: if one is refused, those
// registered before it are unregistered and the refusal is returned.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) observe(p Protocol, r Reason, start time.Time) {
	m.decisions[p][r].Inc()
	m.duration[p].Observe(time.Since(start).Seconds())
}

func (m *metrics) observeError(p Protocol, start time.Time) {
	m.errors[p].Inc()
	m.duration[p].Observe(time.Since(start).Seconds())
}

// subjectHash identifies a subject in logs without writing it: the first 12
// hex digits of its SHA-256.
func subjectHash(sub string) string {
	if sub == "" {
		return ""
	}
	h := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(h[:6])
}
