package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokengate/tokengate/extauthz/token/devissuer"
)

// soakCommand runs the soak: a long mixed load on two replicas while
// revocations stream in, checking that no revoked token is ever allowed, no
// Check fails and memory stays within the configured bounds.
const soakCommand = "soak"

const (
	// soakReplicas is how many replicas share the database.
	soakReplicas = 2
	// cachedTokenBytes is about what one verified token costs the cache
	// (README, Sizing: 1,381 B for a minimal token); a pool larger than
	// cache.max_bytes / cachedTokenBytes does not fit.
	cachedTokenBytes = 1381
	// pollTimeout bounds -bound; pollGrace is how long past the bound a
	// poll of the other replica waits for its denial (every allow it sees
	// past the bound is a violation already) before giving up on it.
	pollTimeout = 5 * time.Second
	pollGrace   = time.Second
	// soakIssuer is the issuer's name in the replicas' configuration, by
	// which the admin API is told whose jti, subject or sid it revokes.
	soakIssuer = "bench"
)

type soakConfig struct {
	tokengate   string
	duration    time.Duration
	checkers    int
	rate        int
	tokens      int
	cacheBytes  int64
	bound       time.Duration
	postgresURL string
	json        bool
}

func (c soakConfig) jsonReport() bool { return c.json }

func parseSoakConfig(args []string, stderr io.Writer) (soakConfig, error) {
	var cfg soakConfig
	fs := flag.NewFlagSet("tokengate-bench "+soakCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.tokengate, "tokengate", "bin/tokengate", "path to a built tokengate binary")
	fs.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long the mixed load runs")
	fs.IntVar(&cfg.checkers, "checkers", 8, "concurrent checkers, each a closed loop of Checks on either replica")
	fs.IntVar(&cfg.rate, "rate", 100, "revocations per second, by jti, subject and session in turn, through either replica")
	fs.IntVar(&cfg.tokens, "tokens", 20_000, "distinct valid tokens in the pool; more than the cache holds")
	fs.Int64Var(&cfg.cacheBytes, "cache-bytes", 8<<20, "each replica's cache.max_bytes")
	fs.DurationVar(&cfg.bound, "bound", time.Second,
		"how long after its 2xx a revocation may still be allowed by the replica that did not take it")
	fs.StringVar(&cfg.postgresURL, "postgres-url", "",
		"the replicas' database, on an existing server (its tables are created if missing); "+
			"default: a throwaway durable cluster, removed at the end")
	fs.BoolVar(&cfg.json, "json", false, "write a JSON report to stdout; the table goes to stderr")
	return cfg, parseFlags(fs, args, func() error { return cfg.validate() })
}

// validate reports every problem at once.
func (c soakConfig) validate() error {
	var p problems
	bad := p.bad
	if c.tokengate == "" {
		bad("tokengate", "required: the path to a built tokengate binary (make bench-soak builds bin/tokengate)")
	}
	if c.duration <= 0 || c.duration > maxPlanned {
		bad("duration", "must be positive and at most %s, within the tokens' lifetime, got %s", maxPlanned, c.duration)
	}
	if c.checkers < 1 || c.checkers > 256 {
		bad("checkers", "must be between 1 and 256, got %d", c.checkers)
	}
	if c.rate < 1 || c.rate > 1000 {
		bad("rate", "must be between 1 and 1000, got %d", c.rate)
	}
	if c.cacheBytes < 1<<20 {
		bad("cache-bytes", "must be at least 1048576 (tokengate's smallest cache.max_bytes), got %d", c.cacheBytes)
	}
	if c.tokens < 1 || c.tokens > 200_000 {
		bad("tokens", "must be between 1 and 200000, got %d", c.tokens)
	} else if holds := c.cacheBytes / cachedTokenBytes; c.cacheBytes >= 1<<20 && int64(c.tokens) <= holds {
		bad("tokens", "%d fit in a cache of %d bytes (~%d tokens of ~%d B): give more, so that the bound is exercised",
			c.tokens, c.cacheBytes, holds, cachedTokenBytes)
	} else if c.duration > 0 && c.rate > 0 {
		if need := int(c.duration.Seconds()*float64(c.rate)) * 2; c.tokens < need {
			bad("tokens", "%d are too few for %d revocations/s over %s: each revocation takes a token, and at least half must stay valid; give at least %d",
				c.tokens, c.rate, c.duration, need)
		}
	}
	if c.bound <= 0 || c.bound > pollTimeout {
		bad("bound", "must be positive and at most %s, got %s", pollTimeout, c.bound)
	}
	return p.err()
}

