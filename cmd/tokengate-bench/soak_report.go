package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// classReport is one class of Checks over the run.
type classReport struct {
	Class      string  `json:"class"`
	Checks     int64   `json:"checks"`
	PerSecond  float64 `json:"per_second"`
	Violations int64   `json:"violations"`
	Wrong      int64   `json:"wrong_answers"`
}

type soakReport struct {
	Replicas        int     `json:"replicas"`
	Postgres        string  `json:"postgres"`
	DurationSeconds float64 `json:"duration_seconds"`
	Checkers        int     `json:"checkers"`
	Tokens          int     `json:"tokens"`
	CacheMaxBytes   int64   `json:"cache_max_bytes"`
	// Bound is how long after its 2xx the other replica may still allow a
	// revoked token; the one that answered 2xx may not at all.
	Bound            time.Duration `json:"bound_ns"`
	Classes          []classReport `json:"classes"`
	Checks           int64         `json:"checks"`
	ChecksPerSecond  float64       `json:"checks_per_second"`
	Violations       int64         `json:"violations"`
	WrongAnswers     int64         `json:"wrong_answers"`
	GRPCErrors       int64         `json:"grpc_errors"`
	RevocationErrors int64         `json:"revocation_errors"`
	// Revocations written (2xx), by kind, and the rate asked for.
	Revocations        int64            `json:"revocations"`
	RevocationsByKind  map[string]int64 `json:"revocations_by_kind"`
	RevocationsPerSec  float64          `json:"revocations_per_second"`
	RevocationRate     int              `json:"revocation_rate"`
	MissedTicks        int64            `json:"missed_ticks"`
	Write              latencies        `json:"write"`
	Propagation        latencies        `json:"propagation"`
	PropagationSamples int              `json:"propagation_samples"`
	Memory             []memoryMax      `json:"memory"`
	Failures           []string         `json:"failures,omitempty"`
	Examples           []string         `json:"examples,omitempty"`
	Passed             bool             `json:"passed"`
}

func newSoakReport(cfg soakConfig, res soakResult, postgres string) soakReport {
	secs := res.elapsed.Seconds()
	rate := func(n int64) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(n) / secs
	}
	rep := soakReport{
		Replicas: len(res.memory), Postgres: postgres, DurationSeconds: secs, Checkers: cfg.checkers,
		Tokens: cfg.tokens, CacheMaxBytes: cfg.cacheBytes, Bound: cfg.bound,
		GRPCErrors: res.tally.grpcErrors, RevocationErrors: res.revokeErrs,
		RevocationsByKind: map[string]int64{}, RevocationRate: cfg.rate, MissedTicks: res.missedTicks,
		Write: summarizeDurations(res.write), Propagation: summarizeDurations(res.propagation),
		PropagationSamples: len(res.propagation), Memory: res.memory, Examples: res.examples,
	}
	for c := range numClasses {
		rep.Classes = append(rep.Classes, classReport{Class: c.String(), Checks: res.tally.checks[c],
			PerSecond: rate(res.tally.checks[c]), Violations: res.tally.violations[c], Wrong: res.tally.wrong[c]})
	}
	rep.Checks, rep.Violations, rep.WrongAnswers = res.tally.totals()
	rep.ChecksPerSecond = rate(rep.Checks)
	for k, n := range res.written {
		rep.RevocationsByKind[revocationKinds[k]] = n
		rep.Revocations += n
	}
	rep.RevocationsPerSec = rate(rep.Revocations)
	rep.Failures = rep.failures()
	rep.Passed = len(rep.Failures) == 0
	return rep
}

// failures lists every broken promise; none means the soak passed.
func (rep soakReport) failures() []string {
	var f []string
	if rep.Violations > 0 {
		f = append(f, fmt.Sprintf("%d violations: tokens allowed that had to be denied", rep.Violations))
	}
	if rep.WrongAnswers > 0 {
		f = append(f, fmt.Sprintf("%d wrong answers: denials for the wrong reason", rep.WrongAnswers))
	}
	if rep.GRPCErrors > 0 {
		f = append(f, fmt.Sprintf("%d Checks answered with a gRPC error", rep.GRPCErrors))
	}
	if rep.RevocationErrors > 0 {
		f = append(f, fmt.Sprintf("%d revocations failed", rep.RevocationErrors))
	}
	if rep.Checks == 0 {
		f = append(f, "no Checks were answered")
	}
	for _, m := range rep.Memory {
		switch {
		case m.Over > 0:
			f = append(f, fmt.Sprintf("%s: heap in use over its bound in %d of %d samples (max %s)",
				m.Name, m.Over, m.Samples, fmtMiB(m.HeapInuse)))
		case m.Errors > 0:
			f = append(f, fmt.Sprintf("%s: %d memory samples could not be read", m.Name, m.Errors))
		}
	}
	return f
}

