package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
	"github.com/tokengate/tokengate/storage/bolt"
	"github.com/tokengate/tokengate/storage/postgres"
)

// exitCode is an error that asks for an exit status other than 1. With a
// nil err the command has said all there is to say (check's deny).
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCode) Unwrap() error { return e.err }

// usageError is a usage or configuration problem of check: exit status 2.
func usageError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &exitCode{code: 2, err: err}
}

// checkResult is what tokengate check prints with --json. Its fields are
// documented in the README ("tokengate check").
type checkResult struct {
	// Decision is allow or deny.
	Decision string `json:"decision"`
	// Status is the HTTP status the client would get: 200 (the request goes
	// on), 400, 401, 403, or 503 (no decision: the issuer's keys could not
	// be fetched).
	Status int `json:"status"`
	// Reason is the answer's reason, as in the README's "Answers and
	// reasons": allowed, token_missing, token_expired, token_revoked, …,
	// forbidden, insufficient_scope, route_unmatched, policy_unknown,
	// path_invalid, anonymous, logout_revoked; keys_unavailable or
	// revocations_stale (the store could not be read) when no decision could
	// be made.
	Reason     string           `json:"reason"`
	Request    checkRequest     `json:"request"`
	Token      *checkToken      `json:"token"`      // null: no --token
	Revocation *checkRevocation `json:"revocation"` // null: no valid token to look up
	Policy     *checkPolicy     `json:"policy"`     // null: no route policy configured
	// LogoutRoute: the request is on a logout route, where a valid token
	// would be revoked (and a revoked one let on to the IdP without
	// identity) whatever the rule requires.
	LogoutRoute bool `json:"logout_route,omitempty"`
}

type checkRequest struct {
	Method string `json:"method"`
	Host   string `json:"host"`
	Path   string `json:"path"`
	Policy string `json:"policy"` // as given; "" is default
}

// checkToken describes the token, never its value.
type checkToken struct {
	Valid bool `json:"valid"`
	// Error says why it is not valid ("" when it is); Reason is its reason.
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Issuer is the configured issuer's name; Iss the token's iss.
	Issuer string `json:"issuer,omitempty"`
	Iss    string `json:"iss,omitempty"`
	// KID and Alg are from the JWS header: the key that signed it.
	KID       string     `json:"kid,omitempty"`
	Alg       string     `json:"alg,omitempty"`
	Subject   string     `json:"subject,omitempty"`
	Audiences []string   `json:"audiences,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	Roles     []string   `json:"roles,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// checkRevocation says whether the store was read and what it says.
type checkRevocation struct {
	Checked bool `json:"checked"` // false: the store could not be read (or there is none)
	// Absent: there is no embedded store yet, so nothing is revoked.
	Absent  bool   `json:"absent,omitempty"`
	Revoked bool   `json:"revoked"`
	Store   string `json:"store"`           // postgres or embedded
	Error   string `json:"error,omitempty"` // why it could not be read
}

// checkPolicy is the route policy's part: the rules tried, in order.
type checkPolicy struct {
	Name string `json:"name"`
	// Path is the path as the rules see it (normalised).
	Path   string      `json:"path,omitempty"`
	Rule   string      `json:"rule,omitempty"`   // the deciding rule; "" when none matched
	Access string      `json:"access,omitempty"` // what the route asks: public, authenticated or deny
	Steps  []checkStep `json:"steps"`
	// Failed names the requirement not met (issuers, audiences, scopes,
	// roles, when); Scope the scopes required; Error a when's evaluation
	// error.
	Failed string `json:"failed,omitempty"`
	Scope  string `json:"scope,omitempty"`
	Error  string `json:"error,omitempty"`
}

// checkStep is one rule tried.
type checkStep struct {
	Rule    string `json:"rule"`
	Shadow  bool   `json:"shadow"`
	Matched bool   `json:"matched"`
	// Mismatch is what did not match: host, method or path.
	Mismatch string `json:"mismatch,omitempty"`
	// Outcome (when matched): allow, unauthenticated, forbidden,
	// insufficient_scope; for a shadow rule, what it would have decided.
	Outcome string `json:"outcome,omitempty"`
	Failed  string `json:"failed,omitempty"`
	Error   string `json:"error,omitempty"`
}

func runCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return check(ctx, args, cliIO{getenv: getenv, stdin: os.Stdin, stdout: stdout, stderr: stderr})
}

