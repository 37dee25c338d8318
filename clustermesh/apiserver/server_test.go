package apiserver

import (
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
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

func TestServer_CloseLeavesNoGoroutines(t *testing.T) {
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	agent := p.source(t, p.ca, "cluster2", certs.RoleAgent)
	tok := p.token(t, "cluster2")
	srv, err := New(context.Background(), kv, Options{ClusterName: servedCluster, ClusterID: servedID, ListenAddress: "127.0.0.1:0",
		TLS: p.source(t, p.ca, servedCluster, certs.RoleServer), Verifier: p.verifier, Logger: quiet(),
		ElectionTTL: 2 * time.Second, HeartbeatInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	cfg, err := meshtls.ClientConfig(agent, meshtls.ClientOptions{ServerCluster: servedCluster})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithPerRPCCredentials(bearer(tok)))
	if err != nil {
		t.Fatal(err)
	}
	client := apiv1.NewMeshClient(conn)
	full := openWatch(t, client, &apiv1.MeshWatchRequest{})
	full.recvUntil("full synced", waitFor, func(m *mirror) bool { return m.synced })
	scoped := openWatch(t, client, &apiv1.MeshWatchRequest{Selectors: []*apiv1.MeshSelector{empireSelector()}})
	scoped.recvUntil("scoped synced", waitFor, func(m *mirror) bool { return m.synced })
	for !srv.IsGCLeader() {
		time.Sleep(10 * time.Millisecond)
	}

	// The server stops with streams open; they end with Unavailable.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := full.recvErr(waitFor); status.Code(err) != codes.Unavailable {
		t.Fatalf("open stream after Close: %v, want Unavailable", err)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := serverGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the server 5s after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverGoroutines are the stacks of goroutines running the server's code, its watches, its
// sessions or its garbage collector. etcd's and the kvstore client's own goroutines (streams they
// keep open for reuse) are not the server's.
func serverGoroutines() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "serverGoroutines") {
			continue
		}
		for _, marker := range []string{"clustermesh/apiserver.(", "palisade/identity.", "kvstore.(*watcher)", "kvstore.(*Session)"} {
			if strings.Contains(g, marker) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
