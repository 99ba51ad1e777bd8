package main

import (
	"fmt"
	"io"
	"time"
)

// replicaLatencies is one replica's time from t0 to its first denial.
type replicaLatencies struct {
	Name   string `json:"name"`
	Writer bool   `json:"writer"` // the revocations went through it
	latencies
}

type propagationReport struct {
	Replicas    int    `json:"replicas"`
	Revocations int    `json:"revocations"`
	Postgres    string `json:"postgres"`
	// Propagation is, per revocation, the time from just before its POST
	// until every replica denied the token.
	Propagation latencies `json:"propagation"`
	// Write is the POST's round trip.
	Write latencies `json:"write"`
	// AfterWrite is, per revocation, the time from the POST's answer until
	// every replica denied: the read path's share of Propagation.
	AfterWrite latencies          `json:"after_write"`
	PerReplica []replicaLatencies `json:"per_replica"`
	P99Limit   time.Duration      `json:"p99_limit_ns"`
	Met        bool               `json:"met"`
	// Background is the load written meanwhile through another replica
	// (zero: none); Connections, the replicas' connections to the database.
	Background  backgroundResult `json:"background"`
	Connections connCount        `json:"connections"`
}

// newPropagationReport summarizes samples, each with the same number of
// replicas, the first of which took the writes.
func newPropagationReport(samples []sample, postgres string) propagationReport {
	var replicas int
	if len(samples) > 0 {
		replicas = len(samples[0].denied)
	}
	var prop, write, after []time.Duration
	perReplica := make([][]time.Duration, replicas)
	for _, s := range samples {
		prop = append(prop, s.propagation())
		after = append(after, max(s.propagation()-s.write, 0))
		write = append(write, s.write)
		for i, d := range s.denied {
			perReplica[i] = append(perReplica[i], d)
		}
	}
	rep := propagationReport{
		Replicas:    replicas,
		Revocations: len(samples),
		Postgres:    postgres,
		Propagation: summarizeDurations(prop),
		Write:       summarizeDurations(write),
		AfterWrite:  summarizeDurations(after),
		P99Limit:    maxPropagationP99,
	}
	for i, ds := range perReplica {
		rep.PerReplica = append(rep.PerReplica, replicaLatencies{
			Name: fmt.Sprintf("replica %d", i+1), Writer: i == 0, latencies: summarizeDurations(ds)})
	}
	rep.Met = len(samples) > 0 && rep.Propagation.P99 <= rep.P99Limit
	return rep
}

func (rep propagationReport) writeText(w io.Writer) error {
	fmt.Fprintf(w, "\n%s on one PostgreSQL database (%s);\n%s through replica 1, one after another, each timed from just before its POST\n\n",
		plural(rep.Replicas, "replica"), rep.Postgres, plural(rep.Revocations, "revocation"))
	const cols = "%-12s %10s %10s %10s"
	fmt.Fprintf(w, cols+"\n", "", "p50", "p99", "max")
	line := func(name string, l latencies, note string) {
		fmt.Fprintf(w, cols+"  %s\n", name, fmtLatency(l.P50), fmtLatency(l.P99), fmtLatency(l.Max), note)
	}
	line("propagation", rep.Propagation, "until every replica denies")
	line("write", rep.Write, "until the POST's answer (201)")
	line("after write", rep.AfterWrite, "from the POST's answer until every replica denies")
	for _, r := range rep.PerReplica {
		note := "until it denies"
		if r.Writer {
			note += " (read-your-writes: it took the POST)"
		}
		line(r.Name, r.latencies, note)
	}
	if rep.Background.Rate > 0 {
		b := rep.Background
		fmt.Fprintf(w, "\nbackground load: %d revocations/s asked, %.0f/s made (%d sent, %d failed, %d ticks missed)\n",
			b.Rate, b.Done, b.Sent, b.Failed, b.Missed)
	}
	if rep.Connections.Peak > 0 {
		fmt.Fprintf(w, "\nPostgreSQL connections of the replicas (pg_stat_activity): %d at most, %d at the end\n",
			rep.Connections.Peak, rep.Connections.End)
	}
	_, err := fmt.Fprintf(w, "\npropagation p99 %s  target p99 ≤ %s: %s\n",
		fmtLatency(rep.Propagation.P99), rep.P99Limit, metText(rep.Met))
	return err
}