// check decides one request offline, as the server would, and explains
// each step. It exits 0 on allow, 1 on deny, 2 on a usage or configuration
// problem.
func check(ctx context.Context, args []string, e cliIO) error {
	fs := newFlagSet("check", "--config FILE --token T|- --method GET --path /x [--host H] [--policy NAME] [--json]",
		"Decides one request offline against the configuration, the issuers' live JWKS and, when it\n"+
			"can be read, the revocation store, and says why: which issuer and key verified the token,\n"+
			"whether it is revoked, which rules were tried, which matched and which requirement failed.\n"+
			"Exits 0 on allow, 1 on deny, 2 on a usage or configuration problem. The token is never printed;\n"+
			"pass it as \"-\" on stdin to keep it out of ps and shell history.")
	path := fs.String("config", e.getenv("TOKENGATE_CONFIG"), "configuration `FILE` (YAML); env TOKENGATE_CONFIG")
	raw := fs.String("token", "", "the token, a `JWT` (\"-\" reads it from stdin; a \"Bearer \" prefix is dropped); none: a request without a token")
	method := fs.String("method", "GET", "the request's `METHOD`")
	reqPath := fs.String("path", "", "the request's `PATH`, as sent (with its query)")
	host := fs.String("host", "", "the request's `HOST` (:authority)")
	name := fs.String("policy", "", "the policy `NAME` Envoy's context_extensions give (default: default)")
	var headers headerFlag
	fs.Var(&headers, "header", "a request header `NAME: VALUE`, for a when reading request.headers (repeatable)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on fetching the keys and reading the store")
	if err := parseFlags(fs, args, e.stdout, e.stderr); err != nil {
		return usageError(err)
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fmt.Errorf("check: unexpected argument %q", fs.Arg(0)))
	case *path == "":
		return usageError(errors.New("check: --config is required"))
	case *reqPath == "":
		return usageError(errors.New("check: --path is required"))
	}
	cfg, err := loadConfigFile(*path, e.getenv)
	if err != nil {
		return usageError(err)
	}
	var tok string
	if *raw != "" {
		if tok, err = readToken(*raw, e.stdin); err != nil {
			return usageError(fmt.Errorf("check: %w", err))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req := &policy.Request{Host: *host, Path: *reqPath, Method: strings.ToUpper(*method), Headers: headers.m}
	res, err := decide(ctx, cfg, tok, *name, req)
	if err != nil {
		return usageError(err)
	}
	if *asJSON {
		if err := writeIndented(e.stdout, res); err != nil {
			return err
		}
	} else if err := res.print(e.stdout); err != nil {
		return err
	}
	if res.Decision != "allow" {
		return &exitCode{code: 1}
	}
	return nil
}

// headerFlag collects --header NAME: VALUE, names in lower case.
type headerFlag struct{ m map[string]string }

func (h *headerFlag) String() string { return "" }

func (h *headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want NAME: VALUE, got %q", s)
	}
	if h.m == nil {
		h.m = map[string]string{}
	}
	h.m[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	return nil
}

// decide is check's decision, as the server makes it: the token first (a
// present but invalid token is a 401 wherever the route is not public), then
// the route.
func decide(ctx context.Context, cfg settings, tok, name string, req *policy.Request) (*checkResult, error) {
	res := &checkResult{Request: checkRequest{Method: req.Method, Host: req.Host, Path: req.Path, Policy: name}}
	var (
		id     *token.Identity
		claims map[string]any
		reason string // the token's reason when it is present but unusable
	)
	if tok != "" {
		ct := &checkToken{}
		res.Token = ct
		header, payload := unverifiedParts(tok)
		ct.KID, _ = header["kid"].(string)
		ct.Alg, _ = header["alg"].(string)
		ct.Iss, _ = payload["iss"].(string)
		verifier, err := token.New(token.Options{
			Issuers:       cfg.issuers,
			MaxTokenBytes: cfg.Tokens.MaxBytes,
			HTTPClient:    &http.Client{Timeout: cfg.JWKS.Timeout},
			Logger:        slog.New(slog.DiscardHandler),
		})
		if err != nil {
			return nil, err
		}
		for _, ic := range cfg.Issuers {
			if ic.Issuer == ct.Iss {
				ct.Issuer = ic.Name
				if err := verifier.Refresh(ctx, ic.Name); err != nil {
					ct.Error = fmt.Sprintf("the keys of issuer %s could not be fetched: %v", ic.Name, err)
				}
			}
		}
		id, claims, err = verifier.Introspect(ctx, tok)
		switch {
		case errors.Is(err, token.ErrKeysUnavailable):
			ct.Reason = "keys_unavailable"
			if ct.Error == "" {
				ct.Error = err.Error()
			}
			reason = ct.Reason
		case err != nil:
			ct.Error, ct.Reason = err.Error(), tokenReason(err)
			reason = ct.Reason
		default:
			ct.Valid, ct.Error = true, ""
			ct.Issuer, ct.Iss, ct.Subject, ct.Audiences = id.IssuerName, id.Issuer, id.Subject, id.Audience
			exp := id.ExpiresAt.UTC()
			ct.ExpiresAt = &exp
			res.Revocation = lookUpRevocation(ctx, cfg, id)
			switch rv := res.Revocation; {
			case rv.Revoked:
				reason = "token_revoked"
			case !rv.Checked && !rv.Absent:
				// As a replica whose revocations are stale: the token cannot
				// be vouched for.
				reason = "revocations_stale"
			}
		}
	}
	usable := id != nil && reason == ""
	if cfg.policy == nil {
		// No route policy: a valid, unrevoked token is all it takes.
		onLogout := logoutRoute(cfg, req, usable, reason)
		res.LogoutRoute = onLogout
		switch {
		case unknowable(reason):
			res.Decision, res.Status, res.Reason = "deny", http.StatusServiceUnavailable, reason
		case onLogout && reason == "token_revoked":
			res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "logout_revoked"
		case usable:
			res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "allowed"
		case tok == "":
			res.Decision, res.Status, res.Reason = "deny", http.StatusUnauthorized, "token_missing"
		default:
			res.Decision, res.Status, res.Reason = "deny", http.StatusUnauthorized, reason
		}
		return res, nil
	}
	var sub *policy.Subject
	if usable {
		sub = policy.NewSubjects(cfg.policy.base.Issuers, true).Make(id.IssuerName, id.Audience, claims)
		res.Token.Scopes, res.Token.Roles = sub.Scopes, sub.Roles
	}
	pname := name
	if pname == "" {
		pname = "default"
	}
	cp := &checkPolicy{Name: pname, Steps: []checkStep{}}
	res.Policy = cp
	steps, rt, d := cfg.policy.set.Trace(name, req, sub)
	switch rt.Status {
	case policy.RoutePolicyUnknown:
		res.Decision, res.Status, res.Reason = "deny", http.StatusForbidden, "policy_unknown"
		return res, nil
	case policy.RoutePathInvalid:
		res.Decision, res.Status, res.Reason = "deny", http.StatusBadRequest, "path_invalid"
		return res, nil
	}
	for _, s := range steps {
		st := checkStep{Rule: s.Rule, Shadow: s.Shadow, Matched: s.Matched, Mismatch: s.Mismatch}
		if s.Matched {
			st.Outcome, st.Failed = outcomeName(s.Decision.Outcome), s.Decision.Failed
			if s.Decision.Err != nil {
				st.Error = s.Decision.Err.Error()
			}
		}
		cp.Steps = append(cp.Steps, st)
	}
	cp.Path, cp.Access = rt.Path(), rt.Access().String()
	rule := rt.Rule()
	if rule != nil {
		cp.Rule = rule.Name()
	}
	cp.Failed, cp.Scope = d.Failed, d.Scope
	if d.Err != nil {
		cp.Error = d.Err.Error()
	}
	// As the server: a deny rule refuses whatever the token; a public route
	// ignores a missing, invalid or revoked token (unless the rule rejects
	// invalid ones) and lets the request on without identity; everywhere
	// else an unusable token is answered first: authentication comes before
	// authorization.
	public := rt.Access() == policy.AccessPublic
	onLogout := logoutRoute(cfg, req, usable, reason)
	res.LogoutRoute = onLogout
	switch {
	case rt.Access() == policy.AccessDeny:
	case onLogout && reason == "token_revoked":
		res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "logout_revoked"
		return res, nil
	case onLogout && unknowable(reason):
		// A logout that cannot be made to hold is not let on, even on a
		// public route.
		res.Decision, res.Status, res.Reason = "deny", http.StatusServiceUnavailable, reason
		return res, nil
	case !usable && public && (tok == "" || !rule.RejectInvalid()):
		res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "anonymous"
		return res, nil
	case tok != "" && !usable && unknowable(reason):
		res.Decision, res.Status, res.Reason = "deny", http.StatusServiceUnavailable, reason
		return res, nil
	case onLogout && usable:
		// A logout route logs out any valid token, whatever the rule
		// requires.
		res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "allowed"
		return res, nil
	case tok != "" && !usable:
		res.Decision, res.Status, res.Reason = "deny", http.StatusUnauthorized, reason
		return res, nil
	}
	switch d.Outcome {
	case policy.OutcomeAllow:
		res.Decision, res.Status, res.Reason = "allow", http.StatusOK, "allowed"
	case policy.OutcomeUnauthenticated:
		res.Decision, res.Status, res.Reason = "deny", http.StatusUnauthorized, "token_missing"
	case policy.OutcomeInsufficientScope:
		res.Decision, res.Status, res.Reason = "deny", http.StatusForbidden, "insufficient_scope"
	case policy.OutcomeUnmatched:
		res.Decision, res.Status, res.Reason = "deny", http.StatusForbidden, "route_unmatched"
	default:
		res.Decision, res.Status, res.Reason = "deny", http.StatusForbidden, "forbidden"
	}
	return res, nil
}

// logoutRoute reports whether the request is on a logout route with a
// token the server would act on there: valid, or revoked.
// A token whose keys or revocations could not be read counts too: the
// server does not let a logout it cannot make hold go on.
func logoutRoute(cfg settings, req *policy.Request, usable bool, reason string) bool {
	if !usable && reason != "token_revoked" && !unknowable(reason) {
		return false
	}
	_, on := cfg.logoutRoutes.Match(req.Host, req.Path, req.Method)
	return on
}

// unknowable: the token's reason says it could not be judged (its
// issuer's keys, or the revocations, could not be read).
func unknowable(reason string) bool {
	return reason == "keys_unavailable" || reason == "revocations_stale"
}

// unverifiedParts decodes a JWS's header and payload without verifying
// them: only to say which issuer and key the token names.
func unverifiedParts(tok string) (header, payload map[string]any) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil
	}
	decode := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil
		}
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			return nil
		}
		return m
	}
	return decode(parts[0]), decode(parts[1])
}

