package remote_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/clustermesh/remote/remotetest"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/policy/api"
)

// arrivals tells when ipcache prefixes reached the consumer.
type arrivals struct {
	mu      sync.Mutex
	waiting map[netip.Prefix]*arrival
	synced  chan struct{}
	once    sync.Once
}

type arrival struct {
	done chan struct{}
	at   time.Time
}

func (a *arrivals) expect(p netip.Prefix) *arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := &arrival{done: make(chan struct{})}
	a.waiting[p] = w
	return w
}

func (a *arrivals) Apply(ch remote.Changes) {
	now := time.Now()
	a.mu.Lock()
	for _, e := range ch.IPCache {
		if w, ok := a.waiting[e.Prefix]; ok {
			w.at = now
			close(w.done)
			delete(a.waiting, e.Prefix)
		}
	}
	a.mu.Unlock()
	if ch.Synced {
		a.once.Do(func() { close(a.synced) })
	}
}

// BenchmarkPropagation measures how long a new endpoint of a remote cluster takes from its
// ipcache write in that cluster's etcd to a consumer of the remote client (through the mesh API
// server, mTLS and the client), with N endpoints already in the cluster. The baseline is the same
// write seen by a plain etcd watch of the cluster's own etcd: the ratio is what the mesh hop costs.
// Reports the initial sync time, p50/p99 of both, and the ratio of the p50s.
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			mesh := remotetest.NewMesh(b)
			c2 := mesh.NewCluster(b, "cluster2", 2)
			ids := make([]identity.ID, 100)
			for i := range ids {
				ids[i] = c2.PutIdentity(uint32(300+i), fmt.Sprintf("k8s:app=app%d", i))
			}
			entries := make(map[string]identity.ID, n)
			for i := range n {
				entries[fmt.Sprintf("10.2.%d.%d/32", i/250, i%250+1)] = ids[i%len(ids)]
			}
			c2.PutEndpoints(entries, "n1")
			c2.Start()

			arr := &arrivals{waiting: map[netip.Prefix]*arrival{}, synced: make(chan struct{})}
			client, err := remote.New(remote.Options{Config: c2.RemoteConfig("cluster1", b.TempDir()), Consumer: arr, Logger: remotetest.Quiet()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(done)
				_ = client.Run(ctx)
			}()
			b.Cleanup(func() {
				cancel()
				<-done
			})
			select {
			case <-arr.synced:
			case <-time.After(time.Minute):
				b.Fatal("no initial sync within a minute")
			}
			syncTime := time.Since(start)

			// The baseline: a watch straight on the cluster's etcd.
			etcdSeen := make(chan string, 16)
			wctx, wcancel := context.WithCancel(context.Background())
			defer wcancel()
			events := c2.KV.Watch(wctx, "ipcache/")
			for ev := range events {
				if ev.Type == kvstore.EventSynced {
					break
				}
			}
			go func() {
				for ev := range events {
					if ev.Type == kvstore.EventUpsert {
						etcdSeen <- ev.Key
					}
				}
			}()

			var viaMesh, etcd []time.Duration
			b.ResetTimer()
			for i := range b.N {
				prefix := netip.MustParsePrefix(fmt.Sprintf("10.3.%d.%d/32", i/250%250, i%250+1))
				if i >= 250*250 {
					b.Fatal("out of addresses")
				}
				arrived := arr.expect(prefix)
				t0 := time.Now()
				c2.PutEndpoint(prefix.String(), ids[i%len(ids)], "n2")
				want := fmt.Sprintf("ipcache/%s/32", prefix.Addr())
				for key := range etcdSeen {
					if key == want {
						etcd = append(etcd, time.Since(t0))
						break
					}
				}
				select {
				case <-arrived.done:
					viaMesh = append(viaMesh, arrived.at.Sub(t0))
				case <-time.After(10 * time.Second):
					b.Fatalf("endpoint %s not delivered within 10s", prefix)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(syncTime.Milliseconds()), "sync-ms")
			b.ReportMetric(ms(pct(viaMesh, 50)), "p50-ms")
			b.ReportMetric(ms(pct(viaMesh, 99)), "p99-ms")
			b.ReportMetric(ms(pct(etcd, 50)), "etcd-p50-ms")
			b.ReportMetric(ms(pct(etcd, 99)), "etcd-p99-ms")
			if e := pct(etcd, 50); e > 0 {
				b.ReportMetric(float64(pct(viaMesh, 50))/float64(e), "p50-ratio-vs-etcd")
			}
		})
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// syncWaiter is a consumer that keeps nothing: the client's own view is what is measured.
type syncWaiter struct {
	synced chan struct{}
	once   sync.Once
}

