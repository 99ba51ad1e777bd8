package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// defaultHealthURL is the readiness endpoint of tokengate on its default
// HTTP port, as a container sees itself.
const defaultHealthURL = "http://127.0.0.1:8181/readyz"

// runHealthcheck asks a running tokengate whether it is ready and exits 0
// when the URL answers 200, 1 otherwise, with the reason on stderr. The
// image has no shell and no curl, so container HEALTHCHECKs and compose
// healthchecks run the binary itself. Every failure, a wrong flag too, is
// exit status 1: Docker reserves 2.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", "[--url URL] [--timeout DURATION] [--ca-file PEM] [--server-name NAME] [--cert-file PEM --key-file PEM]",
		"Exits 0 when URL answers 200, 1 otherwise (the reason on stderr): a health check\nfor containers, whose image has no shell or curl. /readyz answers 200 once the\nissuers' keys and the revocations are loaded; /healthz, once the process runs.")
	target := fs.String("url", defaultHealthURL, "`URL` to ask (http or https); redirects are not followed")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after `DURATION`")
	caFile := fs.String("ca-file", "", "trust the CAs in `PEM` for an https URL (listen.http_tls with a private CA); default: the system's")
	certFile := fs.String("cert-file", "", "client certificate `PEM`, for a listener with client_ca_file (mutual TLS)")
	keyFile := fs.String("key-file", "", "the client certificate's key `PEM`")
	serverName := fs.String("server-name", "", "the `NAME` the server's certificate must carry, when it is not the URL's host (a Service name while the URL says 127.0.0.1)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	u, err := url.Parse(*target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("healthcheck: --url %q: want http(s)://HOST:PORT/PATH", *target)
	}
	if u.User != nil {
		return errors.New("healthcheck: --url must not hold credentials")
	}
	if *timeout <= 0 {
		return errors.New("healthcheck: --timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// This process's own listener is what is checked: never through a
	// proxy from the environment, never elsewhere by a redirect.
	tlsConfig, err := healthcheckTLS(*caFile, *certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	tlsConfig.ServerName = *serverName
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: tlsConfig},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	// /readyz names what is missing: worth showing in docker inspect.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	msg := strings.Join(strings.Fields(string(body)), " ")
	if msg == "" {
		return fmt.Errorf("healthcheck: %s: %s", u.Redacted(), resp.Status)
	}
	return fmt.Errorf("healthcheck: %s: %s: %s", u.Redacted(), resp.Status, msg)
}

// healthcheckTLS is the client TLS of a health check: the CAs of caFile
// (else the system's), and a client certificate for mutual TLS.
func healthcheckTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pemData) {
			return nil, errors.New("--ca-file: no PEM certificate in it")
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--cert-file and --key-file go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file, --key-file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
