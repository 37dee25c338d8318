package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

func TestServerConfig_AcceptsMeshClientAndKnowsItsCluster(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	dir := t.TempDir()
	srvSrc, _ := writeSource(t, filepath.Join(dir, "c1"), issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer}), ca.CertPEM())
	cliSrc, _ := writeSource(t, filepath.Join(dir, "c2"), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), ca.CertPEM())

	var peer certs.ID
	cfg := ServerConfig(srvSrc, ServerOptions{Logger: quietLogger()})
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		cs.HandshakeComplete = true // PeerID is meant for established connections
		var err error
		peer, err = PeerID(cs)
		return err
	}
	srv := startEchoServer(t, cfg)
	clientCfg, err := ClientConfig(cliSrc, ClientOptions{ServerCluster: "cluster1"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dial(t, srv.addr, clientCfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if err := srv.serverHandshakeErr(t); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	want := certs.ID{TrustDomain: testTrustDomain, Cluster: "cluster2", Role: certs.RoleAgent}
	if peer != want {
		t.Fatalf("server saw peer %v, want %v", peer, want)
	}
	if got := conn.ConnectionState().Version; got != tls.VersionTLS13 {
		t.Fatalf("TLS version %x, want 1.3", got)
	}
	serverID, err := PeerID(conn.ConnectionState())
	if err != nil || serverID.Cluster != "cluster1" || serverID.Role != certs.RoleServer {
		t.Fatalf("client saw server %v (%v), want cluster1 server", serverID, err)
	}
}

func TestServerConfig_RejectsBadClientCertificates(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	otherCA := newCA(t, testTrustDomain)
	srvSrc, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer}), ca.CertPEM())
	srv := startEchoServer(t, ServerConfig(srvSrc, ServerOptions{Logger: quietLogger()}))

	agent := func(nb time.Time, v time.Duration) tls.Certificate {
		return tlsCert(issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent, NotBefore: nb, Validity: v}))
	}
	tests := []struct {
		name    string
		cert    *tls.Certificate
		wantErr error
		wantMsg string
	}{
		{name: "no certificate", cert: nil, wantErr: ErrNoCertificate},
		{name: "expired", cert: ptr(agent(time.Now().Add(-48*time.Hour), 24*time.Hour)), wantErr: ErrExpired, wantMsg: "expired at " + time.Now().Add(-24*time.Hour).UTC().Format("2006-01-02")},
		{name: "not yet valid", cert: ptr(agent(time.Now().Add(24*time.Hour), 24*time.Hour)), wantErr: ErrNotYetValid, wantMsg: "is valid from " + time.Now().Add(24*time.Hour).UTC().Format("2006-01-02")},
		{name: "signed by another CA", cert: ptr(tlsCert(issue(t, otherCA, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}))), wantErr: ErrUnknownCA, wantMsg: "not in the mesh CA bundle"},
		{name: "no SPIFFE URI", cert: ptr(handcrafted(t, ca, x509.ExtKeyUsageClientAuth)), wantErr: ErrNoSPIFFEID, wantMsg: "no URI SAN"},
		{name: "two URIs", cert: ptr(handcrafted(t, ca, x509.ExtKeyUsageClientAuth, "spiffe://mesh.test/cluster/cluster2/agent", "spiffe://mesh.test/cluster/cluster3/agent")), wantErr: ErrNoSPIFFEID, wantMsg: "2 URI SANs"},
		{name: "URI not a cluster ID", cert: ptr(handcrafted(t, ca, x509.ExtKeyUsageClientAuth, "spiffe://mesh.test/ns/default/sa/x")), wantErr: ErrInvalidSPIFFEID, wantMsg: "/cluster/<name>/<role>"},
		{name: "wrong trust domain", cert: ptr(handcrafted(t, ca, x509.ExtKeyUsageClientAuth, "spiffe://other.test/cluster/cluster2/agent")), wantErr: ErrWrongTrustDomain, wantMsg: `trust domain "other.test", want "mesh.test"`},
		{name: "server certificate used as client", cert: ptr(tlsCert(issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleServer}))), wantErr: ErrWrongUsage, wantMsg: "allows server auth"},
		{name: "server role with client usage", cert: ptr(handcrafted(t, ca, x509.ExtKeyUsageClientAuth, "spiffe://mesh.test/cluster/cluster2/server")), wantErr: ErrWrongRole, wantMsg: `role "server"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			if _, err := dial(t, srv.addr, cfg); err == nil {
				t.Error("client could talk over the connection, want it refused")
			}
			err := srv.serverHandshakeErr(t)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("server error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("server error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestClientConfig_RejectsBadServerCertificates(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	otherCA := newCA(t, testTrustDomain)
	cliSrc, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), ca.CertPEM())
	clientCfg, err := ClientConfig(cliSrc, ClientOptions{ServerCluster: "cluster1"})
	if err != nil {
		t.Fatal(err)
	}
	server := func(cluster string, nb time.Time, v time.Duration) tls.Certificate {
		return tlsCert(issue(t, ca, certs.IssueOptions{Cluster: cluster, Role: certs.RoleServer, NotBefore: nb, Validity: v}))
	}
	tests := []struct {
		name    string
		cert    tls.Certificate
		wantErr error
		wantMsg string
	}{
		{name: "good", cert: server("cluster1", time.Time{}, 0)},
		{name: "expired", cert: server("cluster1", time.Now().Add(-48*time.Hour), 24*time.Hour), wantErr: ErrExpired, wantMsg: "expired at"},
		{name: "not yet valid", cert: server("cluster1", time.Now().Add(time.Hour), time.Hour), wantErr: ErrNotYetValid, wantMsg: "is valid from"},
		{name: "signed by another CA", cert: tlsCert(issue(t, otherCA, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})), wantErr: ErrUnknownCA, wantMsg: "not in the mesh CA bundle"},
		{name: "names another cluster", cert: server("cluster3", time.Time{}, 0), wantErr: ErrWrongCluster, wantMsg: `names cluster "cluster3", but "cluster1" was expected`},
		{name: "no SPIFFE URI", cert: handcrafted(t, ca, x509.ExtKeyUsageServerAuth), wantErr: ErrNoSPIFFEID, wantMsg: "no URI SAN"},
		{name: "wrong trust domain", cert: handcrafted(t, ca, x509.ExtKeyUsageServerAuth, "spiffe://other.test/cluster/cluster1/server"), wantErr: ErrWrongTrustDomain, wantMsg: "other.test"},
		{name: "agent certificate used as server", cert: tlsCert(issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleAgent})), wantErr: ErrWrongUsage, wantMsg: "allows client auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startEchoServer(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tt.cert}, ClientAuth: tls.RequireAnyClientCert})
			_, err := dial(t, srv.addr, clientCfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("client error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("client error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSource_RotatedServerCertificateUsedByNewHandshakesOnly(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	dir := t.TempDir()
	first := issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	srvSrc, _ := writeSource(t, dir, first, ca.CertPEM())
	cliSrc, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), ca.CertPEM())
	srv := startEchoServer(t, ServerConfig(srvSrc, ServerOptions{Logger: quietLogger()}))
	clientCfg, err := ClientConfig(cliSrc, ClientOptions{ServerCluster: "cluster1"})
	if err != nil {
		t.Fatal(err)
	}

	old, err := dial(t, srv.addr, clientCfg)
	if err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	assertServerSerial(t, old, first)

	second := issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	if _, err := second.Write(dir, ca.CertPEM(), true); err != nil {
		t.Fatal(err)
	}
	fresh, err := dial(t, srv.addr, clientCfg)
	if err != nil {
		t.Fatalf("handshake after rotation: %v", err)
	}
	assertServerSerial(t, fresh, second)
	if err := roundTrip(old, "still there"); err != nil {
		t.Fatalf("connection from before the rotation broke: %v", err)
	}
	if err := srvSrc.LastReloadError(); err != nil {
		t.Fatalf("reload error after a good rotation: %v", err)
	}
}

func TestSource_BrokenRotationKeepsPreviousMaterial(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	dir := t.TempDir()
	first := issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	src, paths := writeSource(t, dir, first, ca.CertPEM())

	// A new certificate written before its key: the pair does not match yet.
	second := issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	if err := certs.WriteFiles([]certs.File{{Path: paths.Cert, Data: second.CertPEM, Mode: 0o644}}, true); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("reload of mismatched pair: %v, want a key mismatch error", err)
	}
	if got := src.current().cert.Leaf.SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("serving serial %x after a broken rotation, want the previous %x", got, first.Cert.SerialNumber)
	}
	// The key arrives: the rotation completes.
	if err := certs.WriteFiles([]certs.File{{Path: paths.Key, Data: second.KeyPEM, Mode: 0o600}}, true); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err != nil {
		t.Fatalf("reload after the key arrived: %v", err)
	}
	if got := src.current().cert.Leaf.SerialNumber; got.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatalf("serving serial %x, want the rotated %x", got, second.Cert.SerialNumber)
	}
	// A deleted bundle is an error, and the material in memory stays.
	if err := os.Remove(paths.CA); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err == nil {
		t.Fatal("reload with the CA bundle gone succeeded")
	}
	if src.ID().Cluster != "cluster1" {
		t.Fatal("material lost after a failed reload")
	}
}

func TestSource_BundleWithTwoCAsAcceptsBothDuringCARotation(t *testing.T) {
	oldCA, newCA := newCA(t, testTrustDomain), newCA(t, testTrustDomain)
	bundle := append(oldCA.CertPEM(), newCA.CertPEM()...)
	srvSrc, _ := writeSource(t, t.TempDir(), issue(t, newCA, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer}), bundle)
	srv := startEchoServer(t, ServerConfig(srvSrc, ServerOptions{Logger: quietLogger()}))
	for name, ca := range map[string]*certs.CA{"old CA": oldCA, "new CA": newCA} {
		t.Run(name, func(t *testing.T) {
			cliSrc, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), bundle)
			cfg, err := ClientConfig(cliSrc, ClientOptions{ServerCluster: "cluster1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dial(t, srv.addr, cfg); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if err := srv.serverHandshakeErr(t); err != nil {
				t.Fatalf("server: %v", err)
			}
		})
	}
}

func TestClientConfig_RejectsInvalidServerCluster(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	src, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), ca.CertPEM())
	for _, name := range []string{"", "Cluster1", "a/b", "-x"} {
		if _, err := ClientConfig(src, ClientOptions{ServerCluster: name}); err == nil {
			t.Errorf("ClientConfig accepted server cluster %q", name)
		}
	}
}

func TestNewSource_RejectsBadFiles(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	dir := t.TempDir()
	is := issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent})
	paths, err := is.Write(dir, ca.CertPEM(), false)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(notPEM, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts SourceOptions
		want string
	}{
		{name: "missing key file", opts: SourceOptions{CertFile: paths.Cert, KeyFile: filepath.Join(dir, "nope.key"), CAFile: paths.CA}, want: "nope.key"},
		{name: "bundle is not PEM", opts: SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: notPEM}, want: "no PEM CERTIFICATE"},
		{name: "bundle is a leaf", opts: SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: paths.Cert}, want: "not a CA certificate"},
		{name: "no files", opts: SourceOptions{}, want: "all required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSource(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewSource: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func assertServerSerial(t *testing.T, conn *tls.Conn, want *certs.Issued) {
	t.Helper()
	got := conn.ConnectionState().PeerCertificates[0].SerialNumber
	if got.Cmp(want.Cert.SerialNumber) != 0 {
		t.Fatalf("server presented serial %x, want %x", got, want.Cert.SerialNumber)
	}
}

func ptr[T any](v T) *T { return &v }

func TestSource_ConcurrentHandshakesDuringRepeatedRotation(t *testing.T) {
	ca := newCA(t, testTrustDomain)
	dir := t.TempDir()
	srvSrc, _ := writeSource(t, dir, issue(t, ca, certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer}), ca.CertPEM())
	cliSrc, _ := writeSource(t, t.TempDir(), issue(t, ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent}), ca.CertPEM())
	srv := startEchoServer(t, ServerConfig(srvSrc, ServerOptions{Logger: quietLogger()}))
	clientCfg, err := ClientConfig(cliSrc, ClientOptions{ServerCluster: "cluster1"})
	if err != nil {
		t.Fatal(err)
	}
	const dialers, perDialer = 4, 10
	errs := make(chan error, dialers*perDialer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			is, err := ca.Issue(certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
			if err == nil {
				_, err = is.Write(dir, ca.CertPEM(), true)
			}
			if err != nil {
				errs <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perDialer {
				conn, err := dial(t, srv.addr, clientCfg)
				if err != nil {
					errs <- err
					return
				}
				conn.Close()
			}
		}()
	}
	wg.Wait()
	<-done
	close(errs)
	for err := range errs {
		t.Errorf("handshake during rotation: %v", err)
	}
}
