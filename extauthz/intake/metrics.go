package intake

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Source labels of tokengate_webhook_events_total.
const (
	sourceFusionAuth  = "fusionauth"
	sourceBackchannel = "backchannel-logout"
)

// eventResults are the result label's values: applied (stored), duplicate
// (an event id seen before), ignored (acknowledged, nothing to do), rejected
// (answered 4xx or 5xx).
var eventResults = []string{"applied", "duplicate", "ignored", "rejected"}

// webhookEvents registers tokengate_webhook_events_total with reg (nil: not
// registered) and returns it with every type and result of source at zero.
// The FusionAuth and back-channel receivers share the family: the second to
// register gets the first one's.
func webhookEvents(reg prometheus.Registerer, source string, types []string) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_webhook_events_total",
		Help: "Revocation events received, by source, event type and result (applied, duplicate, ignored, rejected).",
	}, []string{"source", "type", "result"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			existing, ok := c, false
			if errors.As(err, &already) {
				existing, ok = already.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				return nil, err
			}
			c = existing
		}
	}
	for _, typ := range types {
		for _, result := range eventResults {
			c.WithLabelValues(source, typ, result)
		}
	}
	return c, nil
}