func (s *syncWaiter) Apply(ch remote.Changes) {
	if ch.Synced {
		s.once.Do(func() { close(s.synced) })
	}
}

// BenchmarkImportMemory measures the heap a client holds after importing a remote cluster of
// 50,000 identities (each with one endpoint): with a full watch, and with a selector-scoped watch
// selecting 1% of them (the baseline it is compared with is the full watch). Reports the heap
// growth from before the client started to after its initial sync, and the sync time.
func BenchmarkImportMemory(b *testing.B) {
	const n = 50000
	mesh := remotetest.NewMesh(b)
	c2 := mesh.NewCluster(b, "cluster2", 2)
	ops := make([]kvstore.Op, 0, 100)
	flush := func() {
		if _, err := c2.KV.Txn(context.Background(), nil, ops, nil); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	entries := make(map[string]identity.ID, n)
	for i := range n {
		id := c2.IdentityID(uint32(256 + i))
		lbls := c2.Labels(fmt.Sprintf("k8s:app=app%d", i%100), fmt.Sprintf("k8s:name=pod%d", i), "k8s:io.kubernetes.pod.namespace=default")
		if ops = append(ops, kvstore.OpPut(fmt.Sprintf("%s%d", identity.MasterPrefix, id), []byte(`{"labels":"`+lbls.String()+`"}`), kvstore.NoLease)); len(ops) == cap(ops) {
			flush()
		}
		entries[fmt.Sprintf("10.%d.%d.%d/32", 20+i/62500, i/250%250, i%250+1)] = id
	}
	if len(ops) > 0 {
		flush()
	}
	c2.PutEndpoints(entries, "n1")
	c2.Start()
	cfg := c2.RemoteConfig("cluster1", b.TempDir())

	var fullMB float64
	for _, tc := range []struct {
		name      string
		selectors [][]api.Requirement
	}{
		{"full", nil},
		{"selectors-1pct", [][]api.Requirement{{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: []string{"app7"}}}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var heapMB float64
			var syncTime time.Duration
			for range b.N {
				before := heapInUse()
				w := &syncWaiter{synced: make(chan struct{})}
				client, err := remote.New(remote.Options{Config: cfg, Consumer: w, Logger: remotetest.Quiet(),
					Selectors: func() [][]api.Requirement { return tc.selectors }})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				start := time.Now()
				go func() {
					defer close(done)
					_ = client.Run(ctx)
				}()
				select {
				case <-w.synced:
				case <-time.After(2 * time.Minute):
					b.Fatal("no initial sync")
				}
				syncTime = time.Since(start)
				heapMB = float64(heapInUse()-before) / (1 << 20)
				if st := client.Status(); tc.selectors == nil && st.Identities != n {
					b.Fatalf("full watch imported %d identities, want %d", st.Identities, n)
				}
				cancel()
				<-done
				runtime.KeepAlive(client)
			}
			b.ReportMetric(heapMB, "client-heap-MB")
			b.ReportMetric(float64(syncTime.Milliseconds()), "sync-ms")
			if tc.selectors == nil {
				fullMB = heapMB
			} else if heapMB > 0 {
				b.ReportMetric(fullMB/heapMB, "full-vs-scoped-heap-ratio")
			}
		})
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
