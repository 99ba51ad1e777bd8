package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

const ms = time.Millisecond

func TestSamplePropagation(t *testing.T) {
	for name, tc := range map[string]struct {
		denied []time.Duration
		want   time.Duration
	}{
		"one replica":    {[]time.Duration{3 * ms}, 3 * ms},
		"slowest last":   {[]time.Duration{2 * ms, 4 * ms, 9 * ms}, 9 * ms},
		"slowest first":  {[]time.Duration{9 * ms, 4 * ms, 2 * ms}, 9 * ms},
		"slowest middle": {[]time.Duration{2 * ms, 30 * ms, 9 * ms}, 30 * ms},
		"all alike":      {[]time.Duration{5 * ms, 5 * ms, 5 * ms}, 5 * ms},
	} {
		s := sample{write: time.Millisecond, denied: tc.denied}
		if got := s.propagation(); got != tc.want {
			t.Errorf("%s: propagation() of %v = %v, want %v", name, tc.denied, got, tc.want)
		}
	}
}

func TestNearestRank(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i)*ms)
	}
	for name, tc := range map[string]struct {
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		"none":          {nil, 0.5, 0},
		"one":           {[]time.Duration{7 * ms}, 0.99, 7 * ms},
		"p50 of 100":    {hundred, 0.50, 50 * ms},
		"p99 of 100":    {hundred, 0.99, 99 * ms},
		"p100 of 100":   {hundred, 1, 100 * ms},
		"p99 of 3":      {[]time.Duration{1 * ms, 2 * ms, 3 * ms}, 0.99, 3 * ms},
		"p50 of 4":      {[]time.Duration{1 * ms, 2 * ms, 3 * ms, 4 * ms}, 0.50, 2 * ms},
		"tiny q, first": {hundred, 0.0001, 1 * ms},
	} {
		if got := nearestRank(tc.sorted, tc.q); got != tc.want {
			t.Errorf("%s: nearestRank(q=%v) = %v, want %v", name, tc.q, got, tc.want)
		}
	}
}

// TestNewPropagationReport: 200 revocations over 3 replicas where replica 3
// is always the slowest but once, by a long way, replica 2 is.
func TestNewPropagationReport(t *testing.T) {
	var samples []sample
	for i := 1; i <= 200; i++ {
		d := time.Duration(i) * 100 * time.Microsecond // 0.1ms … 20ms
		s := sample{write: d, denied: []time.Duration{d + ms, d + 2*ms, d + 3*ms}}
		samples = append(samples, s)
	}
	samples[7].denied[1] = 80 * ms // one outlier, on replica 2

	got := newPropagationReport(samples, "test")
	want := propagationReport{
		Replicas:    3,
		Revocations: 200,
		Postgres:    "test",
		// Sorted propagation: 3.1ms … 23ms with 3.8ms replaced by 80ms, so
		// the 100th is 13.1ms, the 198th 22.9ms and the max 80ms.
		Propagation: latencies{P50: 13100 * time.Microsecond, P99: 22900 * time.Microsecond, Max: 80 * ms},
		Write:       latencies{P50: 10 * ms, P99: 19800 * time.Microsecond, Max: 20 * ms},
		// 3ms after every write but the outlier's, 0.8ms + 79.2ms.
		AfterWrite: latencies{P50: 3 * ms, P99: 3 * ms, Max: 79200 * time.Microsecond},
		PerReplica: []replicaLatencies{
			{Name: "replica 1", Writer: true, latencies: latencies{P50: 11 * ms, P99: 20800 * time.Microsecond, Max: 21 * ms}},
			{Name: "replica 2", latencies: latencies{P50: 12100 * time.Microsecond, P99: 21900 * time.Microsecond, Max: 80 * ms}},
			{Name: "replica 3", latencies: latencies{P50: 13 * ms, P99: 22800 * time.Microsecond, Max: 23 * ms}},
		},
		P99Limit: 20 * ms,
		Met:      false, // 22.9ms
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(replicaLatencies{}, backgroundResult{})); diff != "" {
		t.Errorf("newPropagationReport mismatch (-want +got):\n%s", diff)
	}
}