// benchSoak sets up PostgreSQL, an issuer and two replicas, soaks them and
// tears everything down again. Progress goes to w.
func benchSoak(ctx context.Context, cfg soakConfig, w io.Writer) (rep soakReport, err error) {
	bench, tearDown, err := setUp(ctx, cfg.postgresURL, "", benchAudience, w)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := tearDown(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	adminToken, err := randomHex(24)
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(w, "minting %s\n", plural(cfg.tokens, "token"))
	env, err := mintSoakTokens(bench.iss, cfg.tokens)
	if err != nil {
		return rep, err
	}
	configs := make([]string, soakReplicas)
	for i := range configs {
		configs[i] = replicaConfig(bench.iss.URL, adminToken, bench.db.url, true) + fmt.Sprintf("cache: {max_bytes: %d}\n", cfg.cacheBytes)
	}
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	replicas, err := startReplicas(ctx, cfg.tokengate, dir, configs)
	defer stopReplicas(replicas)
	if err != nil {
		return rep, err
	}
	for _, r := range replicas {
		fmt.Fprintf(w, "%s serving: grpc %s, http %s\n", r.name, r.addrs.GRPC, r.addrs.HTTP)
		env.targets = append(env.targets, soakTarget{replica: r, admin: newAdminClient(r.addrs.HTTP, adminToken),
			pid: r.proc.cmd.Process.Pid, httpAddr: r.addrs.HTTP})
	}
	fmt.Fprintf(w, "soaking for %s: %s, %d revocations/s, cache.max_bytes %d\n",
		cfg.duration, plural(cfg.checkers, "checker"), cfg.rate, cfg.cacheBytes)
	res, err := soak(ctx, cfg, env, w)
	if err != nil {
		return rep, err
	}
	return newSoakReport(cfg, res, bench.db.desc), nil
}

// soakTarget is one replica as the soak sees it.
type soakTarget struct {
	replica  *replica
	admin    *adminClient
	pid      int    // 0: no memory samples
	httpAddr string // its /metrics; "" with pid 0
}

// soakEnv is what a soak runs against: the replicas and the tokens.
type soakEnv struct {
	targets []soakTarget
	pool    []*poolToken
	junk    map[checkClass][]string
}

// mintSoakTokens mints the pool (each token with its own sub and sid, so a
// revocation of any kind revokes exactly one of them) and the junk. The
// issuer signs with ES256, fast to sign, so that a large pool is quick.
func mintSoakTokens(iss *devissuer.Issuer, n int) (*soakEnv, error) {
	realKid := iss.KID()
	if _, err := iss.AddKey("ES256"); err != nil {
		return nil, err
	}
	env := &soakEnv{junk: map[checkClass][]string{}}
	for i := range n {
		sid := fmt.Sprintf("soak-sid-%d", i)
		c := iss.Claims(fmt.Sprintf("soak-user-%d", i), tokenTTL)
		c["sid"] = sid
		raw, err := iss.Sign(c, nil)
		if err != nil {
			return nil, fmt.Errorf("mint token: %w", err)
		}
		env.pool = append(env.pool, &poolToken{raw: raw, jti: c["jti"].(string), sub: c["sub"].(string), sid: sid,
			exp: time.Unix(c["exp"].(int64), 0)})
	}
	// Another issuer of the same name: keys the replicas do not know.
	other, err := devissuer.New(iss.URL, iss.Audience)
	if err != nil {
		return nil, err
	}
	const junkEach = 16
	for i := range junkEach {
		sub := fmt.Sprintf("junk-%d", i)
		wrongSig, err := other.Sign(other.Claims(sub, tokenTTL), map[string]any{"kid": realKid})
		if err != nil {
			return nil, err
		}
		unknownKid, err := other.Mint(sub, tokenTTL, nil)
		if err != nil {
			return nil, err
		}
		c := iss.Claims(sub, tokenTTL)
		c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		expired, err := iss.Sign(c, nil)
		if err != nil {
			return nil, err
		}
		env.junk[classMalformed] = append(env.junk[classMalformed], fmt.Sprintf("not-a-jwt-%d", i))
		env.junk[classWrongSignature] = append(env.junk[classWrongSignature], wrongSig)
		env.junk[classUnknownKid] = append(env.junk[classUnknownKid], unknownKid)
		env.junk[classExpired] = append(env.junk[classExpired], expired)
	}
	return env, nil
}

// soakResult is what a soak observed.
type soakResult struct {
	elapsed     time.Duration
	tally       tally
	examples    []string
	written     [3]int64 // by kind: jti, subject, session
	revokeErrs  int64
	missedTicks int64 // revocations not sent because every revoker was busy
	write       []time.Duration
	propagation []time.Duration // from just before the POST to the other replica's first denial
	memory      []memoryMax
}

// revocationKinds are the kinds the revoker takes in turn.
var revocationKinds = [3]string{"token", "subject", "session"}

// soak runs the checkers, the revoker and the memory sampler side by side
// for cfg.duration.
func soak(ctx context.Context, cfg soakConfig, env *soakEnv, w io.Writer) (soakResult, error) {
	var (
		res     soakResult
		ex      examples
		mu      sync.Mutex   // guards res.tally, res.write, res.propagation
		nextTok atomic.Int64 // pool[order[:nextTok]] are handed to the revoker
	)
	order := rand.Perm(len(env.pool))
	for i, j := range order {
		env.pool[j].kind = i % len(revocationKinds)
	}
	addTally := func(t *tally) {
		mu.Lock()
		res.tally.merge(t)
		mu.Unlock()
	}
	// check asks target `on` about pool token p and judges the answer.
	check := func(ctx context.Context, t *tally, on int, p *poolToken) (string, error) {
		start := time.Now()
		decision, err := env.targets[on].replica.decide(ctx, checkRequest(p.raw))
		if err != nil {
			return "", err
		}
		class, o := judgePool(p, on, start, decision, cfg.bound)
		t.add(class, o)
		if o != outcomeOK {
			ex.add("%s: %s token (%s revocation) answered %s", env.targets[on].replica.name, class,
				revocationKinds[p.kind], decision)
		}
		return decision, nil
	}

	start := time.Now()
	end := start.Add(cfg.duration)
	g, gctx := errgroup.WithContext(ctx)
	for i := range cfg.checkers {
		g.Go(func() error {
			var t tally
			defer addTally(&t)
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for time.Now().Before(end) && gctx.Err() == nil {
				on := rng.IntN(len(env.targets))
				var err error
				switch r := rng.IntN(100); {
				case r < 20: // junk, of the four kinds alike
					c := classMalformed + checkClass(r%4)
					toks := env.junk[c]
					var decision string
					decision, err = env.targets[on].replica.decide(gctx, checkRequest(toks[rng.IntN(len(toks))]))
					if err == nil {
						o := judgeJunk(c, decision)
						t.add(c, o)
						if o != outcomeOK {
							ex.add("%s: %s junk answered %s", env.targets[on].replica.name, c, decision)
						}
					}
				case r < 40 && nextTok.Load() > 0: // a token the revoker took
					_, err = check(gctx, &t, on, env.pool[order[rng.Int64N(min(nextTok.Load(), int64(len(order))))]])
				default:
					_, err = check(gctx, &t, on, env.pool[rng.IntN(len(env.pool))])
				}
				if err != nil && gctx.Err() == nil {
					t.grpcErrors++
					ex.add("%s: check: %v", env.targets[on].replica.name, err)
				}
			}
			return nil
		})
	}

	// The revoker: a ticker at cfg.rate hands out revocations to a few
	// workers; a tick that finds them all busy is counted as missed.
	ticks := make(chan struct{})
	g.Go(func() error {
		defer close(ticks)
		tick := time.NewTicker(time.Second / time.Duration(cfg.rate))
		defer tick.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case now := <-tick.C:
				if !now.Before(end) {
					return nil
				}
				select {
				case ticks <- struct{}{}:
				default:
					atomic.AddInt64(&res.missedTicks, 1)
				}
			}
		}
	})
	var written [3]atomic.Int64
	var revokeErrs atomic.Int64
	for range min(8, cfg.rate) {
		g.Go(func() error {
			var t tally
			defer addTally(&t)
			for range ticks {
				i := nextTok.Add(1) - 1
				if i >= int64(len(order)) {
					continue
				}
				p := env.pool[order[i]]
				kind := p.kind
				via := int(i % int64(len(env.targets)))
				other := (via + 1) % len(env.targets)
				t0 := time.Now()
				p.markSent(t0)
				if err := env.targets[via].admin.post(gctx, revokeBody(kind, p)); err != nil {
					if gctx.Err() == nil {
						revokeErrs.Add(1)
						ex.add("%s: revoke by %s: %v", env.targets[via].replica.name, revocationKinds[kind], err)
					}
					continue
				}
				ack := time.Now()
				p.markAcked(via, ack)
				written[kind].Add(1)
				// Read-your-writes: the replica that answered 2xx denies it now.
				if _, err := check(gctx, &t, via, p); err != nil && gctx.Err() == nil {
					t.grpcErrors++
				}
				first, err := pollRevoked(gctx, &t, check, other, p, ack.Add(cfg.bound+pollGrace))
				if err != nil && gctx.Err() == nil {
					t.grpcErrors++
					ex.add("%s: poll: %v", env.targets[other].replica.name, err)
				}
				mu.Lock()
				res.write = append(res.write, ack.Sub(t0))
				if !first.IsZero() {
					res.propagation = append(res.propagation, first.Sub(t0))
				}
				mu.Unlock()
			}
			return nil
		})
	}

	sampler := newMemorySampler(env.targets, cfg.cacheBytes)
	samplerCtx, stopSampler := context.WithCancel(gctx)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		sampler.run(samplerCtx, time.Second)
	}()
	progress := time.NewTicker(10 * time.Second)
	go func() {
		for {
			select {
			case <-samplerCtx.Done():
				return
			case now := <-progress.C:
				fmt.Fprintf(w, "%s: %d revocations written\n", now.Sub(start).Round(time.Second),
					written[0].Load()+written[1].Load()+written[2].Load())
			}
		}
	}()
	err := g.Wait()
	progress.Stop()
	sampler.sample(context.WithoutCancel(ctx)) // once more, at the end
	stopSampler()
	<-samplerDone
	if err != nil {
		return res, err
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res.elapsed = time.Since(start)
	res.examples = ex.all()
	for k := range written {
		res.written[k] = written[k].Load()
	}
	res.revokeErrs = revokeErrs.Load()
	res.memory = sampler.maxima()
	return res, nil
}

// pollRevoked asks replica `on` about p in a tight loop until it denies it
// as token_revoked, judging every answer, and returns when the denial
// arrived; the zero time if it gave up at deadline.
func pollRevoked(ctx context.Context, t *tally, check func(context.Context, *tally, int, *poolToken) (string, error),
	on int, p *poolToken, deadline time.Time) (time.Time, error) {
	for time.Now().Before(deadline) {
		decision, err := check(ctx, t, on, p)
		if err != nil {
			return time.Time{}, err
		}
		if decision != reasonAllowed {
			return time.Now(), nil
		}
	}
	return time.Time{}, nil
}

// revokeBody is the admin API request revoking p by kind (0 jti, 1 subject,
// 2 session).
func revokeBody(kind int, p *poolToken) map[string]any {
	body := map[string]any{"kind": revocationKinds[kind], "issuer": soakIssuer, "reason": "soak"}
	switch kind {
	case 0:
		body["jti"], body["expires_at"] = p.jti, p.exp
	case 1:
		body["subject"] = p.sub
	case 2:
		body["sid"] = p.sid
	}
	return body
}
