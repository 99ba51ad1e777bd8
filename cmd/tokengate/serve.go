package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/health"
	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
)

// serveHooks let `dev` and tests reuse serve: listeners bound in advance,
// extra HTTP routes, and a callback once both listeners serve.
type serveHooks struct {
	grpcListener, httpListener net.Listener
	mount                      func(mux *http.ServeMux)
	started                    func(listenAddrs)
	// tlsReloaded, when set, is told each TLS reload's result.
	tlsReloaded func(result string)
}

// listenAddrs are the addresses served on ("": that listener is off).
type listenAddrs struct {
	grpc, http, admin, authzHTTP string
}

// serve wires tokengate from a validated configuration and runs it until ctx
// ends, then shuts down: NOT_SERVING, drain delay, graceful stop.
func serve(ctx context.Context, cfg settings, log *slog.Logger, hooks serveHooks) error {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register process metrics: %w", err)
		}
	}

	h := health.New()
	// Readiness waits for the keys of required issuers only. The others
	// answer UNAVAILABLE for their own tokens until their keys load, so
	// that one IdP's JWKS outage at start does not take every issuer's
	// traffic off this replica.
	required := map[string]bool{}
	for _, ic := range cfg.Issuers {
		if ic.Required {
			required[ic.Name] = true
			h.Register("issuer/"+ic.Name, "keys not loaded yet")
		} else {
			log.Info("issuer not required: readiness does not wait for its keys", "issuer", ic.Name)
		}
	}
	issuerLoaded := func(name string) {
		if required[name] {
			h.Set("issuer/"+name, true, "")
		}
	}
	rv, err := openRevocations(cfg.Config, log, reg, h)
	if err != nil {
		return err
	}
	defer func() {
		if err := rv.close(); err != nil {
			log.Warn("closing the revocation store", "err", err)
		}
	}()
	// The route policy: compiled by loadConfig, held here so that a reload
	// of policy.file swaps it under running requests.
	var (
		policies    *policyHolder
		policyFn    func() *policy.Set
		subjects    *policy.Subjects
		policyWatch *policyWatcher
	)
	if ps := cfg.policy; ps != nil {
		policies = &policyHolder{}
		policies.Store(ps.set)
		policyFn = policies.Load
		// A reload may bring rules that read claims (a when, headers): with
		// a file, every token keeps its claims from the start.
		subjects = policy.NewSubjects(ps.base.Issuers, ps.set.NeedsClaims() || ps.file != "")
		if ps.file != "" {
			if policyWatch, err = newPolicyWatcher(ps, cfg.Policy.PollInterval, policies, log, reg); err != nil {
				return err
			}
			policyWatch.listenSIGHUP()
			defer policyWatch.stopSIGHUP()
		}
		log.Info("route policy", "file", ps.file, "policies", ps.names, "rules", ps.rules, "unmatched", cfg.Policy.Unmatched)
	}
	verifier, err := token.New(token.Options{
		Issuers:            cfg.issuers,
		CacheMaxEntries:    cfg.Cache.cacheEntries(),
		CacheMaxBytes:      cfg.Cache.MaxBytes,
		MaxTokenBytes:      cfg.Tokens.MaxBytes,
		RefreshInterval:    cfg.JWKS.RefreshInterval,
		UnknownKIDInterval: cfg.JWKS.UnknownKIDInterval,
		HTTPClient:         &http.Client{Timeout: cfg.JWKS.Timeout},
		Logger:             log,
		Derive:             extauthz.Derive(cfg.headers, rv.index, subjects),
		Registerer:         reg,
		OnFetch: func(issuer, result string) {
			if result != "error" {
				issuerLoaded(issuer)
			}
		},
	})
	if err != nil {
		return err
	}
	for name, loaded := range verifier.Loaded() {
		if loaded {
			issuerLoaded(name)
		}
	}
	revoker, err := intake.NewRevoker(rv.store, rv.follower, cfg.intakeIssuers, nil)
	if err != nil {
		return fmt.Errorf("revocation intake: %w", err)
	}
	authz, err := extauthz.NewServer(extauthz.Options{
		Verifier:            verifier,
		Headers:             cfg.headers,
		Revocations:         rv.index,
		Loaded:              rv.follower.Loaded,
		Staleness:           rv.follower.Staleness,
		MaxStaleness:        cfg.Revocation.MaxStaleness,
		FailOpen:            cfg.Revocation.OnStale == "allow",
		LogoutRoutes:        cfg.logoutRoutes,
		Logout:              revoker,
		IntrospectionRoutes: cfg.introspectionRoutes,
		TokenSources:        cfg.tokenSources,
		Policy:              policyFn,
		MaxTokenBytes:       cfg.Tokens.MaxBytes,
		Registerer:          reg,
		Logger:              log,

		DenialLogsPerSecond: cfg.Log.DenialsPerSecond,
	})
	if err != nil {
		return err
	}

	// TLS: the certificate files must load now (an unreadable, mismatched
	// or expired certificate stops the start); they are read again every
	// tls_reload_interval.
	var grpcTLS, httpTLS, adminTLS, authzTLS *tlsFiles
	if cfg.Listen.GRPCTLS.enabled() {
		if grpcTLS, err = newTLSFiles("grpc", cfg.Listen.GRPCTLS, log, time.Now); err != nil {
			return err
		}
	}
	if cfg.Listen.HTTPTLS.enabled() {
		if httpTLS, err = newTLSFiles("http", cfg.Listen.HTTPTLS, log, time.Now); err != nil {
			return err
		}
	}
	if cfg.Listen.AdminTLS.enabled() {
		if adminTLS, err = newTLSFiles("admin", cfg.Listen.AdminTLS, log, time.Now); err != nil {
			return err
		}
	}
	if cfg.Listen.AuthzHTTPTLS.enabled() {
		if authzTLS, err = newTLSFiles("authz_http", cfg.Listen.AuthzHTTPTLS, log, time.Now); err != nil {
			return err
		}
	}
	var tlsListeners []*tlsFiles
	for _, f := range []*tlsFiles{grpcTLS, httpTLS, adminTLS, authzTLS} {
		if f != nil {
			tlsListeners = append(tlsListeners, f)
		}
	}
	if err := tlsReloadMetrics(reg, tlsListeners...); err != nil {
		return err
	}
	for _, f := range tlsListeners {
		f.reloaded = hooks.tlsReloaded
	}

	var authzHandler http.Handler
	if cfg.Listen.AuthzHTTP != "" {
		if authzHandler, err = authz.HTTPHandler(cfg.authzHTTP); err != nil {
			return fmt.Errorf("authz_http: %w", err)
		}
	}

	grpcLis, httpLis := hooks.grpcListener, hooks.httpListener
	if grpcLis == nil {
		if grpcLis, err = net.Listen("tcp", cfg.Listen.GRPC); err != nil {
			return fmt.Errorf("listen.grpc: %w", err)
		}
	}
	if httpLis == nil {
		if httpLis, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			grpcLis.Close()
			return fmt.Errorf("listen.http: %w", err)
		}
	}

	grpcOpts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(1 << 20),
		// Reuse handler goroutines: a fresh goroutine per Check would grow
		// its stack on every call.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ForceServerCodecV2(extauthz.NewCodec()),
	}
	if grpcTLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(grpcTLS.config("h2"))))
	}
	gs := grpc.NewServer(grpcOpts...)
	authv3.RegisterAuthorizationServer(gs, authz)
	healthpb.RegisterHealthServer(gs, h.GRPC())
	reflection.Register(gs)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /readyz", h)
	// With listen.admin, the admin API and /metrics have a listener of their
	// own, and are not found on this one.
	adminMux := mux
	if cfg.Listen.Admin != "" {
		adminMux = http.NewServeMux()
		adminMux.Handle("GET /readyz", h)
	}
	adminMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	intake.NewAdmin(intake.AdminOptions{
		Token:       cfg.Admin.Token,
		Revoker:     revoker,
		Store:       rv.store,
		Verifier:    verifier,
		Revocations: rv.index,
		Fresh:       authz.Fresh,
		Logger:      log,
	}).Mount(adminMux)
	var background []func(context.Context)
	if cfg.backchannelEnabled() {
		bc, err := intake.NewBackchannel(intake.BackchannelOptions{
			Verifier:      verifier,
			Revoker:       revoker,
			RevokeSubject: cfg.Backchannel.RevokeSubject,
			Registerer:    reg,
			Logger:        log,
		})
		if err != nil {
			return err
		}
		mux.Handle("POST /backchannel-logout", bc)
	}
	if fc := cfg.Webhooks.FusionAuth; fc.Issuer != "" {
		fa, run, err := fusionAuthReceiver(cfg, revoker, verifier, log, reg)
		if err != nil {
			return err
		}
		mux.Handle("POST /webhooks/fusionauth", fa)
		background = append(background, run)
	}
	if hooks.mount != nil {
		hooks.mount(mux)
	}
	var as *http.Server // the admin listener's server, when there is one
	var adminLis net.Listener
	if cfg.Listen.Admin != "" {
		if adminLis, err = net.Listen("tcp", cfg.Listen.Admin); err != nil {
			grpcLis.Close()
			httpLis.Close()
			return fmt.Errorf("listen.admin: %w", err)
		}
		as = httpServer(adminMux, log, adminTLS)
	}
	var zs *http.Server // the HTTP authorization endpoint's, when there is one
	var authzLis net.Listener
	if cfg.Listen.AuthzHTTP != "" {
		if authzLis, err = net.Listen("tcp", cfg.Listen.AuthzHTTP); err != nil {
			grpcLis.Close()
			httpLis.Close()
			if adminLis != nil {
				adminLis.Close()
			}
			return fmt.Errorf("listen.authz_http: %w", err)
		}
		zs = httpServer(authzHandler, log, authzTLS)
		// Every request is the handler's to answer: net/http's own 200 to
		// "OPTIONS *" would let a request on with no identity.
		zs.DisableGeneralOptionsHandler = true
	}
	hs := httpServer(mux, log, httpTLS)

	// Two lifetimes: the servers stop when ctx ends (or one fails); the loops
	// that keep decisions current — JWKS, the revocation feed, signing keys —
	// stop only after the servers have drained, so that a draining replica
	// never decides from a frozen view.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var bg errgroup.Group
	for _, f := range tlsListeners {
		bg.Go(func() error { f.run(bgCtx, cfg.Listen.TLSReloadInterval); return nil })
	}
	bg.Go(func() error { return verifier.Run(bgCtx) })
	bg.Go(func() error { return rv.run(bgCtx) })
	if policyWatch != nil {
		bg.Go(func() error { policyWatch.Run(bgCtx); return nil })
	}
	for _, run := range background {
		bg.Go(func() error { run(bgCtx); return nil })
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(grpcLis); err != nil {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := serveHTTP(hs, httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	for _, l := range []struct {
		name string
		s    *http.Server
		lis  net.Listener
	}{{"admin", as, adminLis}, {"authz_http", zs, authzLis}} {
		if l.s == nil {
			continue
		}
		g.Go(func() error {
			if err := serveHTTP(l.s, l.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s: %w", l.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		shutdown(log, cfg.Shutdown, h, gs, hs, as, zs)
		stopBackground()
		return nil
	})
	addrs := listenAddrs{grpc: grpcLis.Addr().String(), http: httpLis.Addr().String()}
	if adminLis != nil {
		addrs.admin = adminLis.Addr().String()
	}
	if authzLis != nil {
		addrs.authzHTTP = authzLis.Addr().String()
	}
	if hooks.started != nil {
		hooks.started(addrs)
	}
	log.Info("serving", "grpc_addr", addrs.grpc, "http_addr", addrs.http, "admin_addr", addrs.admin,
		"authz_http_addr", addrs.authzHTTP, "authz_http_mode", cfg.authzHTTP.Mode.String(), "issuers", len(cfg.Issuers), "version", version)
	err = g.Wait()
	if bgErr := bg.Wait(); err == nil {
		err = bgErr
	}
	log.Info("stopped")
	return err
}

// httpServer is an HTTP server of tokengate's, with its timeouts and
// limits, serving TLS from t when t is set.
func httpServer(h http.Handler, log *slog.Logger, t *tlsFiles) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if t != nil {
		s.TLSConfig = t.config("h2", "http/1.1")
	}
	return s
}

// serveHTTP serves s on lis, with TLS when s has a TLS configuration.
func serveHTTP(s *http.Server, lis net.Listener) error {
	if s.TLSConfig != nil {
		return s.ServeTLS(lis, "", "")
	}
	return s.Serve(lis)
}

// buildInfo is tokengate_build_info: 1, labelled with the version, the VCS
// commit the binary was built from ("unknown" when not recorded) and the Go
// version.
func buildInfo() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tokengate_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "commit": buildCommit(), "go_version": goVersion()},
	}, func() float64 { return 1 })
}