func TestPropagationTarget(t *testing.T) {
	for name, tc := range map[string]struct {
		p99  time.Duration
		met  bool
		text string
	}{
		"well under": {3 * ms, true, "target p99 ≤ 20ms: met\n"},
		"at limit":   {20 * ms, true, "target p99 ≤ 20ms: met\n"},
		"over":       {20*ms + time.Microsecond, false, "target p99 ≤ 20ms: NOT met\n"},
	} {
		var samples []sample
		for range 10 {
			samples = append(samples, sample{write: ms, denied: []time.Duration{ms, tc.p99}})
		}
		rep := newPropagationReport(samples, "test")
		if rep.Met != tc.met {
			t.Errorf("%s: met = %v, want %v", name, rep.Met, tc.met)
		}
		var buf bytes.Buffer
		if err := rep.writeText(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(buf.String(), tc.text) {
			t.Errorf("%s: the text ends\n%s\nwant it to end %q", name, buf.String(), tc.text)
		}
	}
	if rep := newPropagationReport(nil, "test"); rep.Met {
		t.Error("no samples: met = true, want false")
	}
}

func TestPropagationReportText(t *testing.T) {
	rep := newPropagationReport([]sample{
		{write: 1500 * time.Microsecond, denied: []time.Duration{2 * ms, 2345678}},
	}, "a throwaway durable cluster")
	var buf bytes.Buffer
	if err := rep.writeText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"2 replicas on one PostgreSQL database (a throwaway durable cluster)",
		"1 revocation through replica 1",
		"propagation     2.346ms    2.346ms    2.346ms  until every replica denies",
		"write           1.500ms    1.500ms    1.500ms",
		"replica 1       2.000ms    2.000ms    2.000ms  until it denies (read-your-writes",
		"replica 2       2.346ms",
		"after write     0.846ms    0.846ms    0.846ms  from the POST's answer",
		"propagation p99 2.346ms  target p99 ≤ 20ms: met",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, buf.String())
		}
	}
	for i, l := range strings.Split(buf.String(), "\n") {
		if strings.TrimRight(l, " ") != l {
			t.Errorf("line %d has trailing spaces: %q", i+1, l)
		}
	}
}

func TestPropagationFlags(t *testing.T) {
	checkFlagErrors(t, []string{propagationCommand}, map[string]flagCase{
		"all wrong":       {[]string{"-tokengate", "", "-replicas", "0", "-revocations", "0"}, []string{"-tokengate:", "-replicas:", "-revocations:"}},
		"too many":        {[]string{"-replicas", "65", "-revocations", "10001", "-background", "5001"}, []string{"-replicas:", "-revocations:", "-background:"}},
		"negative":        {[]string{"-background", "-1", "-check-every", "-1ms", "-poll", "0s"}, []string{"-background:", "-check-every:", "-poll:"}},
		"standby, own db": {[]string{"-standby", "-postgres-url", "postgres://x/y"}, []string{"-standby:"}},
		"stray argument":  {[]string{"extra"}, []string{"unexpected arguments"}},
		"load flag":       {[]string{"-concurrency", "4"}, []string{"-concurrency"}},
	})
	cfg, err := parsePropagationConfig(nil, io.Discard)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if want := (propagationConfig{tokengate: "bin/tokengate", replicas: 3, revocations: 200, checkEvery: ms, poll: time.Second}); cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
}

// revokedAfter allows a number of Checks, then denies each with reason; with
// no reason it allows forever.
type revokedAfter struct {
	authv3.UnimplementedAuthorizationServer
	allows atomic.Int64
	reason string
}

