//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// clientCA makes a CA and one client certificate (ExtKeyUsageClientAuth) it signed.
func clientCA(t *testing.T, name string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " client"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startDomainServer runs a Go TLS server on 127.0.0.1 whose ticket keys come from keyring (client.Source,
// ConfigureServer); clientCAs non-nil requires client certificates they verify. It answers "ok" and closes.
func startDomainServer(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, keyring string, clientCAs *x509.CertPool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := client.NewSource(ctx, s.Client, "ticketkeys", keyring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	cfg := cert.ServerConfig()
	if clientCAs != nil {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	if err := src.ConfigureServer(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte("ok\n"))
				}
			}(c)
		}
	}()
	return ln.Addr().String()
}

// dialDomain makes one connection and reads the answer (so TLS 1.3 tickets arrive); it returns whether the
// session resumed and the handshake's error.
func dialDomain(addr string, cfg *tls.Config) (resumed bool, err error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		return c.ConnectionState().DidResume, err
	}
	st := c.ConnectionState()
	return st.DidResume, nil
}

// One keyring per trust domain, proven on Go servers fed by Vault (issue 21 item 6): domain "www" (no client
// certificates) and domain "pay" (client certificates of its own CA required) on one fleet and one Vault,
// each with its own keyring. A ticket issued by www, offered to pay by a client under the same server name,
// never resumes there, and pay still demands its client certificate (the handshake fails without one, and
// with www's client certificate). Control: two servers sharing one keyring do resume each other's tickets,
// so the client does offer the ticket and the separation is what stops it.
func TestTrustDomainsDoNotShareResumption(t *testing.T) {
	s := vaulttest.Start(t)
	for _, name := range []string{"www", "pay", "shared"} {
		createKeyring(t, s, name)
	}
	cert := testcert.New(t, testcert.ECDSAP256)
	payCAs, _ := clientCA(t, "pay")
	_, wwwClientCert := clientCA(t, "www")
	www := startDomainServer(t, s, cert, "www", nil)
	pay := startDomainServer(t, s, cert, "pay", payCAs)
	sharedA := startDomainServer(t, s, cert, "shared", nil)
	sharedB := startDomainServer(t, s, cert, "shared", nil)

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		name := map[uint16]string{tls.VersionTLS12: "TLS 1.2", tls.VersionTLS13: "TLS 1.3"}[v]
		newClient := func(certs ...tls.Certificate) *tls.Config {
			cfg := cert.ClientConfig()
			cfg.MinVersion, cfg.MaxVersion = v, v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			cfg.Certificates = certs
			return cfg
		}
		for _, tc := range []struct {
			what  string
			certs []tls.Certificate
		}{{"no client certificate", nil}, {"www's client certificate", []tls.Certificate{wwwClientCert}}} {
			cfg := newClient(tc.certs...)
			if _, err := dialDomain(www, cfg); err != nil {
				t.Fatalf("%s: www: %v", name, err)
			}
			if resumed, err := dialDomain(www, cfg); err != nil || !resumed {
				t.Fatalf("%s: www's own ticket back at www: resumed=%v err=%v; want a resumption (the client offers tickets)", name, resumed, err)
			}
			resumed, err := dialDomain(pay, cfg)
			if resumed {
				t.Errorf("%s, %s: www's ticket resumed at pay: another trust domain's session, pay's client-certificate check skipped", name, tc.what)
			}
			if err == nil {
				t.Errorf("%s, %s: pay accepted the connection; want its client-certificate check to refuse it", name, tc.what)
			}
		}
		cfg := newClient()
		if _, err := dialDomain(sharedA, cfg); err != nil {
			t.Fatalf("%s: shared A: %v", name, err)
		}
		if resumed, err := dialDomain(sharedB, cfg); err != nil || !resumed {
			t.Errorf("%s: control: a ticket of server A resumed at server B of the same keyring: %v (err %v); want true, or the test cannot tell separation from a client that offers nothing", name, resumed, err)
		}
	}
}
