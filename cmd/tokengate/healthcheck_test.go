package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestHealthcheck: exit 0 (a nil error) only for a 200; a 503 names the
// status and what /readyz says is missing; a redirect is not followed; a
// closed port, a bad URL and a stray argument fail.
func TestHealthcheck(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /unready", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready: issuer fusionauth keys", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// A port that was just open and is closed now refuses connections.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + lis.Addr().String() + "/readyz"
	lis.Close()

	cases := map[string]struct {
		args []string
		want string // "" for success, else in the error
	}{
		"200":            {[]string{"--url", srv.URL + "/ok"}, ""},
		"503":            {[]string{"--url", srv.URL + "/unready"}, "503 Service Unavailable: not ready: issuer fusionauth keys"},
		"404":            {[]string{"--url", srv.URL + "/nothing"}, "404 Not Found"},
		"redirect":       {[]string{"--url", srv.URL + "/moved"}, "302 Found"},
		"closed port":    {[]string{"--url", closed}, "connection refused"},
		"not http":       {[]string{"--url", "ftp://127.0.0.1:8181/readyz"}, "want http(s)://"},
		"credentials":    {[]string{"--url", "http://u:p@127.0.0.1:8181/readyz"}, "credentials"},
		"zero timeout":   {[]string{"--url", srv.URL + "/ok", "--timeout", "0s"}, "--timeout"},
		"extra argument": {[]string{"--url", srv.URL + "/ok", "now"}, `unexpected argument "now"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(t.Context(), append([]string{"healthcheck"}, tc.args...), func(string) string { return "" }, &stdout, &stderr)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want success", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: got %q, want nothing", stdout.String())
			}
		})
	}
}

// TestHealthcheckDefaultURL: without --url it asks /readyz on the default
// HTTP port on loopback, where the image's HEALTHCHECK finds tokengate.
func TestHealthcheckDefaultURL(t *testing.T) {
	var stdout strings.Builder
	if err := run(t.Context(), []string{"healthcheck", "-h"}, func(string) string { return "" }, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), `(default "`+defaultHealthURL+`")`) {
		t.Errorf("usage %q: want the default URL %s", stdout.String(), defaultHealthURL)
	}
	if defaultHealthURL != "http://127.0.0.1:8181/readyz" {
		t.Errorf("default URL %s; the Dockerfile's EXPOSE and the README say http://127.0.0.1:8181/readyz", defaultHealthURL)
	}
}

// TestHealthcheckAgainstDev: healthcheck succeeds against a running
// tokengate's /readyz and /healthz once it is ready.
func TestHealthcheckAgainstDev(t *testing.T) {
	in := start(t, []string{"dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--authz-http", "127.0.0.1:0", "--data", t.TempDir(), "--log-format", "json"}, nil)
	waitReady(t, in)
	for _, path := range []string{"/readyz", "/healthz"} {
		if err := run(t.Context(), []string{"healthcheck", "--url", "http://" + in.httpAddr + path}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
			t.Errorf("healthcheck %s against a ready tokengate: %v", path, err)
		}
	}
}

// TestVersionStamped: tokengate version prints the stamped version and
// commit, the Go release from the build info and the platform.
func TestVersionStamped(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"
	var out strings.Builder
	if err := run(t.Context(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "tokengate v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// TestVersionUnstamped: an unstamped build says dev and a commit from the
// build info, or unknown.
func TestVersionUnstamped(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^tokengate dev \(commit (unknown|[0-9a-f]{40}(-dirty)?), go1\.\S+ \w+/\w+\)\n$`).MatchString(out.String()) {
		t.Errorf("got %q", out.String())
	}
}