func (f *revokedAfter) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if f.allows.Add(-1) >= 0 || f.reason == "" {
		return noopResponse, nil
	}
	return &authv3.CheckResponse{
		Status:          &status.Status{Code: int32(codes.PermissionDenied)},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"reason": structpb.NewStringValue(f.reason)}},
	}, nil
}

func TestFirstRevoked(t *testing.T) {
	for name, tc := range map[string]struct {
		reason  string
		wantErr string // empty: no error
	}{
		"revoked":       {reasonRevoked, ""},
		"other denial":  {"token_expired", "denies the revoked token as token_expired, want token_revoked"},
		"never revoked": {"", "replica 1 still allows the token"},
	} {
		fake := &revokedAfter{reason: tc.reason}
		fake.allows.Store(20)
		r := &replica{name: "replica 1", client: authv3.NewAuthorizationClient(startInProcess(t, fake)),
			proc: &child{name: "replica 1", log: newLogTail(), exited: make(chan struct{})}}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		start := time.Now()
		at, err := r.firstRevoked(ctx, checkRequest("x"))
		cancel()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: firstRevoked = %v, want no error", name, err)
		case tc.wantErr == "" && (at.Before(start) || time.Since(at) < 0):
			t.Errorf("%s: firstRevoked at %v, want between %v and now", name, at, start)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: firstRevoked = %v, want an error saying %q", name, err, tc.wantErr)
		}
		if left := fake.allows.Load(); left > -1 && tc.reason != "" {
			t.Errorf("%s: %d allows left unasked; want the loop to keep asking until the denial", name, left)
		}
	}
}

// TestPropagationSmoke runs the whole propagation mode, briefly: the real
// tokengate, built for the test, 2 replicas on a throwaway cluster, and a
// third taking a background load.
func TestPropagationSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokengate and starts PostgreSQL")
	}
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	url, err := cluster.CreateDatabase(t.Context(), "propagation")
	if err != nil {
		t.Fatal(err)
	}
	gate := buildTokengate(t)

	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{propagationCommand, "-tokengate", gate, "-replicas", "2", "-revocations", "5",
		"-background", "50", "-postgres-url", url, "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep propagationReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Replicas != 2 || rep.Revocations != 5 || len(rep.PerReplica) != 2 || !rep.PerReplica[0].Writer || rep.PerReplica[1].Writer {
		t.Fatalf("report = %+v; want 2 replicas, the first the writer, and 5 revocations", rep)
	}
	ordered := func(name string, l latencies) {
		if l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
			t.Errorf("%s: %+v; want 0 < p50 ≤ p99 ≤ max", name, l)
		}
	}
	ordered("propagation", rep.Propagation)
	ordered("write", rep.Write)
	for _, r := range rep.PerReplica {
		ordered(r.Name, r.latencies)
		// Polling starts once the POST answered, and the slowest replica
		// makes the propagation time.
		if r.P50 < rep.Write.P50 || r.Max > rep.Propagation.Max {
			t.Errorf("%s: %+v; want p50 ≥ the write's (%v) and max ≤ propagation's (%v)",
				r.Name, r.latencies, rep.Write.P50, rep.Propagation.Max)
		}
	}
	if b := rep.Background; b.Rate != 50 || b.Sent == 0 || b.Failed != 0 {
		t.Errorf("background: %+v; want 50/s asked, some sent, none failed", b)
	}
	if rep.Connections.Peak < 2 {
		t.Errorf("connections: %+v; want the replicas' LISTEN connections at least", rep.Connections)
	}
	for _, want := range []string{"replica 2 serving", "revocation 5/5", "target p99 ≤ 20ms: ", "PostgreSQL connections of the replicas"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// buildTokengate builds cmd/tokengate into the test's temp dir.
func buildTokengate(t *testing.T) string {
	t.Helper()
	gomod, err := exec.CommandContext(t.Context(), "go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tokengate")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/tokengate")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tokengate: %v\n%s", err, out)
	}
	return bin
}
