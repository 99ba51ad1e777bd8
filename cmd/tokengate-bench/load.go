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

// errDenied marks a run that got anything but an allow: a benchmark of
// denials measures the wrong path.
var errDenied = errors.New("request denied")

// loadResult is one phase of load against one target.
type loadResult struct {
	requests uint64        // answered allows
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
	phaseCtx, cancel := context.WithTimeout(ctx, d+answerGrace)
	defer cancel()
	g, gctx := errgroup.WithContext(phaseCtx)
	hists := make([]*histogram, concurrency)
	var denied, failed atomic.Uint64
	start := time.Now()
	end := start.Add(d)
	for i := range concurrency {
		h := newHistogram()
		hists[i] = h
		client := clients[i%len(clients)]
		g.Go(func() error {
			for time.Now().Before(end) {
				t0 := time.Now()
				resp, err := client.Check(gctx, req)
				lat := time.Since(t0)
				switch {
				case err != nil && gctx.Err() != nil:
					return nil // the phase was cut short; said below
				case err != nil:
					failed.Add(1)
					return fmt.Errorf("check: %w", err)
				case resp.GetStatus().GetCode() != int32(codes.OK):
					denied.Add(1)
					st := resp.GetStatus()
					return fmt.Errorf("%w: code %s, %q", errDenied, codes.Code(st.GetCode()), st.GetMessage())
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
		return res, fmt.Errorf("%d denied and %d failed after %d allowed; first: %w",
			denied.Load(), failed.Load(), res.requests, err)
	case ctx.Err() != nil:
		return res, ctx.Err()
	case phaseCtx.Err() != nil:
		return res, fmt.Errorf("calls still unanswered %s after the end of the phase", answerGrace)
	}
	return res, nil
}
