package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// adminClient calls the admin API for one command.
type adminClient struct {
	op     string // the command, prefixed to its errors
	base   string
	token  string
	json   bool
	http   *http.Client
	secret []string // shortened wherever they could appear in an error
}

// cliFlags returns a flag set with the common flags, and a function that
// builds the client from them once the flags are parsed.
func cliFlags(e cliIO, op, synopsis string) (*flag.FlagSet, func() (*adminClient, error)) {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	def := defaultServer
	if s := e.getenv("TOKENGATE_SERVER"); s != "" {
		def = s
	}
	server := fs.String("server", def, "admin API base `URL`; env TOKENGATE_SERVER")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each request")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tokengate %s %s\n\nFlags:\n", op, synopsis)
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nThe admin token is read from TOKENGATE_ADMIN_TOKEN (never a flag: flags show in ps and shell history).")
	}
	fs.SetOutput(e.stderr)
	return fs, func() (*adminClient, error) {
		u, err := url.Parse(*server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: --server %q: want http(s)://HOST:PORT", op, *server)
		}
		if u.User != nil {
			return nil, fmt.Errorf("%s: --server must not hold credentials; set TOKENGATE_ADMIN_TOKEN", op)
		}
		if *timeout <= 0 {
			return nil, fmt.Errorf("%s: --timeout must be positive", op)
		}
		tok := strings.TrimSpace(e.getenv("TOKENGATE_ADMIN_TOKEN"))
		if tok == "" {
			return nil, fmt.Errorf("%s: TOKENGATE_ADMIN_TOKEN is not set: export the server's admin.token (tokengate dev prints it as ADMIN=…)", op)
		}
		return &adminClient{op: op, base: strings.TrimRight(u.String(), "/"), token: tok, json: *asJSON,
			http: &http.Client{Timeout: *timeout}, secret: []string{tok}}, nil
	}
}

// parseArgs parses flags wherever they are among the arguments (so that
// "unrevoke 42 --json" works) and wants exactly len(names) positional
// arguments; "--" ends the flags. -h prints the usage on stdout (parseFlags).
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args, stdout, fs.Output()); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	switch {
	case len(pos) > len(names):
		fs.Usage()
		return nil, fmt.Errorf("%s: unexpected argument %q", fs.Name(), shorten(pos[len(names)]))
	case len(pos) < len(names):
		fs.Usage()
		return nil, fmt.Errorf("%s: missing %s", fs.Name(), names[len(pos)])
	}
	return pos, nil
}

// timeFlag defines an optional RFC 3339 time flag.
func timeFlag(fs *flag.FlagSet, p **time.Time, name, usage string) {
	fs.Func(name, usage, func(s string) error {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return errors.New("want RFC 3339, e.g. 2026-11-25T12:00:00Z")
		}
		*p = &t
		return nil
	})
}

// do sends one request. A non-2xx answer is an *apiError.
func (c *adminClient) do(ctx context.Context, method, path, contentType string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", c.op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: no answer from tokengate at %s: %w", c.op, c.base, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: reading the answer: %w", c.op, err)
	}
	if len(answer) > maxAnswer {
		return 0, nil, fmt.Errorf("%s: answer larger than %d bytes", c.op, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &apiError{Op: c.op, Status: resp.StatusCode}
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(answer, &body) == nil {
			ae.Code, ae.Description = c.redact(body.Error), c.redact(body.Description)
		}
		return resp.StatusCode, answer, ae
	}
	return resp.StatusCode, answer, nil
}

func (c *adminClient) decode(answer []byte, v any) error {
	if err := json.Unmarshal(answer, v); err != nil {
		return fmt.Errorf("%s: %s did not answer as tokengate does: %w", c.op, c.base, err)
	}
	return nil
}

// redact shortens the secrets this command sent wherever they appear in s.
func (c *adminClient) redact(s string) string {
	for _, sec := range c.secret {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, shorten(sec))
		}
	}
	return s
}

// apiError is a non-2xx answer of the admin API.
type apiError struct {
	Op          string
	Status      int
	Code        string // the API's "error"
	Description string // its "error_description"
}

func (e *apiError) Error() string {
	code := e.Code
	if code == "" {
		code = strings.ToLower(http.StatusText(e.Status))
	}
	msg := fmt.Sprintf("%s: %d %s", e.Op, e.Status, code)
	if e.Description != "" {
		msg += ": " + e.Description
	}
	switch {
	case e.Status == http.StatusUnauthorized:
		msg += " (does TOKENGATE_ADMIN_TOKEN match the server's admin.token?)"
	case e.Status == http.StatusNotFound && e.Code == "":
		msg += " (is --server a tokengate with the admin API on, i.e. admin.token set?)"
	}
	return msg
}

// readToken returns the token given as an argument, or read from stdin for
// "-". A leading "Bearer " is dropped, as pasted from a header.
func readToken(arg string, stdin io.Reader) (string, error) {
	if arg == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxStdinToken))
		if err != nil {
			return "", fmt.Errorf("reading the token from stdin: %w", err)
		}
		arg = string(b)
	}
	tok := strings.TrimSpace(arg)
	if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimSpace(rest)
	}
	if tok == "" {
		return "", errors.New("empty token")
	}
	return tok, nil
}

// shorten keeps a secret recognisable without printing it.
func shorten(s string) string {
	if r := []rune(s); len(r) > 10 {
		return string(r[:10]) + "…"
	}
	return s
}
