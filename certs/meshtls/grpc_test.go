package meshtls_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
)

// meshAuth is what the mesh API server does on every call: the calling cluster from the verified
// client certificate, then the token checked against it.
func meshAuth(v *token.Verifier) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "no peer")
		}
		tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "not a TLS connection")
		}
		id, err := meshtls.PeerID(tlsInfo.State)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		md, _ := metadata.FromIncomingContext(ctx)
		bearer := strings.Join(md.Get("authorization"), "")
		if _, err := v.Check(bearer, id.Cluster, token.ScopeRead); err != nil {
			code := codes.Unauthenticated
			if errors.Is(err, token.ErrMissingScope) {
				code = codes.PermissionDenied
			}
			return nil, status.Error(code, err.Error())
		}
		return next(ctx, req)
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func TestGRPC_MeshAPICallNeedsCertificateAndTokenOfTheSameCluster(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	source := func(cluster string, role certs.Role) *meshtls.Source {
		is, err := ca.Issue(certs.IssueOptions{Cluster: cluster, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		p, err := is.Write(filepath.Join(dir, cluster), ca.CertPEM(), false)
		if err != nil {
			t.Fatal(err)
		}
		src, err := meshtls.NewSource(meshtls.SourceOptions{CertFile: p.Cert, KeyFile: p.Key, CAFile: p.CA, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}

	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	revPath := filepath.Join(dir, "revoked")
	revs, err := token.OpenRevocations(revPath, token.RevocationsOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(token.VerifierOptions{Cluster: "cluster1", Keys: []*ecdsa.PublicKey{&key.PublicKey}, Revocations: revs})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := token.NewIssuer("cluster1", key)
	if err != nil {
		t.Fatal(err)
	}

	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(meshtls.ServerConfig(source("cluster1", certs.RoleServer), meshtls.ServerOptions{Logger: quiet}))),
		grpc.UnaryInterceptor(meshAuth(verifier)),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	for2, _, err := issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, revokedClaims, err := issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := token.Revoke(revPath, revokedClaims.ID, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := revs.Reload(); err != nil {
		t.Fatal(err)
	}
	agent2, agent3 := source("cluster2", certs.RoleAgent), source("cluster3", certs.RoleAgent)

	tests := []struct {
		name     string
		src      *meshtls.Source
		token    string
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "cluster2 with its token", src: agent2, token: for2, wantCode: codes.OK},
		{name: "cluster2 without a token", src: agent2, wantCode: codes.Unauthenticated, wantMsg: "no mesh access token"},
		{name: "cluster3 with cluster2's token", src: agent3, token: for2, wantCode: codes.Unauthenticated, wantMsg: `issued to cluster "cluster2", but the caller's certificate names cluster "cluster3"`},
		{name: "cluster2 with a revoked token", src: agent2, token: revoked, wantCode: codes.Unauthenticated, wantMsg: "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := meshtls.ClientConfig(tt.src, meshtls.ClientOptions{ServerCluster: "cluster1"})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithPerRPCCredentials(bearer(tt.token)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Fatalf("Check: %v, want code %v saying %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}

	t.Run("client refuses a server that is not cluster1", func(t *testing.T) {
		cfg, err := meshtls.ClientConfig(agent2, meshtls.ClientOptions{ServerCluster: "cluster9"})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithPerRPCCredentials(bearer(for2)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate names another cluster") || !strings.Contains(err.Error(), "cluster9") {
			t.Fatalf("Check: %v, want Unavailable naming the wrong cluster", err)
		}
	})
}
