package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// The check-path targets: with a valid cached token, tokengate keeps at least
// 0.85× the baseline's throughput over gRPC (0.80× over HTTP, whose
// baseline does less: no protobuf to decode) and at most 2× its p99.
const (
	minThroughputRatio     = 0.85
	minHTTPThroughputRatio = 0.80
	maxP99Ratio            = 2.0
)

// roundResult is one measurement of one target. In a summary, each field is
// the median over the rounds.
type roundResult struct {
	Requests   uint64        `json:"requests"`
	Seconds    float64       `json:"seconds"`
	Throughput float64       `json:"throughput_rps"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
}

func newRoundResult(r loadResult) roundResult {
	return roundResult{
		Requests:   r.requests,
		Seconds:    r.elapsed.Seconds(),
		Throughput: r.throughput(),
		P50:        r.latency.percentile(0.50),
		P99:        r.latency.percentile(0.99),
	}
}

type targetSummary struct {
	Name string `json:"name"`
	roundResult
	Rounds []roundResult `json:"rounds"`
}

// ratio is tokengate's figure over the baseline's: the median of the
// per-round ratios, each from two measurements taken back to back.
type ratio struct {
	Median float64   `json:"median"`
	Rounds []float64 `json:"rounds"`
	Limit  float64   `json:"limit"`
	Met    bool      `json:"met"`
}

type report struct {
	Protocol        string          `json:"protocol"`
	Concurrency     int             `json:"concurrency"`
	Connections     int             `json:"connections"`
	DurationSeconds float64         `json:"duration_seconds"`
	WarmupSeconds   float64         `json:"warmup_seconds"`
	Rounds          int             `json:"rounds"`
	Targets         []targetSummary `json:"targets"` // baseline, tokengate
	ThroughputRatio ratio           `json:"throughput_ratio"`
	P99Ratio        ratio           `json:"p99_ratio"`
}

func newReport(cfg config, base, gate *target) report {
	minThroughput := minThroughputRatio
	if cfg.protocol == "http" {
		minThroughput = minHTTPThroughputRatio
	}
	rep := report{
		Protocol:        cfg.protocol,
		Concurrency:     cfg.concurrency,
		Connections:     cfg.conns,
		DurationSeconds: cfg.duration.Seconds(),
		WarmupSeconds:   cfg.warmup.Seconds(),
		Rounds:          cfg.rounds,
		Targets:         []targetSummary{summarize(base), summarize(gate)},
		ThroughputRatio: ratio{Limit: minThroughput},
		P99Ratio:        ratio{Limit: maxP99Ratio},
	}
	for i := range base.rounds {
		b, g := base.rounds[i], gate.rounds[i]
		rep.ThroughputRatio.Rounds = append(rep.ThroughputRatio.Rounds, g.Throughput/b.Throughput)
		rep.P99Ratio.Rounds = append(rep.P99Ratio.Rounds, float64(g.P99)/float64(b.P99))
	}
	rep.ThroughputRatio.Median = median(rep.ThroughputRatio.Rounds)
	rep.P99Ratio.Median = median(rep.P99Ratio.Rounds)
	rep.ThroughputRatio.Met = rep.ThroughputRatio.Median >= minThroughput
	rep.P99Ratio.Met = rep.P99Ratio.Median <= maxP99Ratio
	return rep
}

func summarize(t *target) targetSummary {
	var req, sec, tput, p50, p99 []float64
	for _, r := range t.rounds {
		req = append(req, float64(r.Requests))
		sec = append(sec, r.Seconds)
		tput = append(tput, r.Throughput)
		p50 = append(p50, float64(r.P50))
		p99 = append(p99, float64(r.P99))
	}
	return targetSummary{
		Name: t.name,
		roundResult: roundResult{
			Requests:   uint64(median(req)),
			Seconds:    median(sec),
			Throughput: median(tput),
			P50:        time.Duration(median(p50)),
			P99:        time.Duration(median(p99)),
		},
		Rounds: t.rounds,
	}
}

func (rep report) writeText(w io.Writer) error {
	if rep.Protocol == "http" {
		fmt.Fprintf(w, "\nHTTP: %d concurrent clients over keep-alive connections per target; %s of %gs warm-up + %gs measured per target; medians over rounds\n\n",
			rep.Concurrency, plural(rep.Rounds, "round"), rep.WarmupSeconds, rep.DurationSeconds)
	} else {
		fmt.Fprintf(w, "\ngRPC: %d concurrent streams over %s per target; %s of %gs warm-up + %gs measured per target; medians over rounds\n\n",
			rep.Concurrency, plural(rep.Connections, "connection"), plural(rep.Rounds, "round"), rep.WarmupSeconds, rep.DurationSeconds)
	}
	const row = "%-10s %10s %19s %10s %10s\n"
	fmt.Fprintf(w, row, "target", "requests", "throughput (req/s)", "p50", "p99")
	for _, t := range rep.Targets {
		fmt.Fprintf(w, row, t.Name, fmt.Sprint(t.Requests), fmt.Sprintf("%.0f", t.Throughput), fmtLatency(t.P50), fmtLatency(t.P99))
	}
	_, err := fmt.Fprintf(w, "\nthroughput ratio (tokengate/baseline): %.2f  target ≥ %.2f: %s  (rounds: %s)\np99 ratio (tokengate/baseline): %.2f  target ≤ %.2f: %s  (rounds: %s)\n",
		rep.ThroughputRatio.Median, rep.ThroughputRatio.Limit, metText(rep.ThroughputRatio.Met), fmtRatios(rep.ThroughputRatio.Rounds),
		rep.P99Ratio.Median, rep.P99Ratio.Limit, metText(rep.P99Ratio.Met), fmtRatios(rep.P99Ratio.Rounds))
	return err
}

// textReport is a mode's report: a table for people, and its exported
// fields for JSON.
type textReport interface {
	writeText(w io.Writer) error
}

// writeReport writes rep as a table to stdout or, with asJSON, as one
// indented JSON document to stdout and the table to stderr.
func writeReport(rep textReport, asJSON bool, stdout, stderr io.Writer) error {
	if !asJSON {
		return rep.writeText(stdout)
	}
	rep.writeText(stderr)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func fmtLatency(d time.Duration) string {
	return fmt.Sprintf("%.3fms", d.Seconds()*1e3)
}

func fmtRatios(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func metText(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}
