package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/extauthz/token/devissuer"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

func TestJudgePool(t *testing.T) {
	t0 := time.Now()
	const bound = time.Second
	type record struct {
		sent, acked time.Duration // after t0; 0: not done
		by          int
	}
	for name, tc := range map[string]struct {
		rec      record
		on       int
		start    time.Duration // after t0
		decision string
		class    checkClass
		outcome  outcome
	}{
		"never revoked, allowed":          {record{}, 0, 0, reasonAllowed, classValid, outcomeOK},
		"never revoked, denied revoked":   {record{}, 0, 0, reasonRevoked, classValid, outcomeWrong},
		"never revoked, denied otherwise": {record{}, 1, 0, "revocations_stale", classValid, outcomeWrong},
		"in flight, allowed":              {record{sent: 1}, 0, 2, reasonAllowed, classRevoking, outcomeOK},
		"in flight, denied":               {record{sent: 1}, 0, 2, reasonRevoked, classRevoking, outcomeOK},
		"acked after the check was sent":  {record{sent: 1, acked: 5}, 0, 4, reasonAllowed, classRevoking, outcomeOK},
		"acked here, then allowed":        {record{sent: 1, acked: 5, by: 0}, 0, 6, reasonAllowed, classRevoked, outcomeViolation},
		"acked here, then denied":         {record{sent: 1, acked: 5, by: 0}, 0, 6, reasonRevoked, classRevoked, outcomeOK},
		"acked here, denied otherwise":    {record{sent: 1, acked: 5, by: 0}, 0, 6, "token_expired", classRevoked, outcomeWrong},
		"acked elsewhere, within bound":   {record{sent: 1, acked: 5, by: 1}, 0, 5 + bound, reasonAllowed, classRevoking, outcomeOK},
		"acked elsewhere, past bound":     {record{sent: 1, acked: 5, by: 1}, 0, 6 + bound, reasonAllowed, classRevoked, outcomeViolation},
		"acked elsewhere, denied early":   {record{sent: 1, acked: 5, by: 1}, 0, 6, reasonRevoked, classRevoking, outcomeOK},
	} {
		p := &poolToken{}
		if tc.rec.sent != 0 {
			p.markSent(t0.Add(tc.rec.sent))
		}
		if tc.rec.acked != 0 {
			p.markAcked(tc.rec.by, t0.Add(tc.rec.acked))
		}
		class, o := judgePool(p, tc.on, t0.Add(tc.start), tc.decision, bound)
		if class != tc.class || o != tc.outcome {
			t.Errorf("%s: judgePool = %s, %d; want %s, %d", name, class, o, tc.class, tc.outcome)
		}
	}
}

