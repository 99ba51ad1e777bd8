package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
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
// passed, spread round-robin over clients. Every answer must be an allow
// (status code 0): the first denial or gRPC error ends the phase and fails it.
func load(ctx context.Context, clients []authv3.AuthorizationClient, req *authv3.CheckRequest, concurrency int, d time.Duration) (loadResult, error) {
	return closedLoop(ctx, concurrency, d, func(ctx context.Context, worker int) error {
		resp, err := clients[worker%len(clients)].Check(ctx, req)
		switch {
		case err != nil:
			return fmt.Errorf("check: %w", err)
		case resp.GetStatus().GetCode() != int32(codes.OK):
			st := resp.GetStatus()
			return fmt.Errorf("%w: code %s, %q", errDenied, codes.Code(st.GetCode()), st.GetMessage())
		}
		return nil
	})
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
