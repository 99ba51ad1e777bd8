package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokengate/tokengate/extauthz/intake"
)

const cliUsage = `The admin commands talk to a running tokengate's admin API.

Usage:
  tokengate revoke token --issuer ISS --jti JTI --expires-at TIME [--reason R]
  tokengate revoke token --token JWT|-     revoke a token by value ("-" reads it from stdin)
  tokengate revoke session --issuer ISS --sid SID [--reason R]
  tokengate revoke subject --issuer ISS --subject SUB [--audience AUD] [--revoked-before TIME] [--reason R]
  tokengate revoke cutoff --issuer ISS [--audience AUD] [--revoked-before TIME] [--reason R]
  tokengate revocations list [--issuer ISS] [--kind KIND] [--subject SUB] [--limit N] [--cursor C] [--all]
  tokengate unrevoke ID [--source admin|all|CLASS]
  tokengate introspect TOKEN|-             is this token active? ("-" reads it from stdin)

Every command takes --server URL (default $TOKENGATE_SERVER, else
http://127.0.0.1:8181), --json (print the API's JSON) and --timeout (10s).

The admin token is read from TOKENGATE_ADMIN_TOKEN only, never from a flag:
flags end up in shell history and in ps. For the same reason, pass a JWT as
"-" and pipe it in rather than putting it on the command line.

ISS is an issuer's iss (issuers[].issuer) or its name (issuers[].name).
unrevoke removes only what operators put into the entry (--source admin);
what a source class (fusionauth, logout-route, backchannel-logout) put there
stays until --source names it, or --source all removes everything.

TIME is RFC 3339, e.g. 2026-11-25T12:00:00Z. introspect succeeds whether the
token is active or not; scripts should read "active" from its --json output.
`

const (
	defaultServer = "http://127.0.0.1:8181"
	maxAnswer     = 32 << 20 // bytes of one admin API answer
	maxStdinToken = 64 << 10
)

// cliIO is what an admin command reads and writes.
type cliIO struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// runCLI runs the admin commands: revoke, revocations, unrevoke,
// introspect. A token given as "-" is read from the process's stdin.
func runCLI(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return cli(ctx, cmd, args, cliIO{getenv: getenv, stdin: os.Stdin, stdout: stdout, stderr: stderr})
}

func cli(ctx context.Context, cmd string, args []string, e cliIO) error {
	err := cliCommand(ctx, cmd, args, e)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h: the usage is on stdout
	}
	return err
}

func cliCommand(ctx context.Context, cmd string, args []string, e cliIO) error {
	switch cmd {
	case "revoke":
		if len(args) > 0 {
			switch args[0] {
			case "token", "session", "subject", "cutoff":
				return cliRevoke(ctx, args[0], args[1:], e)
			}
		}
	case "revocations":
		if len(args) > 0 && args[0] == "list" {
			return cliList(ctx, args[1:], e)
		}
	case "unrevoke":
		return cliUnrevoke(ctx, args, e)
	case "introspect":
		return cliIntrospect(ctx, args, e)
	}
	if len(args) > 0 && slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]) {
		fmt.Fprint(e.stdout, cliUsage)
		return nil
	}
	fmt.Fprint(e.stderr, cliUsage)
	if len(args) == 0 {
		return fmt.Errorf("%s: a subcommand is required", cmd)
	}
	return fmt.Errorf("%s: unknown subcommand %q", cmd, args[0])
}

