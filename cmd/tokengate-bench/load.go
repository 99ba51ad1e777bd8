package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// answerGrace bounds how long a call started before the end of a phase may
// take to answer; a target that keeps calls hanging longer fails the run.
const answerGrace = 10 * time.Second

// errUnexpected marks an answer other than the one a phase measures, which
// fails the phase; closedLoop counts those apart from calls that failed.
var errUnexpected = errors.New("unexpected answer")

// errDenied marks a Check answered by anything but an allow: a benchmark of
// denials measures the wrong path.
var errDenied = fmt.Errorf("%w: request denied", errUnexpected)

// loadResult is one phase of load against one target.
type loadResult struct {
	requests uint64        // calls answered as expected
	elapsed  time.Duration // from the first call to the last answer
	latency  *histogram
}

func (r loadResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

// load runs concurrency goroutines, each calling Check with req in a closed
// loop (the next call starts when the previous answer arrives) until d has
// passed, spread round-robin over conns. Every answer must be an allow
// (status code 0): the first denial or gRPC error ends the phase and fails it.
//
// The request is encoded once and answers are read only as far as their
// status code (wireCodec): the load generator shares the machine's cores
// with the server it measures, so it must do as little as it can, and the
// same for every target.
func load(ctx context.Context, conns []grpc.ClientConnInterface, req *authv3.CheckRequest, concurrency int, d time.Duration) (loadResult, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return loadResult{}, err
	}
	return closedLoop(ctx, concurrency, d, func(ctx context.Context, worker int) error {
		var st answerStatus
		err := conns[worker%len(conns)].Invoke(ctx, checkMethod, raw, &st, grpc.ForceCodec(wireCodec{}))
		switch {
		case err != nil:
			return fmt.Errorf("check: %w", err)
		case st.code != int32(codes.OK):
			return fmt.Errorf("%w: code %s, %q", errDenied, codes.Code(st.code), st.message)
		}
		return nil
	})
}

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// answerStatus is the google.rpc.Status of a CheckResponse.
type answerStatus struct {
	code    int32
	message string
}

// wireCodec sends pre-encoded request bytes and decodes only the status of
// a CheckResponse (field 1, a google.rpc.Status whose field 1 is the code
// and field 2 the message), skipping the rest of the answer.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("wireCodec: cannot send %T", v)
	}
	return b, nil
}

func (wireCodec) Unmarshal(data []byte, v any) error {
	st, ok := v.(*answerStatus)
	if !ok {
		return fmt.Errorf("wireCodec: cannot read into %T", v)
	}
	*st = answerStatus{}
	status, err := field(data, 1)
	if err != nil || status == nil {
		return err
	}
	for len(status) > 0 {
		num, typ, n := protowire.ConsumeTag(status)
		if n < 0 {
			return protowire.ParseError(n)
		}
		status = status[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			c, n := protowire.ConsumeVarint(status)
			if n < 0 {
				return protowire.ParseError(n)
			}
			st.code, status = int32(c), status[n:]
		case num == 2 && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(status)
			if n < 0 {
				return protowire.ParseError(n)
			}
			st.message, status = string(m), status[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, status)
			if n < 0 {
				return protowire.ParseError(n)
			}
			status = status[n:]
		}
	}
	return nil
}

// field returns the bytes of the first length-delimited field num of a
// message, or nil.
func field(msg []byte, num protowire.Number) ([]byte, error) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			return v, nil
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return nil, nil
}

// closedLoop runs concurrency workers, each calling call in a closed loop
// (the next call starts when the previous one returned) until d has passed,
// and records the latency of every call that succeeded. A call gets the
// worker's number, 0 to concurrency-1. The first error ends the phase and
// fails it; calls cut short by that are not counted.
func closedLoop(ctx context.Context, concurrency int, d time.Duration, call func(ctx context.Context, worker int) error) (loadResult, error) {
	phaseCtx, cancel := context.WithTimeout(ctx, d+answerGrace)
	defer cancel()
	g, gctx := errgroup.WithContext(phaseCtx)
	hists := make([]*histogram, concurrency)
	var unexpected, failed atomic.Uint64
	start := time.Now()
	end := start.Add(d)
	for i := range concurrency {
		h := newHistogram()
		hists[i] = h
		g.Go(func() error {
			for time.Now().Before(end) {
				t0 := time.Now()
				err := call(gctx, i)
				lat := time.Since(t0)
				switch {
				case err != nil && gctx.Err() != nil:
					return nil // the phase was cut short; said below
				case errors.Is(err, errUnexpected):
					unexpected.Add(1)
					return err
				case err != nil:
					failed.Add(1)
					return err
				}
				h.record(lat)
			}
			return nil
		})
	}
	err := g.Wait()
	res := loadResult{elapsed: time.Since(start), latency: newHistogram()}
	for _, h := range hists {
		res.latency.merge(h)
	}
	res.requests = res.latency.count()
	switch {
	case err != nil:
		return res, fmt.Errorf("%s and %s after %d as expected; first: %w",
			plural(int(unexpected.Load()), "unexpected answer"), plural(int(failed.Load()), "failed call"), res.requests, err)
	case ctx.Err() != nil:
		return res, ctx.Err()
	case phaseCtx.Err() != nil:
		return res, fmt.Errorf("calls still unanswered %s after the end of the phase", answerGrace)
	}
	return res, nil
}

// keepAliveClient is an HTTP client that keeps a connection per worker
// open, as a proxy keeps its connections to the authorization server.
func keepAliveClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		MaxConnsPerHost:     concurrency,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

// loadHTTP is load over the HTTP protocol: concurrency workers, each
// asking url about the request req describes (its method, host and bearer
// token, as Envoy's HTTP mode sends them) in a closed loop until d has
// passed. Every answer must be 200: the first other status ends the phase
// and fails it.
func loadHTTP(ctx context.Context, client *http.Client, url string, req *authv3.CheckRequest, concurrency int, d time.Duration) (loadResult, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	return closedLoop(ctx, concurrency, d, func(ctx context.Context, _ int) error {
		hr, err := http.NewRequestWithContext(ctx, h.GetMethod(), url, nil)
		if err != nil {
			return err
		}
		hr.Host = h.GetHost()
		hr.Header = http.Header{
			"Authorization": {h.GetHeaders()["authorization"]},
			"User-Agent":    {h.GetHeaders()["user-agent"]},
			"X-Request-Id":  {h.GetHeaders()["x-request-id"]},
		}
		resp, err := client.Do(hr)
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		// Read to the end, so that the connection is kept for the next call.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%w: status %d, reason %q", errDenied, resp.StatusCode, resp.Header.Get("X-Tokengate-Reason"))
		}
		return nil
	})
}