// tokenReason is the reason the server answers a verifier's error with.
func tokenReason(err error) string {
	r, _ := extauthz.ReasonFor(err)
	return r.String()
}

func outcomeName(o policy.Outcome) string {
	switch o {
	case policy.OutcomeAllow:
		return "allow"
	case policy.OutcomeUnauthenticated:
		return "unauthenticated"
	case policy.OutcomeInsufficientScope:
		return "insufficient_scope"
	case policy.OutcomeUnmatched:
		return "unmatched"
	}
	return "forbidden"
}

// lookUpRevocation reads the store's live revocations into an index, as a
// replica does at start, and asks it about id. A store that cannot be read
// (a running tokengate holds the embedded store's lock; PostgreSQL is not
// reachable) is said so, and the decision goes on without it.
func lookUpRevocation(ctx context.Context, cfg settings, id *token.Identity) *checkRevocation {
	out := &checkRevocation{Store: "embedded"}
	var store storage.Store
	if cfg.Storage.PostgresURL != "" {
		out.Store = "postgres"
		pg, err := postgres.Open(cfg.Storage.PostgresURL, postgres.Options{MaxConns: 2})
		if err != nil {
			out.Error = err.Error()
			return out
		}
		defer pg.Close()
		if err := pg.CheckSchema(ctx); err != nil {
			out.Error = err.Error()
			return out
		}
		store = pg
	} else {
		// Only an existing store: opening creates the file otherwise.
		if _, err := os.Stat(cfg.Storage.Path); errors.Is(err, fs.ErrNotExist) {
			out.Absent = true
			out.Error = fmt.Sprintf("no embedded store at %s: nothing is revoked", cfg.Storage.Path)
			return out
		} else if err != nil {
			out.Error = err.Error()
			return out
		}
		b, err := bolt.Open(cfg.Storage.Path, bolt.Options{Timeout: time.Second})
		if err != nil {
			out.Error = fmt.Sprintf("%s: %v (a running tokengate holds the embedded store: ask it, with tokengate introspect)", cfg.Storage.Path, err)
			return out
		}
		defer b.Close()
		store = b
	}
	idx := storage.NewIndex()
	now := time.Now()
	if err := idx.Load(ctx, store, now); err != nil {
		out.Error = err.Error()
		return out
	}
	out.Checked = true
	out.Revoked = idx.Revoked(idx.Keys(id.Issuer, id.TokenID, id.SessionID, id.Subject, id.Audience), id.IssuedAt, now)
	return out
}