// shutdown: go NOT_SERVING so health checks steer traffic away, wait the drain
// delay, then stop gracefully within the timeout (forcefully after it).
func shutdown(log *slog.Logger, c ShutdownConfig, h *health.Health, gs *grpc.Server, servers ...*http.Server) {
	log.Info("shutting down", "drain_delay", c.DrainDelay)
	h.Shutdown()
	time.Sleep(c.DrainDelay)
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		log.Warn("grpc drain timed out; closing connections")
		gs.Stop()
	}
	for _, hs := range servers {
		if hs == nil {
			continue
		}
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
	}
}

// fusionAuthReceiver builds the FusionAuth webhook handler and what must run
// beside it: the signing keys' refresh, and the issuer's key refresh after
// a jwt.public-key.update.
func fusionAuthReceiver(cfg settings, revoker *intake.Revoker, verifier *token.Verifier, log *slog.Logger,
	reg prometheus.Registerer) (http.Handler, func(context.Context), error) {
	fc := cfg.Webhooks.FusionAuth
	ic, _ := cfg.issuerRef(fc.Issuer) // validated
	var iss intake.Issuer
	for _, i := range cfg.intakeIssuers {
		if i.Issuer == ic.Issuer {
			iss = i
		}
	}
	opts := intake.FusionAuthOptions{
		Issuer:                            iss,
		TenantIDs:                         fc.TenantIDs,
		BasicUser:                         fc.BasicAuth.Username,
		BasicPassword:                     fc.BasicAuth.Password,
		HeaderName:                        fc.Header.Name,
		HeaderValue:                       fc.Header.Value,
		RevokeSubjectOnRefreshTokenRevoke: fc.RevokeSubjectOnRefreshTokenRevoke,
		RevokeOnPasswordChange:            fc.RevokeOnPasswordChange,
		MaxClockSkew:                      fc.MaxClockSkew,
		Revoker:                           revoker,
		RefreshKeys: func(ctx context.Context, issuer string) error {
			// FusionAuth says a signing key changed: fetch the keys now, and
			// verify every cached token again whatever the fetch found.
			defer verifier.Flush()
			return verifier.Refresh(ctx, issuer)
		},
		Registerer: reg,
		Logger:     log,
	}
	runSignature := func(context.Context) {}
	if sk := fc.SigningKey; sk.HMACSecret != "" || sk.JWKSURI != "" {
		sig, err := token.NewBodySignatureVerifier(token.BodySignatureOptions{
			HMACSecret:        []byte(sk.HMACSecret),
			JWKSURI:           sk.JWKSURI,
			Algorithms:        sk.Algorithms,
			AllowInsecureHTTP: sk.AllowInsecureHTTP,
			KeyID:             sk.KID,
			HTTPClient:        &http.Client{Timeout: cfg.JWKS.Timeout},
			Logger:            log,
		})
		if err != nil {
			return nil, nil, err
		}
		opts.Signature, runSignature = sig, sig.Run
	}
	fa, err := intake.NewFusionAuth(opts)
	if err != nil {
		return nil, nil, err
	}
	run := func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { runSignature(ctx) })
		fa.Run(ctx)
		wg.Wait()
	}
	return fa, run, nil
}
