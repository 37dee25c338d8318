package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

// ServerOptions configure ServerConfig.
type ServerOptions struct {
	// AllowedRoles of clients. Default agent and client; a server certificate is never a client.
	AllowedRoles []certs.Role
	// Logger receives one warning per rejected client. Default slog.Default().
	Logger *slog.Logger
}

// ServerConfig is the TLS configuration of a mesh API server: TLS 1.3, its certificate from src,
// and a client certificate required from every peer and verified against src's CA bundle. Use
// PeerID on the connection state to learn the client's cluster.
func ServerConfig(src *Source, opts ServerOptions) *tls.Config {
	if len(opts.AllowedRoles) == 0 {
		opts.AllowedRoles = []certs.Role{certs.RoleAgent, certs.RoleClient}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &src.current().cert, nil
		},
		// The certificate is requested here and required by VerifyConnection (which rejects an
		// empty chain) instead of RequireAndVerifyClientCert: the bundle may have been reloaded,
		// and our verifier explains its rejections. VerifyConnection also runs on resumed
		// sessions, so a resumed client is checked against today's bundle.
		ClientAuth: tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			m := src.current()
			_, err := VerifyPeer(cs.PeerCertificates, m.roots, Expectation{
				TrustDomain: m.id.TrustDomain,
				Roles:       opts.AllowedRoles,
				Usage:       x509.ExtKeyUsageClientAuth,
			}, time.Now())
			if err != nil {
				opts.Logger.Warn("mesh client rejected", "error", err)
				return fmt.Errorf("reject mesh client: %w", err)
			}
			return nil
		},
	}
}

// ClientOptions configure ClientConfig.
type ClientOptions struct {
	// ServerCluster is the cluster whose mesh API server the client means to reach; required. A
	// server whose certificate names any other cluster is rejected.
	ServerCluster string
}

// ClientConfig is the TLS configuration of a client of a remote cluster's mesh API server: TLS
// 1.3, the client certificate from src, and the server verified against src's CA bundle and
// required to be the mesh API server of opts.ServerCluster.
func ClientConfig(src *Source, opts ClientOptions) (*tls.Config, error) {
	if err := certs.ValidateClusterName(opts.ServerCluster); err != nil {
		return nil, fmt.Errorf("mesh client TLS config: server cluster: %w", err)
	}
	td := src.ID().TrustDomain
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: certs.DefaultServerDNSName(certs.ID{TrustDomain: td, Cluster: opts.ServerCluster, Role: certs.RoleServer}),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &src.current().cert, nil
		},
		// The server is identified by its SPIFFE URI, not by a host name, so crypto/tls's own
		// host-name verification is replaced by VerifyConnection (which runs on every handshake,
		// resumed or not).
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			m := src.current()
			_, err := VerifyPeer(cs.PeerCertificates, m.roots, Expectation{
				TrustDomain: m.id.TrustDomain,
				Cluster:     opts.ServerCluster,
				Roles:       []certs.Role{certs.RoleServer},
				Usage:       x509.ExtKeyUsageServerAuth,
			}, time.Now())
			if err != nil {
				return fmt.Errorf("reject mesh API server of %s: %w", opts.ServerCluster, err)
			}
			return nil
		},
	}, nil
}

// PeerID is the identity of the peer of an established connection, as verified during the
// handshake by a config from this package. The mesh API server calls it (from gRPC, through the
// peer's credentials.TLSInfo) to learn which cluster is calling.
func PeerID(cs tls.ConnectionState) (certs.ID, error) {
	if !cs.HandshakeComplete {
		return certs.ID{}, errors.New("peer identity: TLS handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return certs.ID{}, ErrNoCertificate
	}
	id, err := certs.LeafID(cs.PeerCertificates[0])
	if err != nil {
		return certs.ID{}, fmt.Errorf("peer identity: %w", err)
	}
	return id, nil
}
