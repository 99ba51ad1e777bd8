package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// startInProcess serves srv on loopback for the test and returns a client.
func startInProcess(t *testing.T, srv authv3.AuthorizationServer) grpc.ClientConnInterface {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestLoadNoop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveNoop(ctx, lis, nil, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveNoop: %v", err)
		}
	})
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := grpc.ClientConnInterface(cc)

	// A load that ignored its duration would never return and time the
	// test out; how close to 300ms it ends is not asserted.
	res, err := load(t.Context(), []grpc.ClientConnInterface{client}, checkRequest("x"), 4, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if res.requests == 0 {
		t.Fatal("no requests answered")
	}
	p50, p99 := res.latency.percentile(0.50), res.latency.percentile(0.99)
	if p50 <= 0 || p50 > p99 {
		t.Errorf("p50 = %v, p99 = %v; want 0 < p50 ≤ p99", p50, p99)
	}
	if res.elapsed < 300*time.Millisecond || res.throughput() <= 0 {
		t.Errorf("elapsed = %v, throughput = %v; want ≥ 300ms and > 0", res.elapsed, res.throughput())
	}
}

// denyAfter allows n requests, then denies every one.
type denyAfter struct {
	authv3.UnimplementedAuthorizationServer
	n chan struct{}
}

func (d denyAfter) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	select {
	case <-d.n:
		return noopResponse, nil
	default:
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.Unauthenticated), Message: "token_invalid"}}, nil
	}
}

func TestLoadFailsOnDenial(t *testing.T) {
	allow := make(chan struct{}, 50)
	for range cap(allow) {
		allow <- struct{}{}
	}
	client := startInProcess(t, denyAfter{n: allow})
	// The phase is an hour long: only the denial can end it before the
	// test times out. No wall-clock bound is asserted.
	_, err := load(t.Context(), []grpc.ClientConnInterface{client}, checkRequest("x"), 4, time.Hour)
	if !errors.Is(err, errDenied) {
		t.Fatalf("load = %v, want an error wrapping %v", err, errDenied)
	}
	t.Logf("error: %v", err)
}

func TestLoadFailsOnError(t *testing.T) {
	client := startInProcess(t, &authv3.UnimplementedAuthorizationServer{})
	_, err := load(t.Context(), []grpc.ClientConnInterface{client}, checkRequest("x"), 2, 5*time.Second)
	if err == nil || errors.Is(err, errDenied) {
		t.Fatalf("load = %v, want a gRPC error", err)
	}
}
