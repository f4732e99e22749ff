// Package testcert makes a throw-away certificate authority and a server
// certificate for 127.0.0.1 and localhost, for tests that run real TLS servers
// (Go servers, nginx, HAProxy) on loopback.
//
// Every call to New makes fresh keys; nothing is cached or shared between
// tests. The private keys are test-only and are written only into directories
// the caller owns (normally t.TempDir()).
package testcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// KeyType selects the key algorithm of both the CA and the leaf.
type KeyType int

const (
	// ECDSAP256 makes ECDSA P-256 keys (fast; the default for most tests).
	ECDSAP256 KeyType = iota
	// RSA2048 makes RSA-2048 keys (the cost model the project's measurements use).
	RSA2048
)

// String names the key type for test logs.
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ECDSA-P256"
	case RSA2048:
		return "RSA-2048"
	default:
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
}

// ServerName is the name the leaf certificate is valid for besides the
// 127.0.0.1 address; clients may use it as tls.Config.ServerName.
const ServerName = "localhost"

// Cert is a leaf certificate with its CA.
type Cert struct {
	// TLS is the leaf certificate and private key, ready for
	// tls.Config.Certificates. Its chain holds only the leaf.
	TLS *tls.Certificate
	// Pool holds only the CA certificate, for tls.Config.RootCAs.
	Pool *x509.CertPool
	// Leaf is the parsed leaf certificate.
	Leaf *x509.Certificate
	// CA is the parsed CA certificate.
	CA *x509.Certificate

	t                      testing.TB
	certPEM, keyPEM, caPEM []byte
}

// New makes a CA and a leaf certificate for 127.0.0.1, ::1 and localhost,
// valid from one hour ago for 24 hours, both with keys of type kt. It fails
// the test on any error.
func New(t testing.TB, kt KeyType) *Cert {
	t.Helper()
	c, err := generate(kt, time.Now())
	if err != nil {
		t.Fatalf("testcert: generate %s certificate: %v", kt, err)
	}
	c.t = t
	return c
}

func newKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("key type: unknown value %d (want ECDSAP256 or RSA2048)", int(kt))
	}
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func generate(kt KeyType, now time.Time) (*Cert, error) {
	caKey, err := newKey(kt)
	if err != nil {
		return nil, err
	}
	leafKey, err := newKey(kt)
	if err != nil {
		return nil, err
	}
	caSerial, err := serial()
	if err != nil {
		return nil, err
	}
	leafSerial, err := serial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-time.Hour)
	notAfter := now.Add(24 * time.Hour)

	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "ticketkeys test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	usage := x509.KeyUsageDigitalSignature
	if kt == RSA2048 {
		// TLS 1.2 RSA key exchange needs key encipherment.
		usage |= x509.KeyUsageKeyEncipherment
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: leafSerial,
		Subject:      pkix.Name{CommonName: ServerName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     usage,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{ServerName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("parse leaf certificate: %w", err)
	}

	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, fmt.Errorf("marshal leaf key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Cert{
		TLS: &tls.Certificate{
			Certificate: [][]byte{leafDER},
			PrivateKey:  leafKey,
			Leaf:        leaf,
		},
		Pool:    pool,
		Leaf:    leaf,
		CA:      ca,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}, nil
}

// ServerConfig returns a new server tls.Config serving the leaf certificate.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*c.TLS}}
}

// ClientConfig returns a new client tls.Config that trusts only the CA and
// verifies the name ServerName.
func (c *Cert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: ServerName}
}

// WritePEM writes cert.pem (the leaf), key.pem (its PKCS#8 key, mode 0600)
// and ca.pem into dir and returns their paths, for servers such as nginx
// (ssl_certificate, ssl_certificate_key). It fails the test on error.
func (c *Cert) WritePEM(dir string) (certFile, keyFile, caFile string) {
	c.t.Helper()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	caFile = filepath.Join(dir, "ca.pem")
	c.write(certFile, c.certPEM, 0o644)
	c.write(keyFile, c.keyPEM, 0o600)
	c.write(caFile, c.caPEM, 0o644)
	return certFile, keyFile, caFile
}

// WriteCombinedPEM writes combined.pem (the leaf followed by its key, mode
// 0600) into dir and returns its path, for HAProxy's `bind ... crt FILE`.
// It fails the test on error.
func (c *Cert) WriteCombinedPEM(dir string) string {
	c.t.Helper()
	f := filepath.Join(dir, "combined.pem")
	c.write(f, append(append([]byte{}, c.certPEM...), c.keyPEM...), 0o600)
	return f
}

func (c *Cert) write(path string, b []byte, mode os.FileMode) {
	c.t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		c.t.Fatalf("testcert: write %s: %v", path, err)
	}
}

// NewClientCA makes a client-certificate CA (CommonName "NAME client CA") and one client certificate
// it signed (ExtKeyUsageClientAuth, CommonName "NAME client"), both ECDSA P-256, valid from an hour ago
// for a day, for servers that require client certificates (Go's ClientCAs, nginx's
// ssl_client_certificate with ssl_verify_client on).
func NewClientCA(t testing.TB, name string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: client CA key: %v", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatalf("testcert: client CA: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("testcert: parse client CA: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: client key: %v", err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " client"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatalf("testcert: client certificate: %v", err)
	}
	return ca, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
