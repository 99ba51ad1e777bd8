package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

var uuidLike = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestUserDelete(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	ids := map[string]bool{}
	for _, n := range []uint64{1, 2, 255, 1 << 40} {
		body, err := json.Marshal(userDelete("0badc0de", n, at))
		if err != nil {
			t.Fatal(err)
		}
		// Read it back as tokengate reads a FusionAuth event.
		var msg struct {
			Event struct {
				ID            string `json:"id"`
				Type          string `json:"type"`
				CreateInstant *int64 `json:"createInstant"`
				TenantID      string `json:"tenantId"`
				Info          map[string]string
				User          struct {
					ID       string `json:"id"`
					TenantID string `json:"tenantId"`
				} `json:"user"`
			} `json:"event"`
		}
		if err := json.Unmarshal(body, &msg); err != nil {
			t.Fatalf("event %d: %v\n%s", n, err, body)
		}
		ev := msg.Event
		if ev.Type != "user.delete" || ev.CreateInstant == nil || *ev.CreateInstant != at.UnixMilli() ||
			ev.TenantID != faTenant || ev.User.TenantID != faTenant || len(ev.Info) == 0 {
			t.Errorf("event %d: %s; want a user.delete of tenant %s at %d ms, with info", n, body, faTenant, at.UnixMilli())
		}
		for _, id := range []string{ev.ID, ev.User.ID} {
			if !uuidLike.MatchString(id) || !strings.HasPrefix(id, "0badc0de-") {
				t.Errorf("event %d: id %q; want a UUID-like id starting with the run's 0badc0de-", n, id)
			}
			if ids[id] {
				t.Errorf("event %d: id %q used twice", n, id)
			}
			ids[id] = true
		}
	}
}

