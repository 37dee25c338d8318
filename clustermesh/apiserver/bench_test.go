package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/kvstore"
)

// writeBatched puts kvs in transactions of 100 operations (below etcd's default limit of 128).
func writeBatched(b testing.TB, kv *kvstore.Client, ops []kvstore.Op) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for len(ops) > 0 {
		n := min(100, len(ops))
		if _, err := kv.Txn(ctx, nil, ops[:n], nil); err != nil {
			b.Fatal(err)
		}
		ops = ops[n:]
	}
}

// populate writes n identities, one in 100 of them org=empire (what the scoped benchmarks
// select), each with one address, and 100 nodes: a large remote cluster.
func populate(b testing.TB, kv *kvstore.Client, n int) {
	b.Helper()
	ops := make([]kvstore.Op, 0, 2*n+100)
	for i := range n {
		org := "alliance"
		if i%100 == 0 {
			org = "empire"
		}
		id := uint32(1<<16 | (i + 256))
		lbls := labels(b, "k8s:org="+org, fmt.Sprintf("k8s:app=app-%d", i), "k8s:io.kubernetes.pod.namespace=default")
		master, _ := json.Marshal(map[string]string{"labels": lbls.String()})
		entry, _ := json.Marshal(map[string]any{"identity": id, "hostIP": "192.168.0.1", "node": fmt.Sprintf("node%d", i%100), "endpointID": i})
		ops = append(ops,
			kvstore.OpPut(identityKey(id), master, kvstore.NoLease),
			kvstore.OpPut(fmt.Sprintf("%s10.%d.%d.%d/32", ipcachePrefix, 64+i>>16, (i>>8)&255, i&255), entry, kvstore.NoLease))
	}
	for i := range 100 {
		node, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("node%d", i), "ips": []string{fmt.Sprintf("192.168.0.%d", i+1)}, "podCIDRs": []string{fmt.Sprintf("10.%d.0.0/16", 64+i)}})
		ops = append(ops, kvstore.OpPut(fmt.Sprintf("%snode%d", nodesPrefix, i), node, kvstore.NoLease))
	}
	writeBatched(b, kv, ops)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkInitialSync measures how long a client takes from opening a Watch to sync_done, and
// how much it receives, for a full watch and a selector-scoped one (1% of the identities),
// against clusters of 10,000 and 50,000 identities. view-MB is the server's heap for its view
// of the cluster (shared by every stream).
//
//	go test -run XXX -bench InitialSync -benchtime 5x ./clustermesh/apiserver
func BenchmarkInitialSync(b *testing.B) {
	for _, n := range []int{10_000, 50_000} {
		b.Run(fmt.Sprintf("identities=%d", n), func(b *testing.B) {
			kv := startEtcd(b)
			populate(b, kv, n)
			p := newPKI(b)
			before := heapInUse()
			srv := startServer(b, kv, p, nil)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := srv.view.waitSynced(ctx); err != nil {
				b.Fatal(err)
			}
			viewMB := float64(heapInUse()-before) / (1 << 20)
			client := dial(b, srv, p.source(b, p.ca, "cluster2", certs.RoleAgent), p.token(b, "cluster2"))
			for _, tc := range []struct {
				name string
				req  *apiv1.MeshWatchRequest
			}{
				{"full", &apiv1.MeshWatchRequest{}},
				{"selector", &apiv1.MeshWatchRequest{Selectors: []*apiv1.MeshSelector{empireSelector()}}},
			} {
				b.Run(tc.name, func(b *testing.B) {
					b.ReportAllocs()
					var changes, bytes int
					for b.Loop() {
						changes, bytes = 0, 0
						sctx, scancel := context.WithCancel(ctx)
						s, err := client.Watch(sctx, tc.req)
						if err != nil {
							b.Fatal(err)
						}
						for {
							r, err := s.Recv()
							if err != nil {
								b.Fatal(err)
							}
							changes += len(r.Changes)
							bytes += proto.Size(r)
							if r.SyncDone {
								break
							}
						}
						scancel()
					}
					b.ReportMetric(float64(changes), "changes")
					b.ReportMetric(float64(bytes)/(1<<20), "MB-sent")
					b.ReportMetric(viewMB, "view-MB")
				})
			}
		})
	}
}