func cliRevoke(ctx context.Context, kind string, args []string, e cliIO) error {
	synopsis := map[string]string{
		"token":   "--issuer ISS --jti JTI --expires-at TIME | --token JWT|-",
		"session": "--issuer ISS --sid SID",
		"subject": "--issuer ISS --subject SUB [--audience AUD] [--revoked-before TIME]",
		"cutoff":  "--issuer ISS [--audience AUD] [--revoked-before TIME]",
	}[kind] + " [--reason R]"
	fs, connect := cliFlags(e, "revoke "+kind, synopsis)
	req := intake.RevokeRequest{Kind: kind}
	var raw string
	fs.StringVar(&req.Issuer, "issuer", "", "the issuer: its iss or its name in the server's configuration (`ISS`)")
	fs.StringVar(&req.Reason, "reason", "", "why; kept with the entry")
	required := []string{"issuer"}
	switch kind {
	case "token":
		fs.StringVar(&req.JTI, "jti", "", "the token's `JTI`")
		timeFlag(fs, &req.ExpiresAt, "expires-at", "the token's exp, a `TIME` (RFC 3339)")
		fs.StringVar(&raw, "token", "", "the token itself, a `JWT` that must verify (\"-\" reads it from stdin, out of ps)")
		required = append(required, "jti", "expires-at")
	case "session":
		fs.StringVar(&req.SID, "sid", "", "the session id (`SID`)")
		required = append(required, "sid")
	case "subject":
		fs.StringVar(&req.Subject, "subject", "", "the subject (`SUB`)")
		required = append(required, "subject")
	}
	if kind == "subject" || kind == "cutoff" {
		fs.StringVar(&req.Audience, "audience", "", "only tokens for this audience `AUD` (default: all)")
		timeFlag(fs, &req.RevokedBefore, "revoked-before", "revoke tokens issued before this `TIME` (RFC 3339; default: now)")
	}
	if _, err := parseArgs(fs, args, e.stdout); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["token"] {
		if set["issuer"] || set["jti"] || set["expires-at"] {
			return errors.New("revoke token: give --token, or --issuer, --jti and --expires-at, not both")
		}
		required = nil
	}
	var missing []string
	for _, name := range required {
		if !set[name] {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("revoke %s: missing %s", kind, strings.Join(missing, ", "))
	}
	c, err := connect()
	if err != nil {
		return err
	}
	if set["token"] {
		if req.Token, err = readToken(raw, e.stdin); err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		req.Kind = ""
		c.secret = append(c.secret, req.Token)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	status, answer, err := c.do(ctx, "POST", "/v1/revocations", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, answer)
	}
	var ent intake.Entry
	if err := c.decode(answer, &ent); err != nil {
		return err
	}
	done := "revoked"
	if status == http.StatusOK {
		done = "already revoked (unchanged):"
	}
	_, err = fmt.Fprintf(e.stdout, "%s %s; id %d, kept until %s\n", done, describe(ent), ent.ID, formatTime(ent.ExpiresAt))
	return err
}

func cliList(ctx context.Context, args []string, e cliIO) error {
	fs, connect := cliFlags(e, "revocations list", "[--issuer ISS] [--kind KIND] [--subject SUB] [--limit N] [--cursor C] [--all]")
	q := url.Values{}
	for _, f := range []struct{ name, usage string }{
		{"issuer", "only the entries of issuer `ISS` (its iss or its name)"},
		{"kind", "only entries of this `KIND`: token, session, subject or cutoff"},
		{"subject", "only the entries of subject `SUB`"},
		{"limit", "`N` entries per page, 1 to 1000 (default: the server's, 100)"},
		{"cursor", "start after cursor `C` (a page's next_cursor)"},
	} {
		fs.Func(f.name, f.usage, func(s string) error { q.Set(f.name, s); return nil })
	}
	all := fs.Bool("all", false, "follow next_cursor to the end")
	if _, err := parseArgs(fs, args, e.stdout); err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	out := intake.ListResponse{Revocations: []intake.Entry{}}
	for {
		_, answer, err := c.do(ctx, "GET", "/v1/revocations?"+q.Encode(), "", nil)
		if err != nil {
			return err
		}
		if c.json && !*all {
			return printJSON(e.stdout, answer)
		}
		var page intake.ListResponse
		if err := c.decode(answer, &page); err != nil {
			return err
		}
		out.Revocations = append(out.Revocations, page.Revocations...)
		out.NextCursor = page.NextCursor
		if !*all || page.NextCursor == "" {
			break
		}
		if page.NextCursor == q.Get("cursor") {
			return fmt.Errorf("revocations list: the server repeated cursor %s", page.NextCursor)
		}
		q.Set("cursor", page.NextCursor)
	}
	if c.json {
		return writeIndented(e.stdout, out)
	}
	if len(out.Revocations) == 0 {
		fmt.Fprintln(e.stdout, "no revocations")
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tISSUER\tKEY\tAUDIENCE\tREVOKED BEFORE\tEXPIRES\tSOURCE")
		for _, r := range out.Revocations {
			before := "-"
			if r.RevokedBefore != nil {
				before = formatTime(*r.RevokedBefore)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.Issuer, dash(r.JTI+r.SID+r.Subject),
				dash(r.Audience), before, formatTime(r.ExpiresAt), dash(r.Source))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if out.NextCursor != "" {
		fmt.Fprintf(e.stderr, "more entries: add --cursor %s for the next page, or --all\n", out.NextCursor)
	}
	return nil
}

func cliUnrevoke(ctx context.Context, args []string, e cliIO) error {
	fs, connect := cliFlags(e, "unrevoke", "ID [--source admin|all|CLASS]")
	source := fs.String("source", "admin", "whose part of the entry to remove: a source `CLASS` (admin, fusionauth, logout-route, backchannel-logout) or all")
	pos, err := parseArgs(fs, args, e.stdout, "ID")
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("unrevoke: ID %q is not a revocation id (see tokengate revocations list)", pos[0])
	}
	c, err := connect()
	if err != nil {
		return err
	}
	path := "/v1/revocations/" + strconv.FormatInt(id, 10) + "?" + url.Values{"source": {*source}}.Encode()
	_, answer, err := c.do(ctx, "DELETE", path, "", nil)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, answer)
	}
	var res intake.UnrevokeResponse
	if err := c.decode(answer, &res); err != nil {
		return err
	}
	if res.Deleted != nil {
		_, err = fmt.Fprintf(e.stdout, "unrevoked %s (id %d)\n", describe(*res.Deleted), res.Deleted.ID)
		return err
	}
	if res.Remaining == nil {
		return fmt.Errorf("unrevoke: the server's answer names neither what was deleted nor what remains")
	}
	var removed, left []string
	for _, c := range res.Removed {
		removed = append(removed, c.Source)
	}
	for _, c := range res.Remaining.Contributions {
		left = append(left, c.Source)
	}
	_, err = fmt.Fprintf(e.stdout, "removed %s from id %d; still revoked by %s: %s\n", strings.Join(removed, ", "),
		res.Remaining.ID, strings.Join(left, ", "), describe(*res.Remaining))
	return err
}

