package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// maxPlanned bounds a run so that the dev token (valid 1h) outlives it.
const maxPlanned = 50 * time.Minute

type config struct {
	protocol    string // grpc or http
	concurrency int
	conns       int
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	tokengate   string
	json        bool
}

// run is the whole program; main only calls it. Tests call it too.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case noopCommand:
			return runNoop(ctx, args[1:], stderr)
		case propagationCommand:
			return runMode(ctx, args[1:], stdout, stderr, parsePropagationConfig, benchPropagation)
		case ingestCommand:
			return runMode(ctx, args[1:], stdout, stderr, parseIngestConfig, benchIngest)
		case soakCommand:
			return runMode(ctx, args[1:], stdout, stderr, parseSoakConfig, benchSoak)
		}
	}
	return runMode(ctx, args, stdout, stderr, parseConfig, bench)
}

// modeConfig is a mode's parsed flags.
type modeConfig interface{ jsonReport() bool }

func (c config) jsonReport() bool            { return c.json }
func (c propagationConfig) jsonReport() bool { return c.json }
func (c ingestConfig) jsonReport() bool      { return c.json }

// runMode is one benchmark mode: parse its flags, run it, write its report.
func runMode[C modeConfig, R textReport](ctx context.Context, args []string, stdout, stderr io.Writer,
	parse func([]string, io.Writer) (C, error), bench func(context.Context, C, io.Writer) (R, error)) error {
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	rep, err := bench(ctx, cfg, stderr)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err != nil {
		return err
	}
	if err := writeReport(rep, cfg.jsonReport(), stdout, stderr); err != nil {
		return err
	}
	if v, ok := any(rep).(verdictReport); ok {
		return v.verdict()
	}
	return nil
}

// verdictReport is a report that can fail the run once it is written: the
// exit status then says so.
type verdictReport interface{ verdict() error }

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("tokengate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.protocol, "protocol", "grpc", "grpc: Envoy's ext_authz gRPC service; http: the HTTP authorization endpoint (listen.authz_http, envoy mode) against a do-nothing HTTP server, over keep-alive connections")
	fs.IntVar(&cfg.concurrency, "concurrency", 32, "concurrent Check streams (HTTP: clients), each a closed loop")
	fs.IntVar(&cfg.conns, "conns", 1, "gRPC client connections per target; the streams share them")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured load per target and round")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each measurement")
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds, each measuring both targets; medians are reported")
	fs.StringVar(&cfg.tokengate, "tokengate", "", "path to a built tokengate binary (required)")
	fs.BoolVar(&cfg.json, "json", false, "write a JSON report to stdout; the table goes to stderr")
	return cfg, parseFlags(fs, args, func() error { return cfg.validate() })
}

// validate reports every problem at once.
func (c config) validate() error {
	var p problems
	bad := p.bad
	if c.protocol != "grpc" && c.protocol != "http" {
		bad("protocol", "want grpc or http, got %q", c.protocol)
	}
	if c.concurrency < 1 || c.concurrency > 1024 {
		bad("concurrency", "must be between 1 and 1024, got %d", c.concurrency)
	}
	if c.conns < 1 || c.conns > max(c.concurrency, 1) {
		bad("conns", "must be between 1 and -concurrency, got %d", c.conns)
	}
	if c.duration <= 0 {
		bad("duration", "must be positive, got %s", c.duration)
	}
	if c.warmup < 0 {
		bad("warmup", "must be 0 or more, got %s", c.warmup)
	}
	if c.rounds < 1 || c.rounds > 99 {
		bad("rounds", "must be between 1 and 99, got %d", c.rounds)
	} else if planned := time.Duration(2*c.rounds) * (c.warmup + c.duration); planned > maxPlanned {
		bad("rounds", "2 targets × %d rounds × (%s + %s) = %s; must be at most %s, within the token's lifetime",
			c.rounds, c.warmup, c.duration, planned, maxPlanned)
	}
	if c.tokengate == "" {
		bad("tokengate", "required: the path to a built tokengate binary (make bench builds bin/tokengate)")
	}
	return p.err()
}

// target is one server under load: the baseline or tokengate.
type target struct {
	name    string
	proc    *child
	addr    string
	conns   []*grpc.ClientConn
	clients []grpc.ClientConnInterface
	rounds  []roundResult
	// The HTTP protocol's: the endpoint's URL and a keep-alive client.
	url  string
	http *http.Client
}

