package storage_test

import (
	"context"
	"errors"
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
	s, err := storage.Instrument(b, reg)
	if err != nil {
		t.Fatal(err)
	}
	x := storage.NewIndex()
	loaded := make(chan struct{})
	f, err := storage.NewFollower(s, x, storage.FollowerOptions{
		Registerer: reg, Poll: time.Hour, SweepInterval: time.Hour,
		OnLoad: func() { close(loaded) },
	})
	if err != nil {
		t.Fatal(err)
	}

	got := series(t, reg)
	for _, want := range []string{
		"tokengate_store_operation_duration_seconds op=apply result=ok",
		"tokengate_store_operation_duration_seconds op=unrevoke result=error",
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
	if err := f.WaitFor(ctx, res.Position); err != nil {
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

// TestInstrumentTwiceIntoOneRegistry: a second instrumented store
// registering into the same registry gets an error that wraps prometheus's,
// not a panic.
func TestInstrumentTwiceIntoOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := storage.Instrument(gapStore{}, reg); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Instrument(gapStore{}, reg)
	if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok || s != nil {
		t.Fatalf("second Instrument = %v, %v; want nil and an AlreadyRegisteredError", s, err)
	}
}

// TestNewFollowerTwiceIntoOneRegistry: a second Follower registering into
// the same registry gets an error that wraps prometheus's, not a panic, and
// the first one's series are still exported.
func TestNewFollowerTwiceIntoOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := storage.NewFollower(gapStore{}, storage.NewIndex(), storage.FollowerOptions{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	f, err := storage.NewFollower(gapStore{}, storage.NewIndex(), storage.FollowerOptions{Registerer: reg})
	if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok || f != nil {
		t.Fatalf("second NewFollower = %v, %v; want nil and an AlreadyRegisteredError", f, err)
	}
	if _, ok := series(t, reg)["tokengate_revocation_last_applied_seq"]; !ok {
		t.Error("the first follower's series are gone after the refused second one")
	}
}

// TestNewFollowerRegistersAllOrNone: when one of the follower's series'
// names is taken, NewFollower fails and leaves none of its series
// registered.
func TestNewFollowerRegistersAllOrNone(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokengate_revocations_swept_total", Help: "Someone else's."})
	if err := reg.Register(taken); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.NewFollower(gapStore{}, storage.NewIndex(), storage.FollowerOptions{Registerer: reg}); err == nil {
		t.Fatal("NewFollower with tokengate_revocations_swept_total taken succeeded")
	}
	for key := range series(t, reg) {
		if key != "tokengate_revocations_swept_total" {
			t.Errorf("%s registered by a NewFollower that failed", key)
		}
	}
}