// TestSignBody checks the signature with tokengate's own verifier, and the
// claim against the body's hash as FusionAuth computes it.
func TestSignBody(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	body := []byte(`{"event":{"id":"e1","type":"user.delete"}}`)
	sig := signBody(secret, body)

	parts := strings.Split(sig, ".")
	if len(parts) != 3 {
		t.Fatalf("signature %q: want a compact JWS of 3 parts", sig)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	sum := sha256.Sum256(body)
	if want := base64.StdEncoding.EncodeToString(sum[:]); len(claims) != 1 || claims["request_body_sha256"] != want {
		t.Errorf("claims = %v, want only request_body_sha256 = %q", claims, want)
	}

	verify := func(secret, body []byte) error {
		v, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		return v.Verify(t.Context(), sig, body)
	}
	if err := verify(secret, body); err != nil {
		t.Errorf("tokengate's verifier: %v, want the signature accepted", err)
	}
	if err := verify([]byte("another secret, 32 bytes or more"), body); err == nil {
		t.Error("verified with another secret; want an error")
	}
	if err := verify(secret, append(body, ' ')); err == nil {
		t.Error("verified another body; want an error")
	}
}

// fakeReceiver plays tokengate's FusionAuth receiver: it verifies each
// signature, answers applied to the first `applied` events and then with
// status and body.
type fakeReceiver struct {
	t       *testing.T
	verify  *token.BodySignatureVerifier
	applied int64
	status  int
	body    string

	n     atomic.Int64
	mu    sync.Mutex
	ids   map[string]bool
	conns map[string]bool // remote addresses seen
}

func (f *fakeReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != webhookPath || r.Header.Get("Content-Type") != "application/json" {
		f.t.Errorf("got %s %s (%s), want POST %s with JSON", r.Method, r.URL.Path, r.Header.Get("Content-Type"), webhookPath)
	}
	if err := f.verify.Verify(r.Context(), r.Header.Get(signatureHeader), body); err != nil {
		f.t.Errorf("signature: %v", err)
	}
	var msg faWebhook
	if err := json.Unmarshal(body, &msg); err != nil {
		f.t.Errorf("body: %v", err)
	}
	f.mu.Lock()
	if f.ids[msg.Event.ID] {
		f.t.Errorf("event %s sent twice", msg.Event.ID)
	}
	f.ids[msg.Event.ID] = true
	f.conns[r.RemoteAddr] = true
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if f.n.Add(1) <= f.applied {
		io.WriteString(w, `{"result":"applied","revocations":1}`)
		return
	}
	w.WriteHeader(f.status)
	io.WriteString(w, f.body)
}

func startReceiver(t *testing.T, secret []byte, applied int64, status int, body string) (*fakeReceiver, string) {
	t.Helper()
	v, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeReceiver{t: t, verify: v, applied: applied, status: status, body: body,
		ids: map[string]bool{}, conns: map[string]bool{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func TestWebhookSenderApplied(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	f, addr := startReceiver(t, secret, 1<<62, 0, "")
	s := newWebhookSender(addr, secret, "0badc0de", 4)
	defer s.close()
	res, err := closedLoop(t.Context(), 4, 200*time.Millisecond, func(ctx context.Context, _ int) error { return s.send(ctx) })
	if err != nil {
		t.Fatalf("closedLoop: %v", err)
	}
	if res.requests == 0 || res.requests != uint64(f.n.Load()) {
		t.Errorf("%d events applied, the receiver answered %d; want as many, more than 0", res.requests, f.n.Load())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Kept alive, 4 senders use about 4 connections; the transport may
	// dial a spare when a connection is on its way back to the pool, which
	// a loaded machine makes likelier. Without keep-alive there is one per
	// event.
	if n := len(f.conns); n > 2*4 {
		t.Errorf("%d connections for 4 senders and %d events; want them kept alive", n, res.requests)
	}
}

func TestWebhookSenderNotApplied(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	for name, tc := range map[string]struct {
		status int
		body   string
	}{
		"unavailable": {http.StatusServiceUnavailable, `{"error":"unavailable","error_description":"retry"}`},
		"duplicate":   {http.StatusOK, `{"result":"duplicate","revocations":0}`},
		"ignored":     {http.StatusOK, `{"result":"ignored","reason":"tenant not configured"}`},
		"not json":    {http.StatusOK, `applied`},
	} {
		t.Run(name, func(t *testing.T) {
			_, addr := startReceiver(t, secret, 10, tc.status, tc.body)
			s := newWebhookSender(addr, secret, "0badc0de", 2)
			// An hour-long run: only the first answer not applied can end it
			// before the test times out. No wall-clock bound is asserted.
			_, err := closedLoop(t.Context(), 2, time.Hour, func(ctx context.Context, _ int) error { return s.send(ctx) })
			s.close()
			if !errors.Is(err, errUnexpected) || !strings.Contains(err.Error(), tc.body) {
				t.Errorf("closedLoop = %v, want an unexpected answer quoting %s", err, tc.body)
			}
		})
	}
}

func TestIngestReport(t *testing.T) {
	hist := func(ds ...time.Duration) *histogram {
		h := newHistogram()
		for _, d := range ds {
			h.record(d)
		}
		return h
	}
	durable := storageCheck{fsync: "on", synchronousCommit: "on"}
	cfg := ingestConfig{senders: 16, duration: 10 * time.Second, warmup: 2 * time.Second}
	for name, tc := range map[string]struct {
		events uint64
		st     storageCheck
		met    bool
		end    string
	}{
		"over":          {60000, durable, true, "target ≥ 5000 events/s: met\n"},
		"at":            {50000, durable, true, "target ≥ 5000 events/s: met\n"},
		"under":         {49999, durable, false, "target ≥ 5000 events/s: NOT met\n"},
		"none":          {0, durable, false, "target ≥ 5000 events/s: NOT met\n"},
		"async commit":  {60000, storageCheck{fsync: "on", synchronousCommit: "off"}, false, "with durable commits: NOT met\n"},
		"no fsync":      {60000, storageCheck{fsync: "off", synchronousCommit: "on"}, false, "with durable commits: NOT met\n"},
		"local commits": {60000, storageCheck{fsync: "on", synchronousCommit: "local"}, true, "target ≥ 5000 events/s: met\n"},
	} {
		res := loadResult{requests: tc.events, elapsed: 10 * time.Second, latency: hist(ms, 2*ms, 30*ms)}
		warm := loadResult{requests: 1500, elapsed: 2 * time.Second, latency: newHistogram()}
		tc.st.stored = 1500 + tc.events
		rep := newIngestReport(cfg, "test", warm, res, tc.st)
		if rep.Met != tc.met {
			t.Errorf("%s: met = %v, want %v", name, rep.Met, tc.met)
		}
		if want := float64(tc.events) / 10; rep.Throughput != want {
			t.Errorf("%s: throughput = %v, want %v", name, rep.Throughput, want)
		}
		var buf bytes.Buffer
		if err := rep.writeText(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(buf.String(), tc.end) {
			t.Errorf("%s: the text ends\n%s\nwant it to end %q", name, buf.String(), tc.end)
		}
	}
}

func TestIngestReportText(t *testing.T) {
	h := newHistogram()
	for _, d := range []time.Duration{2 * ms, 3 * ms, 4 * ms, 40*ms + 123456} {
		h.record(d)
	}
	rep := newIngestReport(ingestConfig{senders: 16, duration: 10 * time.Second, warmup: 2 * time.Second},
		"a throwaway durable cluster",
		loadResult{requests: 2000, elapsed: 2 * time.Second, latency: newHistogram()},
		loadResult{requests: 12345, elapsed: 10003 * ms, latency: h},
		storageCheck{stored: 14345, fsync: "on", synchronousCommit: "on"})
	var buf bytes.Buffer
	if err := rep.writeText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"16 senders, each a closed loop of signed FusionAuth user.delete webhooks to 1 tokengate replica",
		"(a throwaway durable cluster; fsync=on, synchronous_commit=on: durable commits)",
		"2s warm-up, then 10s measured",
		"  events   seconds   events/s        p50        p99        max\n",
		"   12345    10.003       1234    3.006ms   40.123ms   40.123ms\n", // p99 at most the max
		"stored: 14345 revocations for 14345 events applied (2000 in the warm-up): each 200 was committed",
		"events/s 1234  p99 40.123ms  target ≥ 5000 events/s: NOT met",
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

func TestIngestFlags(t *testing.T) {
	checkFlagErrors(t, []string{ingestCommand}, map[string]flagCase{
		"all wrong":      {[]string{"-tokengate", "", "-senders", "0", "-duration", "0s", "-warmup", "-1s"}, []string{"-tokengate:", "-senders:", "-duration:", "-warmup:"}},
		"too much":       {[]string{"-senders", "1025", "-duration", "2h", "-warmup", "2h"}, []string{"-senders:", "-duration:", "-warmup:"}},
		"stray argument": {[]string{"extra"}, []string{"unexpected arguments"}},
		"load flag":      {[]string{"-concurrency", "4"}, []string{"-concurrency"}},
	})
	cfg, err := parseIngestConfig(nil, io.Discard)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	want := ingestConfig{tokengate: "bin/tokengate", senders: 16, duration: 10 * time.Second, warmup: 2 * time.Second}
	if cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
}

// TestIngestSmoke runs the whole ingest mode, briefly: the real tokengate,
// built for the test, on a throwaway durable cluster, 2 senders for 1s.
func TestIngestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokengate and starts PostgreSQL")
	}
	cluster := pgtest.NewCluster(t, pgtest.Options{Durable: true})
	url, err := cluster.CreateDatabase(t.Context(), "ingest")
	if err != nil {
		t.Fatal(err)
	}
	gate := buildTokengate(t)

	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{ingestCommand, "-tokengate", gate, "-senders", "2", "-warmup", "200ms", "-duration", "1s",
		"-postgres-url", url, "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep ingestReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Senders != 2 || rep.Events == 0 || rep.WarmupEvents == 0 || rep.Stored != rep.Events+rep.WarmupEvents {
		t.Errorf("report = %+v; want 2 senders, events in both phases, and all of them stored", rep)
	}
	if rep.Seconds < 1 || rep.Throughput <= 0 || !rep.Durable || rep.Fsync != "on" || rep.SynchronousCommit != "on" {
		t.Errorf("report = %+v; want a window ≥ 1s, a throughput, and durable commits", rep)
	}
	if l := rep.Latency; l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("latency %+v; want 0 < p50 ≤ p99 ≤ max", l)
	}
	// An existing server: PostgreSQL's CPU is not this machine's to read.
	if c := rep.CPU; c.Replica <= 0 || c.Bench <= 0 || c.Postgres != 0 || c.Cores < 1 || c.Ceiling <= 0 {
		t.Errorf("CPU per event %+v; want the replica's and the load generator's, no PostgreSQL, and a ceiling", c)
	}
	for _, want := range []string{"replica 1 serving", "revocations stored", "target ≥ 5000 events/s: ", "CPU per event: replica "} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
