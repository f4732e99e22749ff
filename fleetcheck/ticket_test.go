package fleetcheck

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

var versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

// TestOpenSSLTicketLayout seals and opens tickets of both key sizes and
// rejects each kind of bad ticket with its own error.
func TestOpenSSLTicketLayout(t *testing.T) {
	now := time.Now()
	for _, size := range []int{48, 80} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			a, other := newKey(t, size, now, now.Add(time.Hour)), newKey(t, size, now, now.Add(time.Hour))
			sameName := newKey(t, size, now, now.Add(time.Hour))
			sameName.name, sameName.ID = a.name, a.ID
			der := bytes.Repeat([]byte{0x30, 0x82, 0x01}, 40)
			ticket, err := sealTicket(FormatNginx, &session{der: der}, a)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := TicketKeyID(ticket); err != nil || id != a.ID {
				t.Fatalf("TicketKeyID = %q, %v; want %s", id, err, a.ID)
			}
			if want := keyNameLen + ivLen + (len(der)/16+1)*16 + macLen; len(ticket) != want {
				t.Fatalf("ticket of %d bytes, want %d (name, iv, padded CBC, HMAC)", len(ticket), want)
			}
			s, err := openTicket(FormatNginx, ticket, a)
			if err != nil || !bytes.Equal(s.der, der) {
				t.Fatalf("open: %v, plaintext equal %v", err, err == nil && bytes.Equal(s.der, der))
			}
			moved, err := reencrypt(FormatNginx, ticket, a, other)
			if err != nil {
				t.Fatal(err)
			}
			if s, err := openTicket(FormatNginx, moved, other); err != nil || !bytes.Equal(s.der, der) {
				t.Fatalf("re-encrypted ticket does not open under the target key: %v", err)
			}

			// A ticket whose HMAC is right but whose padding is not.
			badPad := append([]byte(nil), a.name[:]...)
			badPad = append(badPad, make([]byte, ivLen)...)
			block, _ := aes.NewCipher(a.aes)
			ct := bytes.Repeat([]byte{0x11}, 32) // last byte 0x11 = 17: not a valid PKCS#7 pad
			cipher.NewCBCEncrypter(block, badPad[keyNameLen:]).CryptBlocks(ct, ct)
			badPad = append(badPad, ct...)
			m := hmac.New(sha256.New, a.hmac)
			m.Write(badPad)
			badPad = m.Sum(badPad)

			flipped := append([]byte(nil), ticket...)
			flipped[keyNameLen+ivLen+3] ^= 1
			for _, tc := range []struct {
				name   string
				ticket []byte
				key    *Key
				want   error
			}{
				{"truncated below the fixed parts", ticket[:minTicketLen-1], a, ErrTicketTruncated},
				{"empty", nil, a, ErrTicketTruncated},
				{"truncated by one byte", ticket[:len(ticket)-1], a, ErrTicketAuth},
				{"unknown key", ticket, other, ErrTicketUnknownKey},
				{"corrupted ciphertext", flipped, a, ErrTicketAuth},
				{"other material under the same name", ticket, sameName, ErrTicketAuth},
				{"bad padding under a valid HMAC", badPad, a, ErrTicketMalformed},
			} {
				_, err := openTicket(FormatNginx, tc.ticket, tc.key)
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
				}
			}
		})
	}
}

// ticketServer is a real server holding keys enc (encrypting) and dec
// (decrypt-only) in format.
type ticketServer struct {
	name   string
	format string
	size   int
	start  func(t *testing.T, cert *testcert.Cert, enc, dec *Key) string
}

