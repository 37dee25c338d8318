package apiserver

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/identity"
)

func TestNew_RejectsBadOptionsAndAnotherClustersEtcd(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	ctx := context.Background()
	if _, err := identity.EnsureClusterConfig(ctx, kv, identity.ClusterConfig{Name: servedCluster, ID: servedID}); err != nil {
		t.Fatal(err)
	}
	tls := p.source(t, p.ca, servedCluster, certs.RoleServer)
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"nothing", Options{}, "cluster name is required\ncluster ID is required\nTLS source (server certificate and CA bundle) is required\ntoken verifier is required"},
		{"no verifier", Options{ClusterName: servedCluster, ClusterID: servedID, TLS: tls}, "token verifier is required"},
		{"other cluster", Options{ClusterName: "cluster2", ClusterID: 2, TLS: tls, Verifier: p.verifier},
			`holds cluster "cluster1" with ID 1, but this server is configured for cluster "cluster2" with ID 2`},
		{"other ID", Options{ClusterName: servedCluster, ClusterID: 9, TLS: tls, Verifier: p.verifier}, "configured for cluster \"cluster1\" with ID 9"},
		{"bad listen address", Options{ClusterName: servedCluster, ClusterID: servedID, TLS: tls, Verifier: p.verifier, ListenAddress: "127.0.0.1:99999"}, "listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quiet()
			srv, err := New(ctx, kv, tc.opts)
			if err == nil {
				srv.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestServer_CloseBeforeRunFreesTheAddress(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv, err := New(context.Background(), kv, Options{ClusterName: servedCluster, ClusterID: servedID, ListenAddress: "127.0.0.1:0",
		TLS: p.source(t, p.ca, servedCluster, certs.RoleServer), Verifier: p.verifier, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := srv.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address still taken after Close: %v", err)
	}
	ln.Close()
}
