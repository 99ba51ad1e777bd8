package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tokengate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	return ca
}

// issue signs a certificate for 127.0.0.1 (server) or a client, valid
// from notBefore to notAfter; it returns the certificate and key in PEM.
func (ca *testCA) issue(t *testing.T, serial int64, client bool, notBefore, notAfter time.Time, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("leaf %d", serial)},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	tmpl.DNSNames = names
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeAtomically replaces path with data (a temp file renamed over it),
// as cert-manager and kubelet do.
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedSerial is the serial of the certificate the TLS server at addr
// presents now.
func servedSerial(t *testing.T, addr string, ca *testCA, client *tls.Certificate) int64 {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.pool}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSListeners, through run: the gRPC listener serves mutual TLS (a
// client without a certificate from the client CA is refused), the HTTP
// listener TLS; both certificates are read again when their files change
// and served to new connections without a restart, while an established
// connection keeps working; a file that does not load keeps the
// certificate in force, counted in /metrics.
func TestTLSListeners(t *testing.T) {
	ca, clientCA := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	now := time.Now()
	files := map[string]string{}
	for _, name := range []string{"grpc.crt", "grpc.key", "http.crt", "http.key", "clients.pem"} {
		files[name] = filepath.Join(dir, name)
	}
	write := func(prefix string, serial int64) {
		c, k := ca.issue(t, serial, false, now.Add(-time.Minute), now.Add(time.Hour))
		writeAtomically(t, files[prefix+".key"], k)
		writeAtomically(t, files[prefix+".crt"], c)
	}
	write("grpc", 10)
	write("http", 20)
	writeAtomically(t, files["clients.pem"], clientCA.pem)
	cPEM, kPEM := clientCA.issue(t, 99, true, now.Add(-time.Minute), now.Add(time.Hour))
	clientCert, err := tls.X509KeyPair(cPEM, kPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf(`
listen:
  grpc: "127.0.0.1:0"
  http: "127.0.0.1:0"
  grpc_tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
  http_tls: {cert_file: %q, key_file: %q}
  tls_reload_interval: 1s
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
`, files["grpc.crt"], files["grpc.key"], files["clients.pem"], files["http.crt"], files["http.key"]))
	in := start(t, []string{"serve", "--config", cfg}, nil)

	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}, Timeout: 10 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := https.Get("https://" + in.httpAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("HTTPS /healthz: %d", code)
	}
	if resp, err := http.Get("http://" + in.httpAddr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Error("plain HTTP is answered on the TLS listener")
	}

	dial := func(withCert bool) *grpc.ClientConn {
		t.Helper()
		tc := &tls.Config{RootCAs: ca.pool}
		if withCert {
			tc.Certificates = []tls.Certificate{clientCert}
		}
		conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	healthCheck := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	withCert := dial(true)
	if err := healthCheck(withCert); err != nil {
		t.Fatalf("gRPC over mutual TLS: %v", err)
	}
	if err := healthCheck(dial(false)); err == nil {
		t.Error("a gRPC client without a client certificate is served")
	}

	// Rotation: new certificates, picked up without a restart.
	write("grpc", 11)
	write("http", 21)
	eventually(t, "the rotated certificates are served", func() bool {
		return servedSerial(t, in.grpcAddr, ca, &clientCert) == 11 && servedSerial(t, in.httpAddr, ca, nil) == 21
	})
	if err := healthCheck(withCert); err != nil {
		t.Errorf("the connection made before the rotation: %v", err)
	}

	// A file that does not load keeps the certificate in force.
	writeAtomically(t, files["http.crt"], []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"))
	eventually(t, "the failed reload is counted", func() bool {
		_, metrics := get("/metrics")
		return strings.Contains(metrics, `tokengate_tls_reloads_total{listener="http",result="failure"} 1`)
	})
	if got := servedSerial(t, in.httpAddr, ca, nil); got != 21 {
		t.Errorf("after a bad file: serial %d served, want 21 (kept)", got)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`tokengate_tls_reloads_total{listener="grpc",result="success"} 1`,
		`tokengate_tls_reloads_total{listener="http",result="success"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestTLSExpiredCertificateStopsTheStart: an expired certificate (or one
// not valid yet, or a key that does not match) is a startup error naming
// the listener.
func TestTLSExpiredCertificateStopsTheStart(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	c, k := ca.issue(t, 5, false, now.Add(-2*time.Hour), now.Add(-time.Hour))
	writeAtomically(t, certFile, c)
	writeAtomically(t, keyFile, k)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", grpc_tls: {cert_file: %q, key_file: %q}}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
`, certFile, keyFile))
	err := run(t.Context(), []string{"serve", "--config", cfg}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "listen.grpc_tls") || !strings.Contains(err.Error(), "not now") {
		t.Errorf("got %v, want listen.grpc_tls: the certificate is not valid now", err)
	}
	_, other := newTestCA(t).issue(t, 6, false, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, certFile, c)
	writeAtomically(t, keyFile, other)
	if err := run(t.Context(), []string{"serve", "--config", cfg}, noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "listen.grpc_tls") {
		t.Errorf("a key that does not match: %v", err)
	}
}

// TestAdminListener: with listen.admin, the admin API and /metrics answer
// there and 404 on listen.http, which keeps the probes (and would keep the
// webhooks) for the IdP to reach.
func TestAdminListener(t *testing.T) {
	cfg := writeConfig(t, fmt.Sprintf(`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", admin: "127.0.0.1:0"}
shutdown: {drain_delay: 0s, timeout: 5s}
admin: {token: %q}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
`, testAdminToken))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	var adminAddr string
	for _, line := range strings.Split(in.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "serving" {
			adminAddr, _ = rec["admin_addr"].(string)
		}
	}
	if adminAddr == "" {
		t.Fatalf("no admin_addr in the serving line:\n%s", in.logs)
	}
	revoke := func(addr string) int {
		req, err := http.NewRequest("POST", "http://"+addr+"/v1/revocations",
			strings.NewReader(`{"kind":"subject","issuer":"https://a.example","subject":"u1"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitReady(t, in)
	if code, _ := httpGet(t, "http://"+in.httpAddr+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on listen.http: %d, want 404", code)
	}
	if code := revoke(in.httpAddr); code != http.StatusNotFound {
		t.Errorf("admin API on listen.http: %d, want 404", code)
	}
	if code, body := httpGet(t, "http://"+adminAddr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "tokengate_build_info") {
		t.Errorf("/metrics on listen.admin: %d", code)
	}
	if code := revoke(adminAddr); code != http.StatusCreated {
		t.Errorf("admin API on listen.admin: %d, want 201", code)
	}
}

// TestHealthcheckOverMutualTLS: tokengate healthcheck reaches an HTTP
// listener with TLS and a client CA given its CA and a client certificate,
// and fails without the client certificate.
func TestHealthcheckOverMutualTLS(t *testing.T) {
	ca, clientCA := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	now := time.Now()
	path := func(name string) string { return filepath.Join(dir, name) }
	c, k := ca.issue(t, 1, false, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, path("http.crt"), c)
	writeAtomically(t, path("http.key"), k)
	writeAtomically(t, path("ca.pem"), ca.pem)
	writeAtomically(t, path("clients.pem"), clientCA.pem)
	cc, ck := clientCA.issue(t, 2, true, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, path("client.crt"), cc)
	writeAtomically(t, path("client.key"), ck)
	cfg := writeConfig(t, fmt.Sprintf(`
listen:
  grpc: "127.0.0.1:0"
  http: "127.0.0.1:0"
  http_tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
`, path("http.crt"), path("http.key"), path("clients.pem")))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	url := "https://" + in.httpAddr + "/healthz"
	check := func(args ...string) error {
		return run(t.Context(), append([]string{"healthcheck", "--url", url}, args...), noEnv, io.Discard, io.Discard)
	}
	if err := check("--ca-file", path("ca.pem"), "--cert-file", path("client.crt"), "--key-file", path("client.key")); err != nil {
		t.Errorf("with the CA and a client certificate: %v", err)
	}
	if err := check("--ca-file", path("ca.pem")); err == nil {
		t.Error("without a client certificate: healthy")
	}
	if err := check(); err == nil {
		t.Error("without the CA: healthy")
	}
}

// TestTLSReloadFailures: a file that goes bad is counted once while it
// stays bad; restored, then broken again, it is counted again; a
// certificate and key caught halfway through a rotation (the new
// certificate, the old key) are read again before being judged.
func TestTLSReloadFailures(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.issue(t, 1, false, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, certFile, c1)
	writeAtomically(t, keyFile, k1)
	f, err := newTLSFiles("http", TLSConfig{CertFile: certFile, KeyFile: keyFile}, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	f.reloaded = func(r string) { results = append(results, r) }
	f.settle = func() {} // nothing more to wait for
	bad := []byte("-----BEGIN CERTIFICATE-----\nbad\n-----END CERTIFICATE-----\n")
	writeAtomically(t, certFile, bad)
	f.reload()
	f.reload() // still bad: not again
	writeAtomically(t, certFile, c1)
	f.reload() // restored: unchanged, nothing to report
	writeAtomically(t, certFile, bad)
	f.reload() // bad again: reported again
	if want := []string{"failure", "failure"}; fmt.Sprint(results) != fmt.Sprint(want) {
		t.Errorf("results %v, want %v", results, want)
	}

	// Halfway through a rotation: the new certificate, the old key. The key
	// arrives while the reload waits.
	writeAtomically(t, certFile, c1)
	f.reload()
	results = nil
	c2, k2 := ca.issue(t, 2, false, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, certFile, c2)
	f.settle = func() { writeAtomically(t, keyFile, k2) }
	f.reload()
	if fmt.Sprint(results) != "[success]" || f.cur.Load().cert.Leaf.SerialNumber.Int64() != 2 {
		t.Errorf("a rotation caught halfway: results %v, want [success] and the new certificate", results)
	}
}

// TestTLSClientNames: with client_names, a client certificate the client CA
// signed is accepted only if it names one of them.
func TestTLSClientNames(t *testing.T) {
	ca, clientCA := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	now := time.Now()
	path := func(name string) string { return filepath.Join(dir, name) }
	c, k := ca.issue(t, 1, false, now.Add(-time.Minute), now.Add(time.Hour))
	writeAtomically(t, path("grpc.crt"), c)
	writeAtomically(t, path("grpc.key"), k)
	writeAtomically(t, path("clients.pem"), clientCA.pem)
	cfg := writeConfig(t, fmt.Sprintf(`
listen:
  grpc: "127.0.0.1:0"
  http: "127.0.0.1:0"
  grpc_tls: {cert_file: %q, key_file: %q, client_ca_file: %q, client_names: [envoy.tokengate.test]}
shutdown: {drain_delay: 0s, timeout: 5s}
issuers: [{name: a, issuer: https://a.example, audiences: [x], hmac_secret: 0123456789abcdef0123456789abcdef}]
`, path("grpc.crt"), path("grpc.key"), path("clients.pem")))
	in := start(t, []string{"serve", "--config", cfg}, nil)
	check := func(name string) error {
		t.Helper()
		cp, kp := clientCA.issue(t, 2, true, now.Add(-time.Minute), now.Add(time.Hour), name)
		cert, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{cert}})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check("envoy.tokengate.test"); err != nil {
		t.Errorf("a client named in client_names: %v", err)
	}
	if err := check("other.tokengate.test"); err == nil {
		t.Error("a client the CA signed but client_names does not name is served")
	}
}
