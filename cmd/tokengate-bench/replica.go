package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/extauthz"
)

// The decisions the propagation benchmark expects, by their names in the
// closed set of reasons.
var (
	reasonAllowed = extauthz.ReasonAllowed.String()
	reasonRevoked = extauthz.ReasonTokenRevoked.String()
)

// replica is one `tokengate serve` child and the bench's gRPC connection to
// it.
type replica struct {
	name   string
	proc   *child
	addrs  servingAddrs
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
	// checkEvery paces firstRevoked: the wait between one answer and the
	// next Check (0: none, a tight loop).
	checkEvery time.Duration
}

func (r *replica) dial() error {
	cc, err := grpc.NewClient("passthrough:///"+r.addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%s: dial %s: %w", r.name, r.addrs.GRPC, err)
	}
	r.conn, r.client = cc, authv3.NewAuthorizationClient(cc)
	return nil
}

// close closes the connection and stops the child.
func (r *replica) close() {
	if r.conn != nil {
		r.conn.Close()
	}
	r.proc.stop()
}

// decide calls Check and returns the decision: "allowed" or the denial's
// reason.
func (r *replica) decide(ctx context.Context, req *authv3.CheckRequest) (string, error) {
	resp, err := r.client.Check(ctx, req)
	if err != nil {
		return "", err
	}
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		return reasonAllowed, nil
	}
	if reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); reason != "" {
		return reason, nil
	}
	return fmt.Sprintf("a denial without a reason (code %s)", codes.Code(resp.GetStatus().GetCode())), nil
}

// firstRevoked calls Check with req, checkEvery apart, until the replica
// denies it as token_revoked, and returns when that answer arrived: an upper
// bound of when the replica began to deny, by at most checkEvery and one
// round trip. Tight loops on twenty replicas would take every core of a
// small machine from the replicas they measure.
// A Check cut short by ctx's deadline is the replica's fault: it still
// allowed the token.
func (r *replica) firstRevoked(ctx context.Context, req *authv3.CheckRequest) (time.Time, error) {
	deadline, bounded := ctx.Deadline()
	for {
		decision, err := r.decide(ctx, req)
		at := time.Now()
		switch {
		case err == nil && decision == reasonRevoked:
			return at, nil
		case err == nil && decision == reasonAllowed:
			if r.checkEvery > 0 {
				time.Sleep(r.checkEvery)
			}
			continue
		case err == nil:
			return at, r.proc.explain(fmt.Errorf("denies the revoked token as %s, want %s", decision, reasonRevoked))
		// gRPC may end the call on its own timer, a moment before ctx.Err is set.
		case bounded && !at.Before(deadline), errors.Is(ctx.Err(), context.DeadlineExceeded):
			return at, fmt.Errorf("%s still allows the token %s after the revocation was sent", r.name, revocationTimeout)
		case ctx.Err() != nil:
			return at, ctx.Err() // another replica failed, or the run was interrupted
		default:
			return at, r.proc.explain(fmt.Errorf("check: %w", err))
		}
	}
}

// checkAllowed asks every replica about every token, each of which must be
// allowed. It proves the setup and fills each replica's verified-token cache,
// so the measured Checks take the path a revoked token takes in production.
func checkAllowed(ctx context.Context, replicas []*replica, tokens []string) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range replicas {
		g.Go(func() error {
			for i, tok := range tokens {
				decision, err := r.decide(ctx, checkRequest(tok))
				if err != nil {
					return r.proc.explain(fmt.Errorf("check token %d before revoking it: %w", i+1, err))
				}
				if decision != reasonAllowed {
					return r.proc.explain(fmt.Errorf("token %d, not revoked yet: %s, want %s", i+1, decision, reasonAllowed))
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// sample is one revocation's timings, each from t0, the moment before its
// POST was sent.
type sample struct {
	write  time.Duration   // until the POST's answer was read
	denied []time.Duration // per replica, until its first denial arrived
}

// propagation is the time until every replica denied: the slowest one's.
func (s sample) propagation() time.Duration {
	var slowest time.Duration
	for _, d := range s.denied {
		slowest = max(slowest, d)
	}
	return slowest
}

// measurePropagation revokes the tokens one after another through
// replicas[0] and times each, reporting progress to w. With spread, each
// revocation waits a random time below it first: replicas that poll would
// otherwise see every write just after their last poll, each the one
// before it having ended on a poll.
func measurePropagation(ctx context.Context, replicas []*replica, admin *adminClient, tokens []string, spread time.Duration, w io.Writer) ([]sample, error) {
	samples := make([]sample, 0, len(tokens))
	every := max(len(tokens)/10, 1)
	for i, tok := range tokens {
		if spread > 0 {
			time.Sleep(rand.N(spread))
		}
		s, err := revokeOnce(ctx, replicas, admin, tok)
		if err != nil {
			return nil, fmt.Errorf("revocation %d/%d: %w", i+1, len(tokens), err)
		}
		samples = append(samples, s)
		if (i+1)%every == 0 || i+1 == len(tokens) {
			fmt.Fprintf(w, "revocation %d/%d: write %s, every replica denies after %s\n",
				i+1, len(tokens), fmtLatency(s.write), fmtLatency(s.propagation()))
		}
	}
	return samples, nil
}

// revokeOnce revokes tok through replicas[0], then polls every replica side
// by side until each denies it, all within revocationTimeout.
func revokeOnce(ctx context.Context, replicas []*replica, admin *adminClient, tok string) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, revocationTimeout)
	defer cancel()
	req := checkRequest(tok)
	t0 := time.Now()
	if err := admin.revoke(ctx, tok); err != nil {
		return sample{}, replicas[0].proc.explain(err)
	}
	s := sample{write: time.Since(t0), denied: make([]time.Duration, len(replicas))}
	g, gctx := errgroup.WithContext(ctx)
	for i, r := range replicas {
		g.Go(func() error {
			at, err := r.firstRevoked(gctx, req)
			s.denied[i] = at.Sub(t0)
			return err
		})
	}
	return s, g.Wait()
}

// adminClient revokes tokens through one replica's admin API, over one
// kept-alive connection.
type adminClient struct {
	url   string // of POST /v1/revocations
	token string
	http  *http.Client
}

func newAdminClient(httpAddr, token string) *adminClient {
	return &adminClient{url: "http://" + httpAddr + "/v1/revocations", token: token, http: &http.Client{}}
}

// revoke revokes tok by value and expects 201 Created: a new revocation.
func (a *adminClient) revoke(ctx context.Context, tok string) error {
	return a.post(ctx, map[string]string{"token": tok})
}

// post sends one revocation request (a RevokeRequest as JSON) and expects
// 201 Created: a new revocation.
func (a *adminClient) post(ctx context.Context, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST /v1/revocations: %w", err)
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return fmt.Errorf("POST /v1/revocations: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /v1/revocations: %s, want 201 Created: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
