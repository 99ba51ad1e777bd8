package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// noopCommand is the hidden subcommand that serves the baseline: the bench
// starts its own binary with it, so the baseline runs in a process of its own
// as tokengate does.
const noopCommand = "noop-server"

// noopServer is the baseline: an ext_authz server that allows every request
// and does nothing else. What tokengate costs is what it adds to this.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
}

// noopResponse is shared, read only, by every answer.
var noopResponse = &authv3.CheckResponse{
	Status:       &status.Status{Code: int32(codes.OK)},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

func (noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return noopResponse, nil
}

// runNoop serves the baseline until ctx ends. Like tokengate, it logs a JSON
// "serving" line with grpc_addr to stderr once it listens.
func runNoop(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(noopCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address (loopback only)")
	httpAddr := fs.String("http-addr", "", "HTTP listen address (loopback only; empty: none): a do-nothing HTTP authorization server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addrs := []string{*addr}
	if *httpAddr != "" {
		addrs = append(addrs, *httpAddr)
	}
	for _, a := range addrs {
		if err := checkLoopback(a); err != nil {
			return fmt.Errorf("%s: %w", noopCommand, err)
		}
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("%s: %w", noopCommand, err)
	}
	var httpLis net.Listener
	if *httpAddr != "" {
		if httpLis, err = net.Listen("tcp", *httpAddr); err != nil {
			lis.Close()
			return fmt.Errorf("%s: %w", noopCommand, err)
		}
	}
	return serveNoop(ctx, lis, httpLis, slog.New(slog.NewJSONHandler(stderr, nil)))
}

// noopHTTP is the HTTP baseline: 200, nothing else, to every request.
func noopHTTP(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }

// serveNoop serves the baseline on lis (gRPC) and httpLis (HTTP, when not
// nil) until ctx ends, then stops gracefully (forcefully after 5s).
func serveNoop(ctx context.Context, lis, httpLis net.Listener, log *slog.Logger) error {
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20)) // as tokengate's
	authv3.RegisterAuthorizationServer(gs, noopServer{})
	hs := &http.Server{Handler: http.HandlerFunc(noopHTTP), ReadHeaderTimeout: 5 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	httpAddr := ""
	if httpLis != nil {
		httpAddr = httpLis.Addr().String()
		g.Go(func() error {
			if err := hs.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		return nil
	})
	log.Info("serving", "grpc_addr", lis.Addr().String(), "authz_http_addr", httpAddr)
	return g.Wait()
}

// checkLoopback accepts host:port addresses on a loopback IP only: every
// byte of benchmark traffic stays on this machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", addr)
	}
	return nil
}
