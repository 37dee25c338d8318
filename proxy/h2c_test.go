package proxy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/palisade-mesh/palisade/monitor"
)

const grpcPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: grpc
  namespace: default
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: tiefighter}
    toPorts:
    - ports: [{port: "%d", protocol: TCP}]
      rules:
        http:
        - method: POST
          path: /grpc.health.v1.Health/Check
`

func TestH2C_GRPCMethodsByPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("deathstar", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	port := ln.Addr().(*net.TCPAddr).Port
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(grpcPolicy, port)), ln.Addr().String())
	conn, err := grpc.NewClient("passthrough:///"+tp.ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.11")}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	for range 3 { // several streams on one HTTP/2 connection
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "deathstar"})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("allowed Check: %v %v", resp, err)
		}
	}
	_, err = client.List(ctx, &healthpb.HealthListRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied List: %v, want PermissionDenied", err)
	}
	// The connection still serves allowed calls after a denial.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "deathstar"}); err != nil {
		t.Fatalf("Check after a denial: %v", err)
	}
	tp.events.waitFor(t, "denied List", func(ev monitor.Event) bool {
		return ev.L7 != nil && ev.L7.Path == "/grpc.health.v1.Health/List" && ev.Verdict == monitor.VerdictDenied && ev.L7.Status == 403
	})
}
