package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
)

// TestNewVerifies proves that the leaf verifies against the CA pool for both
// names a test may dial (127.0.0.1 and localhost), for both key types, that a
// real TLS handshake succeeds with it, and that the PEM files parse back into
// the same certificate and a matching key.
func TestNewVerifies(t *testing.T) {
	for _, kt := range []KeyType{ECDSAP256, RSA2048} {
		t.Run(kt.String(), func(t *testing.T) {
			c := New(t, kt)
			for _, name := range []string{"127.0.0.1", "localhost"} {
				if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Pool}); err != nil {
					t.Fatalf("verify leaf for %s: %v", name, err)
				}
			}
			other := New(t, kt)
			if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: other.Pool}); err == nil {
				t.Fatal("leaf verified against an unrelated CA")
			}

			ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_ = conn.(*tls.Conn).Handshake()
				conn.Close()
			}()
			conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientConfig())
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			conn.Close()

			dir := t.TempDir()
			certFile, keyFile, caFile := c.WritePEM(dir)
			if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
				t.Fatalf("load written key pair: %v", err)
			}
			st, err := os.Stat(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode: got %v, want 0600", st.Mode().Perm())
			}
			caPEM, err := os.ReadFile(caFile)
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(caPEM)
			if blk == nil || !c.CA.Equal(mustParse(t, blk.Bytes)) {
				t.Fatal("ca.pem does not hold the CA certificate")
			}
			combined := c.WriteCombinedPEM(dir)
			if _, err := tls.LoadX509KeyPair(combined, combined); err != nil {
				t.Fatalf("load combined PEM: %v", err)
			}
		})
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
