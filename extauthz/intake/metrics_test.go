package intake_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz/intake"
)

// webhookCount is tokengate_webhook_events_total{source,type,result} in
// reg; -1 when the series is not exported.
func webhookCount(t testing.TB, reg *prometheus.Registry, source, typ, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokengate_webhook_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == source && labels["type"] == typ && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestWebhookEventsExportedFromTheStart: both receivers share one registry
// and one family, and every type and result is exported at zero before the
// first event, so that an alert on rejections has a series to watch.
func TestWebhookEventsExportedFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := intake.NewBackchannel(intake.BackchannelOptions{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := intake.NewFusionAuth(intake.FusionAuthOptions{Registerer: reg, HeaderName: "x-secret", HeaderValue: "s"}); err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]bool{{"backchannel-logout", "logout"}: true}
	for _, typ := range intake.EventTypes {
		want[[2]string{"fusionauth", typ}] = true
	}
	for st := range want {
		for _, result := range []string{"applied", "duplicate", "ignored", "rejected"} {
			if got := webhookCount(t, reg, st[0], st[1], result); got != 0 {
				t.Errorf("%s %s %s = %v before any event, want 0 (-1: not exported)", st[0], st[1], result, got)
			}
		}
	}
}
