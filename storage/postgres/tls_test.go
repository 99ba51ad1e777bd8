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

	_, _, otherPEM := newCA(t)
	other, err := postgres.Open(withCA(otherPEM), postgres.Options{MaxConns: 1})
	if err == nil {
		defer other.Close()
		err = other.CheckSchema(t.Context())
	}
	if err == nil {
		t.Error("verify-full with another CA connected")
	}
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