// verdict fails the run, once the report is written, when the soak did not
// pass.
func (rep soakReport) verdict() error {
	if rep.Passed {
		return nil
	}
	return errors.New("soak failed: " + strings.Join(rep.Failures, "; "))
}

func (rep soakReport) writeText(w io.Writer) error {
	fmt.Fprintf(w, "\n%s on one PostgreSQL database (%s), %.0fs of mixed load from %s;\n"+
		"%s in the pool, cache.max_bytes %s (~%d tokens)\n\n",
		plural(rep.Replicas, "replica"), rep.Postgres, rep.DurationSeconds, plural(rep.Checkers, "checker"),
		plural(rep.Tokens, "token"), fmtMiB(rep.CacheMaxBytes), rep.CacheMaxBytes/cachedTokenBytes)
	const row = "%-16s %10s %10s %11s %7s\n"
	fmt.Fprintf(w, row, "class", "checks", "checks/s", "violations", "wrong")
	line := func(name string, checks int64, perSec float64, viol, wrong int64) {
		fmt.Fprintf(w, row, name, fmt.Sprint(checks), fmt.Sprintf("%.0f", perSec), fmt.Sprint(viol), fmt.Sprint(wrong))
	}
	for _, c := range rep.Classes {
		line(c.Class, c.Checks, c.PerSecond, c.Violations, c.Wrong)
	}
	line("all", rep.Checks, rep.ChecksPerSecond, rep.Violations, rep.WrongAnswers)
	fmt.Fprintf(w, "\ngRPC errors: %d\n", rep.GRPCErrors)
	fmt.Fprintf(w, "revocations written: %d (%.1f/s, asked %d/s; jti %d, subject %d, session %d); failed %d, not sent (revokers busy) %d\n",
		rep.Revocations, rep.RevocationsPerSec, rep.RevocationRate, rep.RevocationsByKind["token"],
		rep.RevocationsByKind["subject"], rep.RevocationsByKind["session"], rep.RevocationErrors, rep.MissedTicks)
	fmt.Fprintf(w, "write (POST to 2xx)            p50 %s  p99 %s  max %s\n",
		fmtLatency(rep.Write.P50), fmtLatency(rep.Write.P99), fmtLatency(rep.Write.Max))
	fmt.Fprintf(w, "propagation (to other replica) p50 %s  p99 %s  max %s  (%d; allowed there until 2xx + %s)\n\n",
		fmtLatency(rep.Propagation.P50), fmtLatency(rep.Propagation.P99), fmtLatency(rep.Propagation.Max),
		rep.PropagationSamples, rep.Bound)
	const mrow = "%-10s %10s %15s %12s %8s %12s\n"
	fmt.Fprintf(w, mrow, "replica", "max RSS", "max heap inuse", "heap bound", "over", "live revs")
	for _, m := range rep.Memory {
		fmt.Fprintf(w, mrow, m.Name, fmtMiB(m.RSS), fmtMiB(m.HeapInuse), fmtMiB(m.Bound),
			fmt.Sprintf("%d/%d", m.Over, m.Samples), fmt.Sprint(m.Live))
	}
	fmt.Fprintf(w, "heap bound = 2 × (25 MiB + cache.max_bytes + 100 B × live revocations), at each sample\n")
	for _, e := range rep.Examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	verdict := "PASSED: no revoked token allowed, no gRPC error, heap within its bound"
	if !rep.Passed {
		verdict = "FAILED: " + strings.Join(rep.Failures, "; ")
	}
	_, err := fmt.Fprintf(w, "\n%s\n", verdict)
	return err
}

func fmtMiB(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