// BenchmarkFanout measures changes delivered per second to N synced full-watch streams while the
// cluster writes ipcache updates in batches; streams=1 is the baseline the others compare to.
//
//	go test -run XXX -bench Fanout -benchtime 3x ./clustermesh/apiserver
func BenchmarkFanout(b *testing.B) {
	const perRound = 5000
	for _, streams := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			kv := startEtcd(b)
			p := newPKI(b)
			putIdentity(b, kv, 1001, labels(b, "k8s:org=empire"))
			srv := startServer(b, kv, p, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// Clients spread over 10 connections, as agents would each have their own.
			var ws []*watchStream
			var clients []apiv1.MeshClient
			for i := range min(streams, 10) {
				clients = append(clients, dial(b, srv, p.source(b, p.ca, fmt.Sprintf("cluster%d", i+2), certs.RoleAgent), p.token(b, fmt.Sprintf("cluster%d", i+2))))
			}
			for i := range streams {
				w := openWatch(b, clients[i%len(clients)], &apiv1.MeshWatchRequest{Kinds: []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_IPCACHE}})
				w.recvUntil("sync", time.Minute, func(m *mirror) bool { return m.synced })
				ws = append(ws, w)
			}
			entry, _ := json.Marshal(map[string]any{"identity": 1001, "hostIP": "192.168.0.1", "node": "node1"})
			round := 0
			var elapsed time.Duration
			for b.Loop() {
				round++
				ops := make([]kvstore.Op, perRound)
				for i := range ops {
					ops[i] = kvstore.OpPut(fmt.Sprintf("%s10.%d.%d.%d/32", ipcachePrefix, round, i>>8, i&255), entry, kvstore.NoLease)
				}
				start := time.Now()
				done := make(chan error, len(ws))
				for _, w := range ws {
					go func() {
						got := 0
						for got < perRound {
							r, err := w.stream.Recv()
							if err != nil {
								done <- err
								return
							}
							got += len(r.Changes)
						}
						done <- nil
					}()
				}
				writeBatched(b, kv, ops)
				for range ws {
					select {
					case err := <-done:
						if err != nil {
							b.Fatal(err)
						}
					case <-ctx.Done():
						b.Fatal("changes not delivered")
					}
				}
				elapsed += time.Since(start)
			}
			b.ReportMetric(float64(perRound*streams*round)/elapsed.Seconds(), "changes/s")
			b.ReportMetric(float64(perRound*round)/elapsed.Seconds(), "etcd-events/s")
		})
	}
}

// BenchmarkFanoutBaselineEtcdWatchPerClient is the design the server avoids: every client with
// its own etcd watch (no TLS, no gRPC of ours, but N watchers in etcd). Compare changes/s with
// BenchmarkFanout at the same number of streams.
//
//	go test -run XXX -bench 'Fanout' -benchtime 3x ./clustermesh/apiserver
func BenchmarkFanoutBaselineEtcdWatchPerClient(b *testing.B) {
	const perRound = 5000
	for _, streams := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			kv := startEtcd(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			watches := make([]<-chan kvstore.Event, streams)
			for i := range watches {
				watches[i] = kv.Watch(ctx, ipcachePrefix)
				if ev := <-watches[i]; ev.Type != kvstore.EventSynced {
					b.Fatalf("first event %v, want synced", ev.Type)
				}
			}
			entry, _ := json.Marshal(map[string]any{"identity": 1001, "hostIP": "192.168.0.1", "node": "node1"})
			round := 0
			var elapsed time.Duration
			for b.Loop() {
				round++
				ops := make([]kvstore.Op, perRound)
				for i := range ops {
					ops[i] = kvstore.OpPut(fmt.Sprintf("%s10.%d.%d.%d/32", ipcachePrefix, round, i>>8, i&255), entry, kvstore.NoLease)
				}
				start := time.Now()
				done := make(chan error, streams)
				for _, w := range watches {
					go func() {
						for range perRound {
							if _, ok := <-w; !ok {
								done <- fmt.Errorf("watch closed")
								return
							}
						}
						done <- nil
					}()
				}
				writeBatched(b, kv, ops)
				for range watches {
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				elapsed += time.Since(start)
			}
			b.ReportMetric(float64(perRound*streams*round)/elapsed.Seconds(), "changes/s")
			b.ReportMetric(float64(perRound*round)/elapsed.Seconds(), "etcd-events/s")
		})
	}
}
