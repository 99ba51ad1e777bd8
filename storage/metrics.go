package storage

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// storeOps are the Store calls Instrument times, the op label's values.
var storeOps = []string{"apply", "unrevoke", "snapshot", "changes", "sweep"}

// newOpDuration is tokengate_store_operation_duration_seconds, every op and
// result present from the start.
func newOpDuration() *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokengate_store_operation_duration_seconds",
		Help:    "Revocation store calls by operation and result (ok, error).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
	}, []string{"op", "result"})
	for _, op := range storeOps {
		h.WithLabelValues(op, "ok")
		h.WithLabelValues(op, "error")
	}
	return h
}

// followerMetrics are a Follower's series: how far behind its index is,
// what it holds, and what the sweeps removed.
type followerMetrics struct {
	syncLag  prometheus.Observer
	swept    struct{ store, index prometheus.Counter }
	resets   prometheus.Counter
	lost     prometheus.Counter
	replaced prometheus.Counter
	// Changes applied as a notification carried them, as a read returned
	// them, or as a write through this replica committed them.
	pushed, read, written prometheus.Counter
}

// newFollowerMetrics registers f's series with reg (nil: not registered):
// all of them, or none and an error.
func newFollowerMetrics(f *Follower, reg prometheus.Registerer) (*followerMetrics, error) {
	syncLag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tokengate_revocation_sync_lag_seconds",
		Help:    "Time from a change's commit to its application in this replica's index (not counting the changes of writes through this replica, applied as their commit was answered).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	swept := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_revocations_swept_total",
		Help: "Expired revocations deleted from the store (where=store) or dropped from this replica's index (where=index).",
	}, []string{"where"})
	resets := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokengate_revocation_feed_resets_total",
		Help: "Times this replica found the change feed reset (failover, restore, new database) and reloaded a snapshot.",
	})
	lost := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokengate_revocations_lost_total",
		Help: "Live revocations this replica held that a reset feed no longer had (lost with a failed primary's unreplicated writes, or unrevoked meanwhile).",
	})
	replaced := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokengate_revocation_writes_feed_replaced_total",
		Help: "Writes through this replica whose feed was replaced (failover, restore) before this replica applied them: refused (503) for the sender to retry, never acknowledged.",
	})
	applied := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_revocation_changes_applied_total",
		Help: "Changes this replica applied from the feed, by how they came: via=notification (carried by a NOTIFY, no read), via=read (a read of the feed) or via=write (committed by a write through this replica, no read).",
	}, []string{"via"})
	m := &followerMetrics{syncLag: syncLag, resets: resets, lost: lost, replaced: replaced}
	m.swept.store, m.swept.index = swept.WithLabelValues("store"), swept.WithLabelValues("index")
	m.pushed, m.read, m.written = applied.WithLabelValues("notification"), applied.WithLabelValues("read"), applied.WithLabelValues("write")
	if reg != nil {
		if err := register(reg, syncLag, swept, resets, lost, replaced, applied, &indexCollector{f: f}); err != nil {
			return nil, err
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

// observeApplied records the sync lag of changes applied at now.
func (m *followerMetrics) observeApplied(cs []Change, now time.Time) {
	for _, c := range cs {
		m.syncLag.Observe(max(now.Sub(c.At), 0).Seconds())
	}
}

var (
	revocationsDesc = prometheus.NewDesc("tokengate_revocations",
		"Live revocations in this replica's index, by kind.", []string{"kind"}, nil)
	lastSeqDesc = prometheus.NewDesc("tokengate_revocation_last_applied_seq",
		"The last change-feed sequence number applied to this replica's index.", nil, nil)
	stalenessDesc = prometheus.NewDesc("tokengate_revocation_staleness_seconds",
		"Time since this replica last read the revocation store successfully (1e9 before the first load).", nil, nil)
)

// indexCollector reads the index and the follower at scrape time.
type indexCollector struct{ f *Follower }

func (c *indexCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- revocationsDesc
	ch <- lastSeqDesc
	ch <- stalenessDesc
}

func (c *indexCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.f.index.Counts()
	for k := KindToken; k <= KindCutoff; k++ {
		ch <- prometheus.MustNewConstMetric(revocationsDesc, prometheus.GaugeValue, float64(counts[k]), k.String())
	}
	ch <- prometheus.MustNewConstMetric(lastSeqDesc, prometheus.GaugeValue, float64(c.f.index.Seq()))
	ch <- prometheus.MustNewConstMetric(stalenessDesc, prometheus.GaugeValue, min(c.f.Staleness().Seconds(), 1e9))
}