// print writes the result for a person.
func (r *checkResult) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	host := r.Request.Host
	if host == "" {
		host = "(any host)"
	}
	fmt.Fprintf(tw, "request:\t%s %s %s\n", r.Request.Method, host, r.Request.Path)
	switch t := r.Token; {
	case t == nil:
		fmt.Fprintf(tw, "token:\tnone\n")
	case t.Valid:
		fmt.Fprintf(tw, "token:\tvalid: issuer %s (iss %s), key %s (%s), subject %s, expires %s\n",
			t.Issuer, t.Iss, quoteOr(t.KID, "without kid"), dash(t.Alg), quoteOr(t.Subject, "none"), formatTime(*t.ExpiresAt))
		if r.Policy != nil {
			fmt.Fprintf(tw, "\tscopes %s; roles %s\n", listOr(t.Scopes), listOr(t.Roles))
		}
	default:
		who := "iss " + quoteOr(t.Iss, "none")
		if t.Issuer != "" {
			who = "issuer " + t.Issuer + " (" + who + ")"
		}
		fmt.Fprintf(tw, "token:\tinvalid (%s): %s; %s, key %s (%s)\n", t.Reason, t.Error, who, quoteOr(t.KID, "without kid"), dash(t.Alg))
	}
	if rv := r.Revocation; rv != nil {
		switch {
		case rv.Absent:
			fmt.Fprintf(tw, "revocation:\tnot revoked: %s\n", rv.Error)
		case !rv.Checked:
			fmt.Fprintf(tw, "revocation:\tunknown: the %s store could not be read (%s); a replica that cannot read it does not vouch for the token either\n", rv.Store, rv.Error)
		case rv.Revoked:
			fmt.Fprintf(tw, "revocation:\tREVOKED (%s store)\n", rv.Store)
		default:
			fmt.Fprintf(tw, "revocation:\tnot revoked (%s store)\n", rv.Store)
		}
	}
	if r.LogoutRoute {
		fmt.Fprintf(tw, "logout route:\tthe token would be revoked and the request let on, whatever the rule requires\n")
	}
	if p := r.Policy; p == nil {
		fmt.Fprintf(tw, "policy:\tnone configured: a valid, unrevoked token is all it takes\n")
	} else {
		fmt.Fprintf(tw, "policy:\t%s, path %s\n", p.Name, dash(p.Path))
		for i, s := range p.Steps {
			what := "no match (" + s.Mismatch + ")"
			if s.Matched {
				what = "matched: " + s.Outcome
				if s.Failed != "" {
					what += " (" + s.Failed + " not met)"
				}
				if s.Error != "" {
					what += ": " + s.Error
				}
				if s.Shadow {
					what = "shadow, " + what + " (not deciding)"
				}
			}
			fmt.Fprintf(tw, "\t%d. %s\t%s\n", i+1, quoteOr(s.Rule, "(unnamed)"), what)
		}
		if p.Rule == "" && r.Reason != "policy_unknown" && r.Reason != "path_invalid" {
			fmt.Fprintf(tw, "\tno rule matched: policy.unmatched gives %s\n", p.Access)
		}
	}
	by := ""
	if r.Policy != nil && r.Policy.Rule != "" {
		by = fmt.Sprintf(" by rule %q", r.Policy.Rule)
	}
	fmt.Fprintf(tw, "decision:\t%s (%d %s)%s\n", strings.ToUpper(r.Decision), r.Status, r.Reason, by)
	return tw.Flush()
}

func quoteOr(s, none string) string {
	if s == "" {
		return none
	}
	return fmt.Sprintf("%q", s)
}

func listOr(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, " ")
}
