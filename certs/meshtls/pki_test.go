package meshtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

const testTrustDomain = "mesh.test"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCA(t *testing.T, td string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: td, NotBefore: time.Now().Add(-72 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *certs.CA, opts certs.IssueOptions) *certs.Issued {
	t.Helper()
	is, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// writeSource writes the certificate with the CA bundle into dir and opens a Source on them that
// looks at the files on every use.
func writeSource(t *testing.T, dir string, is *certs.Issued, bundle []byte) (*Source, certs.LeafPaths) {
	t.Helper()
	paths, err := is.Write(dir, bundle, true)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: paths.CA, CheckInterval: time.Nanosecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return src, paths
}

func tlsCert(is *certs.Issued) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: is.Key, Leaf: is.Cert}
}

// handcrafted signs a certificate the CLI would never issue (no URI, another trust domain), with
// ca's key, so the verifier's own checks are what rejects it.
func handcrafted(t *testing.T, ca *certs.CA, usage x509.ExtKeyUsage, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "handcrafted"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// echoServer accepts TLS connections on 127.0.0.1 and echoes what it reads. Handshake errors are
// sent on errs. Everything it starts ends at test cleanup.
type echoServer struct {
	addr string
	errs chan error
}

func startEchoServer(t *testing.T, cfg *tls.Config) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String(), errs: make(chan error, 16)}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, raw)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn := tls.Server(raw, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := conn.HandshakeContext(ctx)
				cancel()
				select {
				case s.errs <- err:
				default:
				}
				if err != nil {
					conn.Close()
					return
				}
				_, _ = io.Copy(conn, conn)
				conn.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// serverHandshakeErr waits for the server's verdict on the latest handshake.
func (s *echoServer) serverHandshakeErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("server handshake did not finish")
		return nil
	}
}

// dial (safe from any goroutine) connects to addr and completes the client side of the handshake, then proves the
// connection carries data (a TLS 1.3 client finishes its handshake before the server has judged
// its certificate, so only a round trip shows the server accepted it).
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, cfg)
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		return nil, err
	}
	if err := roundTrip(conn, "hello"); err != nil {
		return nil, err
	}
	return conn, nil
}

func roundTrip(conn *tls.Conn, msg string) error {
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}
