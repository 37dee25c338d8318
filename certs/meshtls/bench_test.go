package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/palisade-mesh/palisade/certs"
)

// BenchmarkHandshake measures a full mTLS handshake (no session resumption) with the mesh
// configs, whose verification re-checks the files and explains rejections, against the baseline
// of crypto/tls verifying the same certificates itself (RequireAndVerifyClientCert, RootCAs).
// Both run over net.Pipe so the figure is the TLS work, not the loopback stack.
func BenchmarkHandshake(b *testing.B) {
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: testTrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	srvIs, err := ca.Issue(certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	if err != nil {
		b.Fatal(err)
	}
	cliIs, err := ca.Issue(certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent})
	if err != nil {
		b.Fatal(err)
	}
	srvPaths, err := srvIs.Write(b.TempDir(), ca.CertPEM(), false)
	if err != nil {
		b.Fatal(err)
	}
	cliPaths, err := cliIs.Write(b.TempDir(), ca.CertPEM(), false)
	if err != nil {
		b.Fatal(err)
	}
	open := func(p certs.LeafPaths) *Source {
		src, err := NewSource(SourceOptions{CertFile: p.Cert, KeyFile: p.Key, CAFile: p.CA, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		return src
	}
	meshServer := ServerConfig(open(srvPaths), ServerOptions{Logger: quietLogger()})
	meshServer.SessionTicketsDisabled = true
	meshClient, err := ClientConfig(open(cliPaths), ClientOptions{ServerCluster: "cluster1"})
	if err != nil {
		b.Fatal(err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	stdServer := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tlsCert(srvIs)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, SessionTicketsDisabled: true}
	stdClient := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tlsCert(cliIs)}, RootCAs: pool, ServerName: certs.DefaultServerDNSName(srvIs.ID)}

	for _, bc := range []struct {
		name           string
		server, client *tls.Config
	}{
		{"meshtls", meshServer, meshClient},
		{"stdlib-verify-baseline", stdServer, stdClient},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				c1, c2 := net.Pipe()
				srv := tls.Server(c1, bc.server)
				done := make(chan error, 1)
				go func() { done <- srv.Handshake() }()
				cli := tls.Client(c2, bc.client)
				if err := cli.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				c1.Close()
				c2.Close()
			}
		})
	}
}