func TestJudgeJunk(t *testing.T) {
	for c, reason := range junkReasons {
		if o := judgeJunk(c, reason); o != outcomeOK {
			t.Errorf("%s denied %s: %d, want ok", c, reason, o)
		}
		if o := judgeJunk(c, reasonAllowed); o != outcomeViolation {
			t.Errorf("%s allowed: %d, want a violation", c, o)
		}
		if o := judgeJunk(c, reasonRevoked); o != outcomeWrong {
			t.Errorf("%s denied %s: %d, want wrong", c, reasonRevoked, o)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	got, err := parseMetrics(strings.NewReader(`# HELP go_memstats_heap_inuse_bytes x
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345e+07
tokengate_revocations{kind="session"} 3
tokengate_revocations{kind="subject"} 4
tokengate_revocations{kind="token",odd="a} b"} 5 1712345678000
`))
	if err != nil {
		t.Fatal(err)
	}
	if got["go_memstats_heap_inuse_bytes"] != 12345000 || got["tokengate_revocations"] != 12 {
		t.Errorf("parseMetrics = %v; want heap 12345000 and 12 revocations", got)
	}
}

func TestParseVmRSS(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\ttokengate\nVmPeak:\t  999 kB\nVmRSS:\t   36100 kB\nThreads:\t9\n"))
	if err != nil || rss != 36100<<10 {
		t.Errorf("parseVmRSS = %d, %v; want %d", rss, err, 36100<<10)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
}

func TestHeapBound(t *testing.T) {
	if got, want := heapBound(8<<20, 10_000), int64(2*(25<<20+8<<20+1_000_000)); got != want {
		t.Errorf("heapBound = %d, want %d", got, want)
	}
}

func TestSoakFlags(t *testing.T) {
	checkFlagErrors(t, []string{soakCommand}, map[string]flagCase{
		"all wrong": {[]string{"-tokengate", "", "-duration", "0s", "-checkers", "0", "-rate", "0", "-cache-bytes", "1000",
			"-tokens", "0", "-bound", "0s"},
			[]string{"-tokengate:", "-duration:", "-checkers:", "-rate:", "-cache-bytes:", "-tokens:", "-bound:"}},
		"pool fits in the cache": {[]string{"-tokens", "1000", "-cache-bytes", "8388608"}, []string{"-tokens:", "fit in a cache"}},
		"pool too small":         {[]string{"-tokens", "10000", "-rate", "100", "-duration", "60s"}, []string{"-tokens:", "at least 12000"}},
		"stray argument":         {[]string{"extra"}, []string{"unexpected arguments"}},
	})
	cfg, err := parseSoakConfig(nil, io.Discard)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	want := soakConfig{tokengate: "bin/tokengate", duration: time.Minute, checkers: 8, rate: 100, tokens: 20_000,
		cacheBytes: 8 << 20, bound: time.Second}
	if cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
}

// TestSoakCatchesViolations points the soak at two "replicas" that allow
// everything, whose admin API acknowledges every revocation: every revoked
// token and every junk token allowed must be counted, and fail the run.
func TestSoakCatchesViolations(t *testing.T) {
	var posts atomic.Int64
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(admin.Close)
	iss, err := devissuer.New("http://issuer.test", benchAudience)
	if err != nil {
		t.Fatal(err)
	}
	env, err := mintSoakTokens(iss, 200)
	if err != nil {
		t.Fatal(err)
	}
	for i := range soakReplicas {
		fake := &revokedAfter{} // no reason: allows forever
		name := []string{"replica 1", "replica 2"}[i]
		r := &replica{name: name, client: authv3.NewAuthorizationClient(startInProcess(t, fake)),
			proc: &child{name: name, log: newLogTail(), exited: make(chan struct{})}}
		env.targets = append(env.targets, soakTarget{replica: r, admin: newAdminClient(strings.TrimPrefix(admin.URL, "http://"), "x")})
	}
	cfg := soakConfig{duration: 500 * time.Millisecond, checkers: 2, rate: 20, tokens: 200, cacheBytes: 1 << 20, bound: 50 * time.Millisecond}
	res, err := soak(t.Context(), cfg, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep := newSoakReport(cfg, res, "none")
	if rep.Revocations == 0 || rep.Revocations != posts.Load() {
		t.Errorf("revocations written = %d, admin POSTs = %d; want them equal and above 0", rep.Revocations, posts.Load())
	}
	if rep.Classes[classRevoked].Violations == 0 {
		t.Errorf("revoked tokens allowed: no violation counted: %+v", rep.Classes)
	}
	for c := classMalformed; c < numClasses; c++ {
		if cr := rep.Classes[c]; cr.Checks == 0 || cr.Violations != cr.Checks {
			t.Errorf("%s: %d violations in %d checks; want every allowed junk token counted", cr.Class, cr.Violations, cr.Checks)
		}
	}
	if rep.Classes[classValid].Violations != 0 || rep.Classes[classRevoking].Violations != 0 {
		t.Errorf("allowing a token not yet due counted as a violation: %+v", rep.Classes)
	}
	if rep.Passed || rep.verdict() == nil {
		t.Errorf("report passed with %d violations", rep.Violations)
	}
	var buf bytes.Buffer
	if err := rep.writeText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "FAILED: ") || !strings.Contains(buf.String(), "answered allowed") {
		t.Errorf("the text does not say it failed, with examples:\n%s", buf.String())
	}
}

// TestSoakSmoke runs the whole soak mode, briefly: the real tokengate,
// built for the test, 2 replicas on a throwaway cluster.
func TestSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokengate and starts PostgreSQL")
	}
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	url, err := cluster.CreateDatabase(t.Context(), "soak")
	if err != nil {
		t.Fatal(err)
	}
	gate := buildTokengate(t)

	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{soakCommand, "-tokengate", gate, "-duration", "3s", "-checkers", "4", "-rate", "20",
		"-tokens", "1500", "-cache-bytes", "1048576", "-postgres-url", url, "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep soakReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout.String())
	}
	if !rep.Passed || rep.Violations != 0 || rep.GRPCErrors != 0 || rep.WrongAnswers != 0 {
		t.Errorf("report did not pass: %v", rep.Failures)
	}
	for _, c := range rep.Classes {
		if c.Checks == 0 && c.Class != "revoking" {
			t.Errorf("class %s: no checks", c.Class)
		}
	}
	for kind, n := range rep.RevocationsByKind {
		if n == 0 {
			t.Errorf("no %s revocations written", kind)
		}
	}
	if rep.PropagationSamples == 0 || rep.Propagation.P50 <= 0 || rep.Propagation.P50 > rep.Propagation.P99 {
		t.Errorf("propagation %+v over %d samples; want 0 < p50 ≤ p99", rep.Propagation, rep.PropagationSamples)
	}
	if len(rep.Memory) != 2 {
		t.Fatalf("memory of %d replicas, want 2", len(rep.Memory))
	}
	for _, m := range rep.Memory {
		if m.Samples == 0 || m.RSS <= 0 || m.HeapInuse <= 0 || m.Bound < heapBound(1<<20, 0) {
			t.Errorf("%s: memory %+v; want samples of RSS, heap and its bound", m.Name, m)
		}
	}
	if !strings.Contains(stderr.String(), "PASSED: ") {
		t.Errorf("stderr lacks the verdict:\n%s", stderr.String())
	}
}
