package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLSConfig is a listener's TLS: its certificate and key, and, for mutual
// TLS, the CAs whose client certificates it accepts.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, makes the listener require a client
	// certificate signed by one of its CAs: only Envoy (or only the IdP)
	// can connect.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientNames, with ClientCAFile, narrows the clients further: the
	// client certificate must name one of them, as a DNS name or a URI
	// (a SPIFFE ID such as spiffe://cluster.local/ns/istio-system/sa/
	// istio-ingressgateway-service-account). Empty: any the CA signed.
	ClientNames []string `yaml:"client_names"`
}

// enabled: the listener serves TLS.
func (c TLSConfig) enabled() bool { return c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != "" }

// validate reports the problems of a listener's TLS section; path is its
// YAML path (listen.grpc_tls).
func (c TLSConfig) validate(path string) []error {
	var errs []error
	if !c.enabled() {
		return nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		errs = append(errs, fmt.Errorf("%s: cert_file and key_file are both required", path))
	}
	if len(c.ClientNames) > 0 && c.ClientCAFile == "" {
		errs = append(errs, fmt.Errorf("%s.client_names: needs client_ca_file", path))
	}
	for i, n := range c.ClientNames {
		if strings.TrimSpace(n) == "" || n != strings.TrimSpace(n) {
			errs = append(errs, fmt.Errorf("%s.client_names[%d]: %q is not a name", path, i, n))
		}
	}
	return errs
}

// tlsMaterial is what one reading of a listener's files gives.
type tlsMaterial struct {
	cert     *tls.Certificate
	clientCA *x509.CertPool // nil: no client certificate asked
	sum      [sha256.Size]byte
	notAfter time.Time
}

// tlsFiles serves a listener's certificate from its files and reads them
// again when they change (cert-manager and Istio rotate them in place, or
// swap a symlink): new handshakes get the new certificate, established
// connections keep theirs. A change that does not load (a half-written
// file, a key that does not match, an expired certificate) keeps the
// material in force, and is logged and counted.
type tlsFiles struct {
	name string // the listener: grpc or http
	cfg  TLSConfig
	cur  atomic.Pointer[tlsMaterial]
	log  *slog.Logger
	now  func() time.Time
	// reloads counts readings of changed files by result.
	reloads map[string]prometheus.Counter
	// reloaded, when set, is told each result (tests).
	reloaded func(result string)
	// failed is the last reload failure's text: a file that stays bad is
	// logged and counted once.
	failed atomic.Pointer[string]
	// settle waits before a failed reading is read again (default: a
	// second): a rotation writes the certificate and the key one after the
	// other, and may be caught between the two.
	settle func()
}

// newTLSFiles reads the files: an unreadable, mismatched or expired
// certificate is an error (a startup error for the listener).
func newTLSFiles(name string, cfg TLSConfig, log *slog.Logger, now func() time.Time) (*tlsFiles, error) {
	t := &tlsFiles{name: name, cfg: cfg, log: log, now: now}
	m, err := t.read()
	if err != nil {
		return nil, fmt.Errorf("listen.%s_tls: %w", name, err)
	}
	t.cur.Store(m)
	return t, nil
}

// read loads the certificate, its key and the client CAs.
func (t *tlsFiles) read() (*tlsMaterial, error) {
	certPEM, err := os.ReadFile(t.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(t.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	var caPEM []byte
	if t.cfg.ClientCAFile != "" {
		if caPEM, err = os.ReadFile(t.cfg.ClientCAFile); err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_file and key_file: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert_file: %w", err)
		}
	}
	if now := t.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("cert_file: the certificate is valid from %s to %s, not now",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	m := &tlsMaterial{cert: &cert, notAfter: leaf.NotAfter,
		sum: sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM, caPEM}, []byte{0}))}
	if caPEM != nil {
		m.clientCA = x509.NewCertPool()
		if !m.clientCA.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("client_ca_file: no PEM certificate in it")
		}
	}
	return m, nil
}