// cliIntrospect prints whether a token is active. An inactive token is an
// answer, not an error: the command succeeds either way.
func cliIntrospect(ctx context.Context, args []string, e cliIO) error {
	fs, connect := cliFlags(e, "introspect", "TOKEN|-")
	pos, err := parseArgs(fs, args, e.stdout, "TOKEN (or - to read it from stdin)")
	if err != nil {
		return err
	}
	c, err := connect()
	if err != nil {
		return err
	}
	tok, err := readToken(pos[0], e.stdin)
	if err != nil {
		return fmt.Errorf("introspect: %w", err)
	}
	c.secret = append(c.secret, tok)
	form := url.Values{"token": {tok}}.Encode()
	_, answer, err := c.do(ctx, "POST", "/v1/introspect", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(e.stdout, answer)
	}
	var claims map[string]any
	if err := c.decode(answer, &claims); err != nil {
		return err
	}
	if claims["active"] != true {
		_, err = fmt.Fprintln(e.stdout, "inactive (invalid, expired or revoked)")
		return err
	}
	line := "active:"
	for _, k := range []string{"sub", "iss", "exp", "jti", "sid"} {
		switch v := claims[k].(type) {
		case string:
			line += fmt.Sprintf(" %s=%s", k, v)
		case float64:
			line += fmt.Sprintf(" %s=%s", k, formatTime(time.Unix(int64(v), 0)))
		}
	}
	_, err = fmt.Fprintln(e.stdout, line)
	return err
}

// describe says what an entry revokes, e.g. `subject "alice" of ISS
// (audience api) before TIME`.
func describe(r intake.Entry) string {
	var s string
	switch r.Kind {
	case "token":
		s = fmt.Sprintf("token %q of %s", r.JTI, r.Issuer)
	case "session":
		s = fmt.Sprintf("session %q of %s", r.SID, r.Issuer)
	case "subject":
		s = fmt.Sprintf("subject %q of %s", r.Subject, r.Issuer)
	case "cutoff":
		s = "all tokens of " + r.Issuer
	default:
		s = r.Kind + " of " + r.Issuer
	}
	if r.Audience != "" {
		s += fmt.Sprintf(" (audience %s)", r.Audience)
	}
	if r.RevokedBefore != nil {
		s += " before " + formatTime(*r.RevokedBefore)
	}
	return s
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(w io.Writer, answer []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(answer), "", "  "); err != nil {
		return fmt.Errorf("the answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func writeIndented(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
