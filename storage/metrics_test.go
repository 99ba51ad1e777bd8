package storage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
)

// series flattens what reg exports: family name plus labels → value (a
// histogram's value is its sample count).
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsExportedFromTheStart: every storage series a dashboard or an
// alert needs is there at zero before the first event, and counts once
// events come.
func TestMetricsExportedFromTheStart(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	reg := prometheus.NewRegistry()
	s := storage.Instrument(b, reg)
	x := storage.NewIndex()
	loaded := make(chan struct{})
	f := storage.NewFollower(s, x, storage.FollowerOptions{
		Registerer: reg, Poll: time.Hour, SweepInterval: time.Hour,
		OnLoad: func() { close(loaded) },
	})

	got := series(t, reg)
	for _, want := range []string{
		"tokengate_store_operation_duration_seconds op=apply result=ok",
		"tokengate_store_operation_duration_seconds op=delete result=error",
		"tokengate_store_operation_duration_seconds op=sweep result=ok",
		"tokengate_revocations_swept_total where=store",
		"tokengate_revocations_swept_total where=index",
		"tokengate_revocation_sync_lag_seconds",
		"tokengate_revocations kind=token",
		"tokengate_revocations kind=cutoff",
		"tokengate_revocation_last_applied_seq",
	} {
		if v, ok := got[want]; !ok || v != 0 {
			t.Errorf("before any event, %s = %v (present %v), want 0", want, v, ok)
		}
	}
	if v := got["tokengate_revocation_staleness_seconds"]; v != 1e9 {
		t.Errorf("staleness before the first load = %v, want 1e9", v)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-loaded
	now := time.Now()
	res, err := s.Apply(ctx, storage.Write{Revocations: []storage.Revocation{{
		Kind: storage.KindToken, Issuer: "iss", Key: "jti-1", ExpiresAt: now.Add(time.Hour), CreatedAt: now,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WaitFor(ctx, res.Seq); err != nil {
		t.Fatal(err)
	}
	got = series(t, reg)
	for key, want := range map[string]float64{
		"tokengate_store_operation_duration_seconds op=apply result=ok":    1,
		"tokengate_store_operation_duration_seconds op=snapshot result=ok": 1,
		"tokengate_revocations kind=token":                                 1,
		"tokengate_revocation_sync_lag_seconds":                            1,
		"tokengate_revocation_last_applied_seq":                            float64(res.Seq),
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
