package postgres_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/storage/postgres"
	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

// TestVerifyFullTLS: storage.postgres_url with sslmode=verify-full (and
// sslrootcert) connects to a server whose certificate the named CA signed
// for its address, and refuses one signed by another CA: the URL is all it
// takes (pgx reads the libpq parameters).
func TestVerifyFullTLS(t *testing.T) {
	ca, caKey, caPEM := newCA(t)
	certPEM, keyPEM := serverCert(t, ca, caKey)
	c := pgtest.NewCluster(t, pgtest.Options{TLS: &pgcluster.TLS{CertPEM: certPEM, KeyPEM: keyPEM}})
	if _, err := c.CreateDatabase(t.Context(), "tls"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	withCA := func(pemData []byte) string {
		path := filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(path, pemData, 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(c.URL("tls"))
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", path)
		u.RawQuery = q.Encode()
		return u.String()
	}

	s := open(t, withCA(caPEM))
	if err := s.CheckSchema(t.Context()); err != nil {
		t.Fatalf("verify-full with the server's CA: %v", err)
	}
	var ssl bool
	if err := pgcluster.QueryRow(t.Context(), withCA(caPEM), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", nil, &ssl); err != nil || !ssl {
		t.Errorf("the connection is not TLS: ssl=%v, %v", ssl, err)
	}

	// Another CA: refused by certificate verification.
	_, _, otherPEM := newCA(t)
	if err := connect(t, withCA(otherPEM)); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("verify-full with another CA: %v, want the certificate refused", err)
	}
	// The right CA, another name (localhost for a certificate that names
	// 127.0.0.1): what verify-full checks beyond verify-ca.
	byName := strings.Replace(withCA(caPEM), "127.0.0.1", "localhost", 1)
	if err := connect(t, byName); err == nil || !strings.Contains(err.Error(), "localhost") {
		t.Errorf("verify-full with another host name: %v, want the name refused", err)
	}
	if err := connect(t, strings.Replace(byName, "verify-full", "verify-ca", 1)); err != nil {
		t.Errorf("verify-ca with another host name: %v, want it connected (the name is not checked)", err)
	}
}

// connect opens a store on url and asks it something.
func connect(t *testing.T, url string) error {
	t.Helper()
	s, err := postgres.Open(url, postgres.Options{MaxConns: 1})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.CheckSchema(t.Context())
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serverCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
