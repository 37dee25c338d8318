package apiserver

import (
	"context"
	"fmt"
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
	"github.com/palisade-mesh/palisade/kvstore"
)

func TestLimits_RateLimitPerClientCluster(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv := startServer(t, kv, p, func(o *Options) { o.RateLimit, o.RateBurst = 0.01, 3 })
	c2 := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	c3 := dial(t, srv, p.source(t, p.ca, "cluster3", certs.RoleAgent), p.token(t, "cluster3"))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	for i := range 3 {
		if _, err := c2.Info(ctx, &apiv1.MeshInfoRequest{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	_, err := c2.Info(ctx, &apiv1.MeshInfoRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "rate limit: cluster cluster2") {
		t.Fatalf("call beyond the burst: %v, want ResourceExhausted naming the rate limit", err)
	}
	s, err := c2.Watch(ctx, &apiv1.MeshWatchRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Watch beyond the burst: %v, want ResourceExhausted", err)
	}
	// Another cluster has its own budget.
	if _, err := c3.Info(ctx, &apiv1.MeshInfoRequest{}); err != nil {
		t.Fatalf("cluster3 limited by cluster2's calls: %v", err)
	}
}

func TestLimits_WatchStreamsPerClientCluster(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv := startServer(t, kv, p, func(o *Options) { o.MaxStreamsPerCluster = 2 })
	c2 := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	c3 := dial(t, srv, p.source(t, p.ca, "cluster3", certs.RoleAgent), p.token(t, "cluster3"))

	first := openWatch(t, c2, &apiv1.MeshWatchRequest{})
	first.recvUntil("first stream synced", waitFor, func(m *mirror) bool { return m.synced })
	ctx, cancel := context.WithCancel(context.Background())
	second, err := c2.Watch(ctx, &apiv1.MeshWatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Recv(); err != nil {
		t.Fatal(err)
	}
	third := openWatch(t, c2, &apiv1.MeshWatchRequest{})
	if err := third.recvErr(waitFor); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "cluster cluster2 already has 2 Watch streams open") {
		t.Fatalf("third stream: %v, want ResourceExhausted naming the stream limit", err)
	}
	other := openWatch(t, c3, &apiv1.MeshWatchRequest{})
	other.recvUntil("cluster3 stream synced", waitFor, func(m *mirror) bool { return m.synced })

	// Ending a stream makes room for another.
	cancel()
	deadline := time.Now().Add(waitFor)
	for {
		w := openWatch(t, c2, &apiv1.MeshWatchRequest{})
		r, err := w.stream.Recv()
		if err == nil && r.SyncDone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after closing a stream: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := counterValue(srv.metrics.clients); got != 2 {
		t.Errorf("connected clusters = %v, want 2", got)
	}
}

// smallWindowClient dials with fixed 64 KiB flow-control windows (no BDP growth), as a client
// that stops reading would leave them: the server's sends block after a few tens of KiB.
func smallWindowClient(t *testing.T, srv *Server, p *testPKI, cluster string) apiv1.MeshClient {
	t.Helper()
	cfg, err := meshtls.ClientConfig(p.source(t, p.ca, cluster, certs.RoleAgent), meshtls.ClientOptions{ServerCluster: servedCluster})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithPerRPCCredentials(bearer(p.token(t, cluster))), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return apiv1.NewMeshClient(conn)
}

// putBigNodes writes n nodes of about 17 KB each.
func putBigNodes(t *testing.T, kv *kvstore.Client, n int) {
	ips := make([]string, 1000)
	for i := range ips {
		ips[i] = fmt.Sprintf("192.168.%d.%d", i/250, i%250+1)
	}
	for i := range n {
		putJSON(t, kv, fmt.Sprintf("%snode%03d", nodesPrefix, i), map[string]any{"name": fmt.Sprintf("node%03d", i), "ips": ips, "podCIDRs": []string{"10.0.0.0/24"}})
	}
}

func TestLimits_InitialSyncsAtOnceAreBounded(t *testing.T) {
	kv := startEtcd(t)
	putBigNodes(t, kv, 40) // 700 KB: more than flow control lets through to a client not reading
	p := newPKI(t)
	srv := startServer(t, kv, p, func(o *Options) { o.MaxConcurrentSyncs = 1 })

	// A client that never reads holds the only slot while its initial state is being sent.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := smallWindowClient(t, srv, p, "cluster2").Watch(ctx, &apiv1.MeshWatchRequest{}); err != nil {
		t.Fatal(err)
	}
	// The call returns before the server runs the stream: wait until it holds the slot, or the
	// second client may reach the server first and take it.
	deadline := time.Now().Add(waitFor)
	for len(srv.syncSlots) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first stream never took the initial-sync slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waiting := openWatch(t, dial(t, srv, p.source(t, p.ca, "cluster3", certs.RoleAgent), p.token(t, "cluster3")), &apiv1.MeshWatchRequest{})
	got := make(chan error, 1)
	go func() {
		_, err := waiting.stream.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second stream got its initial state while the only slot was held (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	cancel() // the first client goes away: its slot is free
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("second stream still waiting after the first one ended")
	}
}

func TestLimits_SlowClientIsDisconnectedAndItsQueueFreed(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	const queue, nodes = 50, 120
	srv := startServer(t, kv, p, func(o *Options) { o.SendQueueLength = queue })
	slow := openWatch(t, smallWindowClient(t, srv, p, "cluster2"), &apiv1.MeshWatchRequest{})
	slow.recvUntil("synced", waitFor, func(m *mirror) bool { return m.synced })
	// A well-behaved client on another connection must not be affected.
	good := openWatch(t, dial(t, srv, p.source(t, p.ca, "cluster3", certs.RoleAgent), p.token(t, "cluster3")), &apiv1.MeshWatchRequest{})
	good.recvUntil("synced", waitFor, func(m *mirror) bool { return m.synced })
	goodDone := make(chan error, 1)
	go func() {
		for len(good.m.state) < nodes {
			r, err := good.stream.Recv()
			if err != nil {
				goodDone <- err
				return
			}
			good.m.apply(r)
		}
		goodDone <- nil
	}()

	// The slow client stops reading; nodes with many addresses make large changes.
	putBigNodes(t, kv, nodes)
	deadline := time.Now().Add(waitFor)
	for counterValue(srv.metrics.slowDisconnect) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("slow client not disconnected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Its subscription is gone: later changes are not queued for it anywhere.
	for {
		srv.view.mu.Lock()
		subs := len(srv.view.subs)
		srv.view.mu.Unlock()
		if subs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions after the disconnect, want only the good client's", subs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-goodDone:
		if err != nil {
			t.Fatalf("the reading client: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the reading client did not get every node")
	}

	// When the slow client reads again it finds what was buffered, then the reason.
	err := slow.recvErr(waitFor)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "client too slow") {
		t.Fatalf("slow client: %v, want ResourceExhausted \"client too slow\"", err)
	}
	if slow.m.received >= nodes {
		t.Fatalf("slow client received all %d changes; the test did not make it slow", slow.m.received)
	}
}
