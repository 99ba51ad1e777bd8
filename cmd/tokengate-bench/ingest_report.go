package main

import (
	"fmt"
	"io"
	"time"
)

type ingestReport struct {
	Senders         int     `json:"senders"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	DurationSeconds float64 `json:"duration_seconds"`
	Postgres        string  `json:"postgres"`
	// Fsync and SynchronousCommit are the database's settings; Durable
	// says whether each commit waited for its WAL flush.
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
	Durable           bool   `json:"durable"`
	// Events were applied in the measured window, which ran Seconds, from
	// the first POST to the last answer.
	Events     uint64  `json:"events"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"events_per_second"`
	// Latency is each event's, from just before its POST (building and
	// signing it included, a few µs) until its answer was read.
	Latency latencies `json:"latency"`
	// WarmupEvents were applied in the warm-up, and Stored revocations of
	// this run's events found in tokengate_revocations afterwards: one per
	// event applied, warm-up included.
	WarmupEvents  uint64  `json:"warmup_events"`
	Stored        uint64  `json:"stored"`
	MinThroughput float64 `json:"min_events_per_second"`
	// CPU is what the replica, PostgreSQL (a throwaway cluster only) and
	// the load generator spent per event in the measured window.
	CPU cpuPerEvent `json:"cpu_per_event"`
	// Met: durable commits, and at least MinThroughput events/s.
	Met bool `json:"met"`
}

func newIngestReport(cfg ingestConfig, postgres string, warm, res loadResult, st storageCheck) ingestReport {
	rep := ingestReport{
		Senders:           cfg.senders,
		WarmupSeconds:     cfg.warmup.Seconds(),
		DurationSeconds:   cfg.duration.Seconds(),
		Postgres:          postgres,
		Fsync:             st.fsync,
		SynchronousCommit: st.synchronousCommit,
		Durable:           st.durable(),
		Events:            res.requests,
		Seconds:           res.elapsed.Seconds(),
		Throughput:        res.throughput(),
		Latency:           res.latency.summary(),
		WarmupEvents:      warm.requests,
		Stored:            st.stored,
		MinThroughput:     minIngestRate,
	}
	rep.Met = rep.Durable && rep.Events > 0 && rep.Throughput >= rep.MinThroughput
	return rep
}

func (rep ingestReport) writeText(w io.Writer) error {
	durability := "durable"
	if !rep.Durable {
		durability = "NOT durable"
	}
	fmt.Fprintf(w, "\n%s, each a closed loop of signed FusionAuth user.delete webhooks to 1 tokengate replica\n"+
		"on one PostgreSQL database (%s; fsync=%s, synchronous_commit=%s: %s commits);\n"+
		"%s warm-up, then %s measured; latency from just before each POST until its answer\n\n",
		plural(rep.Senders, "sender"), rep.Postgres, rep.Fsync, rep.SynchronousCommit, durability,
		seconds(rep.WarmupSeconds), seconds(rep.DurationSeconds))
	const row = "%8s %9s %10s %10s %10s %10s\n"
	fmt.Fprintf(w, row, "events", "seconds", "events/s", "p50", "p99", "max")
	fmt.Fprintf(w, row, fmt.Sprint(rep.Events), fmt.Sprintf("%.3f", rep.Seconds), fmt.Sprintf("%.0f", rep.Throughput),
		fmtLatency(rep.Latency.P50), fmtLatency(rep.Latency.P99), fmtLatency(rep.Latency.Max))
	target := fmt.Sprintf("target ≥ %.0f events/s", rep.MinThroughput)
	if !rep.Durable {
		target += " with durable commits"
	}
	if c := rep.CPU; c.Total > 0 {
		pg := "PostgreSQL not measured (an existing server)"
		if c.Postgres > 0 {
			pg = fmt.Sprintf("PostgreSQL %.3f ms", c.Postgres)
		}
		fmt.Fprintf(w, "\nCPU per event: replica %.3f ms, %s, load generator %.3f ms: %.3f ms;\n"+
			"at that cost %s, each busy with nothing else, carry at most %.0f events/s\n",
			c.Replica, pg, c.Bench, c.Total, plural(c.Cores, "core"), c.Ceiling)
	}
	_, err := fmt.Fprintf(w, "\nstored: %d revocations for %d events applied (%d in the warm-up): each 200 was committed\n"+
		"events/s %.0f  p99 %s  %s: %s\n",
		rep.Stored, rep.WarmupEvents+rep.Events, rep.WarmupEvents,
		rep.Throughput, fmtLatency(rep.Latency.P99), target, metText(rep.Met))
	return err
}

// seconds formats a flag's duration as it was given, from its seconds.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).String()
}
