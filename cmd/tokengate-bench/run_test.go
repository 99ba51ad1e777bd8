package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakeGateEnv tells the test binary, started as `tokengate dev`, how to play
// it: "serve" as a working fake, anything else by failing at once.
const fakeGateEnv = "TOKENGATE_BENCH_FAKE_GATE"

// TestMain lets the test binary stand in for both children of run: as the
// bench binary itself it serves the baseline (`noop-server`, the real code),
// and as `tokengate dev` a fake with the same interface.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		switch {
		case os.Args[1] == noopCommand:
			err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
			stop()
			exit(err)
		case os.Args[1] == "dev" && os.Getenv(fakeGateEnv) == "serve":
			err := fakeGateDev(ctx, os.Args[2:], os.Stderr)
			stop()
			exit(err)
		case os.Args[1] == "dev":
			stop()
			exit(errors.New(`level=ERROR msg="fake tokengate told to fail"`))
		}
		stop()
	}
	os.Exit(m.Run())
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

const fakeToken = "fake-token"

// fakeGate allows only "Bearer fake-token", as tokengate allows only tokens
// its issuer signed.
type fakeGate struct {
	authv3.UnimplementedAuthorizationServer
}

func (fakeGate) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"] != "Bearer "+fakeToken {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.Unauthenticated), Message: "token_invalid"}}, nil
	}
	return noopResponse, nil
}

// fakeGateDev plays `tokengate dev --grpc A --http B --authz-http C
// --log-format json`: the serving log line, /readyz, /dev/token, and the
// HTTP endpoint, which allows only the fake token.
func fakeGateDev(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	grpcAddr := fs.String("grpc", "", "")
	httpAddr := fs.String("http", "", "")
	authzAddr := fs.String("authz-http", "", "")
	fs.String("log-format", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, fakeGate{})
	go gs.Serve(gl)
	defer gs.Stop()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /dev/token", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"token": fakeToken, "expires_in": 3600})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(hl)
	defer hs.Close()
	al, err := net.Listen("tcp", *authzAddr)
	if err != nil {
		return err
	}
	as := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})}
	go as.Serve(al)
	defer as.Close()
	slog.New(slog.NewJSONHandler(stderr, nil)).Info("serving",
		"grpc_addr", gl.Addr().String(), "http_addr", hl.Addr().String(), "authz_http_addr", al.Addr().String())
	<-ctx.Done()
	return nil
}

// TestRunSmoke runs the whole bench, child processes included, briefly,
// over each protocol.
func TestRunSmoke(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) { runSmoke(t, protocol) })
	}
}

func runSmoke(t *testing.T, protocol string) {
	t.Setenv(fakeGateEnv, "serve")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{"-tokengate", self, "-json", "-protocol", protocol,
		"-concurrency", "4", "-warmup", "100ms", "-duration", "300ms", "-rounds", "1"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Protocol != protocol {
		t.Errorf("report protocol = %q, want %q", rep.Protocol, protocol)
	}
	if len(rep.Targets) != 2 {
		t.Fatalf("report has %d targets, want 2", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if tg.Requests == 0 || tg.P50 <= 0 || tg.P50 > tg.P99 || len(tg.Rounds) != 1 {
			t.Errorf("%s: requests = %d, p50 = %v, p99 = %v, %d rounds; want requests > 0, 0 < p50 ≤ p99, 1 round",
				tg.Name, tg.Requests, tg.P50, tg.P99, len(tg.Rounds))
		}
	}
	if rep.ThroughputRatio.Median <= 0 || rep.P99Ratio.Median <= 0 {
		t.Errorf("ratios = %v, %v; want both > 0", rep.ThroughputRatio.Median, rep.P99Ratio.Median)
	}
	for _, want := range []string{"throughput ratio (tokengate/baseline): ", "p99 ratio (tokengate/baseline): ", "baseline", "tokengate"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestRunChildFails: a tokengate that never serves fails the run with its
// own words, and the baseline child is stopped.
func TestRunChildFails(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeGateEnv, "fail")
	// A run that did not notice would wait for a tokengate that never
	// serves and time the test out; no wall-clock bound is asserted.
	err = run(t.Context(), []string{"-tokengate", self, "-duration", "100ms"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "exited before serving") || !strings.Contains(err.Error(), "told to fail") {
		t.Fatalf("run = %v, want an error saying tokengate exited, with its last log line", err)
	}
}

func TestRunFlags(t *testing.T) {
	checkFlagErrors(t, nil, map[string]flagCase{
		"no tokengate": {nil, []string{"-tokengate: required"}},
		"all wrong": {
			[]string{"-tokengate", "x", "-protocol", "smtp", "-concurrency", "0", "-conns", "0", "-duration", "0s", "-warmup", "-1s", "-rounds", "0"},
			[]string{"-protocol:", "-concurrency:", "-conns:", "-duration:", "-warmup:", "-rounds:"},
		},
		"outlives the token": {[]string{"-tokengate", "x", "-rounds", "5", "-duration", "5m"}, []string{"-rounds:", "lifetime"}},
		"stray argument":     {[]string{"-tokengate", "x", "extra"}, []string{"unexpected arguments"}},
	})
}

// flagCase is a command line and what its error must mention.
type flagCase struct {
	args []string
	want []string // in the error
}

// checkFlagErrors runs the mode named by prefix with each case's flags and
// checks the error mentions every problem; prefix + -h must succeed.
func checkFlagErrors(t *testing.T, prefix []string, cases map[string]flagCase) {
	t.Helper()
	for name, tc := range cases {
		err := run(t.Context(), append(slices.Clone(prefix), tc.args...), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%s: run = nil, want an error", name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: run = %q, want it to mention %q", name, err, w)
			}
		}
	}
	if err := run(t.Context(), append(slices.Clone(prefix), "-h"), io.Discard, io.Discard); err != nil {
		t.Errorf("run %v -h = %v, want nil", prefix, err)
	}
}