// bench starts both targets, measures them alternately round after round and
// stops them. Progress goes to w.
func bench(ctx context.Context, cfg config, w io.Writer) (report, error) {
	self, err := os.Executable()
	if err != nil {
		return report{}, fmt.Errorf("find own binary to serve the baseline: %w", err)
	}
	base, err := startChild(ctx, "baseline", self, noopCommand, "-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0")
	if err != nil {
		return report{}, err
	}
	defer base.stop()
	gate, err := startChild(ctx, "tokengate", cfg.tokengate,
		"dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--authz-http", "127.0.0.1:0", "--log-format", "json")
	if err != nil {
		return report{}, err
	}
	defer gate.stop()

	baseAddrs, err := base.serving(ctx)
	if err != nil {
		return report{}, err
	}
	gateAddrs, err := gate.serving(ctx)
	if err != nil {
		return report{}, err
	}
	if gateAddrs.HTTP == "" {
		return report{}, gate.explain(errors.New("no http_addr in its serving log line"))
	}
	if err := gate.waitReady(ctx, gateAddrs.HTTP); err != nil {
		return report{}, err
	}
	tok, err := mintToken(ctx, gateAddrs.HTTP)
	if err != nil {
		return report{}, gate.explain(err)
	}
	req := checkRequest(tok)

	targets := []*target{
		{name: "baseline", proc: base, addr: baseAddrs.GRPC, url: "http://" + baseAddrs.AuthzHTTP + benchPath},
		{name: "tokengate", proc: gate, addr: gateAddrs.GRPC, url: "http://" + gateAddrs.AuthzHTTP + benchPath},
	}
	for _, t := range targets {
		if cfg.protocol == "http" {
			t.http = keepAliveClient(cfg.concurrency)
			defer t.http.CloseIdleConnections()
			continue
		}
		if err := t.dial(cfg.conns); err != nil {
			return report{}, err
		}
		defer t.close()
	}
	for r := range cfg.rounds {
		order := targets
		if r%2 == 1 {
			order = []*target{targets[1], targets[0]}
		}
		for _, t := range order {
			res, err := t.measure(ctx, cfg, req)
			if err != nil {
				return report{}, err
			}
			fmt.Fprintf(w, "round %d/%d  %-9s  %9.0f req/s  p50 %s  p99 %s  (%d requests)\n",
				r+1, cfg.rounds, t.name, res.Throughput, fmtLatency(res.P50), fmtLatency(res.P99), res.Requests)
		}
	}
	return newReport(cfg, targets[0], targets[1]), nil
}

// dial opens n client connections to the target.
func (t *target) dial(n int) error {
	for range n {
		cc, err := grpc.NewClient("passthrough:///"+t.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("%s: dial %s: %w", t.name, t.addr, err)
		}
		t.conns = append(t.conns, cc)
		t.clients = append(t.clients, cc)
	}
	return nil
}

func (t *target) close() {
	for _, cc := range t.conns {
		cc.Close()
	}
}

// measure warms the target up, then measures it once and keeps the result.
func (t *target) measure(ctx context.Context, cfg config, req *authv3.CheckRequest) (roundResult, error) {
	run := func(d time.Duration) (loadResult, error) {
		if t.http != nil {
			return loadHTTP(ctx, t.http, t.url, req, cfg.concurrency, d)
		}
		return load(ctx, t.clients, req, cfg.concurrency, d)
	}
	if cfg.warmup > 0 {
		if _, err := run(cfg.warmup); err != nil {
			return roundResult{}, t.proc.explain(fmt.Errorf("warm-up: %w", err))
		}
	}
	res, err := run(cfg.duration)
	if err != nil {
		return roundResult{}, t.proc.explain(fmt.Errorf("round %d: %w", len(t.rounds)+1, err))
	}
	rr := newRoundResult(res)
	t.rounds = append(t.rounds, rr)
	return rr, nil
}

// benchPath is the path of the request to authorise.
const benchPath = "/bench"

// checkRequest is the request every call sends, to both targets: what Envoy
// sends for a GET with a bearer token.
func checkRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       "tokengate-bench",
			Method:   "GET",
			Path:     benchPath,
			Host:     "bench.local",
			Scheme:   "http",
			Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority":    "bench.local",
				":method":       "GET",
				":path":         benchPath,
				"authorization": "Bearer " + tok,
				"user-agent":    "tokengate-bench",
				"x-request-id":  "tokengate-bench",
			},
		}},
	}}
}

// parseFlags parses args, refuses positional arguments, then validates: the
// common tail of every mode's flag parsing.
func parseFlags(fs *flag.FlagSet, args []string, validate func() error) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return validate()
}

// problems collects every flag problem, so that all are reported at once.
type problems []error

func (p *problems) bad(name, format string, args ...any) {
	*p = append(*p, fmt.Errorf("-%s: %s", name, fmt.Sprintf(format, args...)))
}

func (p problems) err() error { return errors.Join(p...) }