func startNginxTickets(t *testing.T, cert *testcert.Cert, enc, dec *Key) string {
	dir := t.TempDir()
	certFile, keyFile, _ := cert.WritePEM(dir)
	var files []string
	for i, k := range []*Key{enc, dec} {
		f := filepath.Join(dir, fmt.Sprintf("ticket%d.key", i))
		if err := os.WriteFile(f, k.material(FormatNginx), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	port := servertest.FreePort(t)
	p := servertest.StartNginx(t, fmt.Sprintf(`worker_processes 1;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_ticket_key %s;
        ssl_session_ticket_key %s;
        location / { return 200 "ok\n"; }
    }
}
`, port, certFile, keyFile, files[0], files[1]))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.WaitListening(t, addr)
	return addr
}

func startHAProxyTickets(t *testing.T, cert *testcert.Cert, enc, dec *Key) string {
	// HAProxy encrypts with the penultimate line; the last one is decrypt-only.
	return startHAProxyRing(t, cert, dec, enc, dec)
}

func startGoTickets(t *testing.T, cert *testcert.Cert, enc, dec *Key) string {
	return startGoServer(t, cert, enc, dec).addr
}

// TestTicketsOfRealServers takes real tickets from real servers (nginx and
// HAProxy with OpenSSL, key sizes 48 and 80; Go crypto/tls with the go
// layout) in TLS 1.2 and 1.3 and proves: the ticket names the encrypting
// key and opens with it; re-encrypted under the server's decrypt-only key it
// resumes; re-encrypted under a key the server lacks, corrupted, carrying
// valid MAC over garbage, or truncated, it does not.
func TestTicketsOfRealServers(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	now := time.Now()
	for _, srv := range []ticketServer{
		{"nginx-80", FormatNginx, 80, startNginxTickets},
		{"nginx-48", FormatNginx, 48, startNginxTickets},
		{"haproxy-80", FormatHAProxy, 80, startHAProxyTickets},
		{"haproxy-48", FormatHAProxy, 48, startHAProxyTickets},
		{"go", FormatGo, 80, startGoTickets},
	} {
		t.Run(srv.name, func(t *testing.T) {
			enc, dec, absent := newKey(t, srv.size, now, now.Add(time.Hour)), newKey(t, srv.size, now, now.Add(time.Hour)), newKey(t, srv.size, now, now.Add(time.Hour))
			node := nodesOf(cert, srv.start(t, cert, enc, dec))[0]
			ctx := context.Background()
			for _, v := range versions {
				f, err := fresh(ctx, node, v, 5*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", versionName(v), err)
				}
				if f.keyID != enc.ID {
					t.Fatalf("%s: fresh ticket names key %s, want the encrypting key %s", versionName(v), f.keyID, enc.ID)
				}
				s, err := openTicket(srv.format, f.ticket, enc)
				if err != nil {
					t.Fatalf("%s: open the fresh ticket with its key: %v", versionName(v), err)
				}
				if _, err := openTicket(srv.format, f.ticket, absent); !errors.Is(err, ErrTicketUnknownKey) {
					t.Errorf("%s: open with another key: got %v, want ErrTicketUnknownKey", versionName(v), err)
				}
				resumes := func(ticket []byte) bool {
					t.Helper()
					cs, err := f.resumption(ticket)
					if err != nil {
						t.Fatal(err)
					}
					ok, err := offer(ctx, node, v, cs, 5*time.Second)
					if err != nil {
						t.Fatalf("%s: offer: %v", versionName(v), err)
					}
					return ok
				}
				toDec, err := sealTicket(srv.format, s, dec)
				if err != nil {
					t.Fatal(err)
				}
				toAbsent, _ := sealTicket(srv.format, s, absent)
				flipped := append([]byte(nil), f.ticket...)
				flipped[len(flipped)/2] ^= 0x40
				garbage := &session{der: bytes.Repeat([]byte{0x42}, 100)}
				if srv.format == FormatGo {
					// A session crypto/tls parses, of another TLS version: refused.
					other := *s.gos
					garbage = &session{gos: &other}
					garbage.gos.EarlyData = true
				}
				validMAC, err := sealTicket(srv.format, garbage, enc)
				if err != nil {
					t.Fatal(err)
				}
				for _, tc := range []struct {
					name   string
					ticket []byte
					want   bool
				}{
					{"the fresh ticket", f.ticket, true},
					{"re-encrypted under the decrypt-only key", toDec, true},
					{"re-encrypted under a key the server lacks", toAbsent, false},
					{"a corrupted byte", flipped, false},
					{"truncated by its MAC", f.ticket[:len(f.ticket)-macLen], false},
					{"truncated to the key name", f.ticket[:keyNameLen], false},
				} {
					if got := resumes(tc.ticket); got != tc.want {
						t.Errorf("%s: %s: resumed %v, want %v", versionName(v), tc.name, got, tc.want)
					}
				}
				if srv.format != FormatGo && resumes(validMAC) {
					t.Errorf("%s: a ticket with a valid MAC over a garbage session resumed", versionName(v))
				}
				s.wipe()
				f.forget()
			}
		})
	}
}

// TestGoTicketLayout: the go layout (key name, then crypto/tls's ticket)
// opens under its key only and rejects truncated, corrupted and unknown-key
// tickets with their errors.
func TestGoTicketLayout(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	now := time.Now()
	a, other := newKey(t, 80, now, now.Add(time.Hour)), newKey(t, 80, now, now.Add(time.Hour))
	g := startGoServer(t, cert, a)
	f, err := fresh(context.Background(), nodesOf(cert, g.addr)[0], tls.VersionTLS13, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openTicket(FormatGo, f.ticket, a)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := reencrypt(FormatGo, f.ticket, a, other)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := TicketKeyID(moved); id != other.ID {
		t.Fatalf("re-encrypted ticket names %s, want %s", id, other.ID)
	}
	s2, err := openTicket(FormatGo, moved, other)
	if err != nil {
		t.Fatalf("re-encrypted ticket does not open under the target key: %v", err)
	}
	b1, _ := s.gos.Bytes()
	b2, _ := s2.gos.Bytes()
	if !bytes.Equal(b1, b2) {
		t.Fatal("the re-encrypted ticket carries another session")
	}
	flipped := append([]byte(nil), f.ticket...)
	flipped[keyNameLen+ivLen+2] ^= 1
	for _, tc := range []struct {
		name   string
		ticket []byte
		key    *Key
		want   error
	}{
		{"truncated below the fixed parts", f.ticket[:minTicketLen-1], a, ErrTicketTruncated},
		{"truncated by one byte", f.ticket[:len(f.ticket)-1], a, ErrTicketAuth},
		{"unknown key", f.ticket, other, ErrTicketUnknownKey},
		{"corrupted", flipped, a, ErrTicketAuth},
	} {
		if _, err := openTicket(FormatGo, tc.ticket, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}