// config is the listener's tls.Config: every handshake takes the material
// in force.
func (t *tlsFiles) config(protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cur.Load().cert, nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.cur.Load()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   protos,
				Certificates: []tls.Certificate{*m.cert},
			}
			if m.clientCA != nil {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, m.clientCA
				if len(t.cfg.ClientNames) > 0 {
					// Run on every handshake, resumed ones too.
					c.VerifyConnection = t.verifyClientName
				}
			}
			return c, nil
		},
	}
}

// reload reads the files again and puts them in force if they changed and
// load; otherwise the material in force stays.
func (t *tlsFiles) reload() {
	m, err := t.read()
	if err != nil {
		// Perhaps caught halfway through a rotation: read again once the
		// writer has had time to finish.
		if t.settle != nil {
			t.settle()
		} else {
			time.Sleep(time.Second)
		}
		m, err = t.read()
	}
	if err == nil && m.sum == t.cur.Load().sum {
		t.failed.Store(nil) // back to what is in force: a new failure is news
		return
	}
	result := "success"
	if err != nil {
		if t.lastFailed(err) {
			return // the same failure, already told
		}
		result = "failure"
		t.log.Error("TLS files changed and do not load: the certificate in force is kept", "listener", t.name, "err", err)
	} else {
		t.failed.Store(nil)
		t.cur.Store(m)
		t.log.Info("TLS certificate reloaded", "listener", t.name, "not_after", m.notAfter.UTC().Format(time.RFC3339))
	}
	if c := t.reloads[result]; c != nil {
		c.Inc()
	}
	if t.reloaded != nil {
		t.reloaded(result)
	}
}

// lastFailed reports whether err repeats the last failure (so that a bad
// file is counted once, not every poll), and remembers it.
func (t *tlsFiles) lastFailed(err error) bool {
	msg := err.Error()
	if p := t.failed.Load(); p != nil && *p == msg {
		return true
	}
	t.failed.Store(&msg)
	return false
}

// run polls the files every interval until ctx ends. Polling sees every
// way a file can change (written in place, renamed over, a symlink
// swapped), on every file system.
func (t *tlsFiles) run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.reload()
		}
	}
}

// tlsReloadMetrics registers tokengate_tls_reloads_total{listener,result}
// with reg, every listener's results at zero, and gives each its counters.
func tlsReloadMetrics(reg prometheus.Registerer, files ...*tlsFiles) error {
	if len(files) == 0 {
		return nil
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_tls_reloads_total",
		Help: "Readings of changed TLS certificate files by listener and result: success (in force) or failure (the certificate in force kept).",
	}, []string{"listener", "result"})
	cs := []prometheus.Collector{vec}
	for _, f := range files {
		// The certificate in force expires: a rotation that stopped
		// (cert-manager failing, a volume no longer updated) shows here
		// before clients refuse it.
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tokengate_tls_certificate_expiry_timestamp_seconds",
			Help:        "When the listener's certificate in force expires (Unix seconds).",
			ConstLabels: prometheus.Labels{"listener": f.name},
		}, func() float64 { return float64(f.cur.Load().notAfter.Unix()) }))
	}
	if reg != nil {
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				return fmt.Errorf("register TLS metrics: %w", err)
			}
		}
	}
	for _, f := range files {
		f.reloads = map[string]prometheus.Counter{}
		for _, r := range []string{"success", "failure"} {
			f.reloads[r] = vec.WithLabelValues(f.name, r)
		}
	}
	return nil
}

// verifyClientName accepts a client certificate that names one of
// ClientNames (a DNS name or a URI SAN, compared exactly).
func (t *tlsFiles) verifyClientName(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	for _, want := range t.cfg.ClientNames {
		if slices.Contains(leaf.DNSNames, want) {
			return nil
		}
		for _, u := range leaf.URIs {
			if u.String() == want {
				return nil
			}
		}
	}
	return fmt.Errorf("client certificate %q names none of listen.%s_tls.client_names", leaf.Subject.CommonName, t.name)
}
