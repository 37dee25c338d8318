package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// BenchmarkAllocateNewLabels measures allocations of label sets nobody has allocated before, by 1
// and 16 concurrent allocators (one per simulated node, each with its own etcd client), for the
// palisade allocator and, in the same run, for the reference lock-based allocator below, on an
// embedded etcd with and without fsync. It reports throughput (allocs/s), p50/p99 latency and the
// throughput ratio (speedup).
//
// The machine's cores are shared with other work whose load drifts within seconds, so the two
// allocators alternate in rounds (which goes first alternates too) and speedup is the median of
// the per-round throughput ratios.
//
//	go test -run '^$' -bench BenchmarkAllocateNewLabels -benchtime 4000x ./identity/
func BenchmarkAllocateNewLabels(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		// fsync=true is how the embedded etcd of an install runs; etcdtest turns fsync off, which
		// shows the allocators' own cost without the disk's.
		srv := etcdtest.Start(b, func(c *embedded.Config) { c.UnsafeNoFsync = !fsync })
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("fsync=%v/allocators=%d", fsync, n), func(b *testing.B) {
				prefix := func(algo string) string {
					return fmt.Sprintf("bench/%s/%d/%d/", algo, n, benchRuns.Add(1))
				}
				reg := prometheus.NewRegistry()
				pal := newPalisadeAllocs(b, srv, n, prefix("palisade"), reg)
				ref := newLockAllocs(b, srv, n, prefix("lock"))
				// Starting 2×n nodes is not what is measured (and would make the framework
				// pick a far too small b.N).
				b.ResetTimer()
				var palRes, refRes loadResult
				var ratios []float64
				rounds := max(1, min(benchRounds, b.N/(4*n)))
				for r := range rounds {
					count := b.N / rounds
					if r == rounds-1 {
						count = b.N - count*(rounds-1)
					}
					var p, q loadResult
					if r%2 == 0 {
						p, q = measure(b, n, count, pal), measure(b, n, count, ref)
					} else {
						q, p = measure(b, n, count, ref), measure(b, n, count, pal)
					}
					ratios = append(ratios, p.perSec()/q.perSec())
					palRes.add(p)
					refRes.add(q)
				}
				slices.Sort(ratios)
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(palRes.perSec(), "allocs/s")
				b.ReportMetric(palRes.percentile(0.50), "p50-ms")
				b.ReportMetric(palRes.percentile(0.99), "p99-ms")
				b.ReportMetric(refRes.perSec(), "ref-allocs/s")
				b.ReportMetric(refRes.percentile(0.50), "ref-p50-ms")
				b.ReportMetric(refRes.percentile(0.99), "ref-p99-ms")
				b.ReportMetric(ratios[len(ratios)/2], "speedup")
				// Transactions lost to a race (same labels, or a number taken) per allocation.
				b.ReportMetric(metricValue(b, reg, "palisade_identity_allocation_conflicts_total", "", "")/float64(b.N), "conflicts/op")
			})
		}
	}
}

// benchRounds is how many rounds the allocators alternate in.
const benchRounds = 10

// benchRuns numbers the runs of a benchmark so that each works under a fresh key prefix.
var benchRuns atomic.Int64

// loadResult is what one or more measured runs gave.
type loadResult struct {
	count     int
	elapsed   time.Duration
	latencies []time.Duration
}

func (r *loadResult) add(o loadResult) {
	r.count += o.count
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
}

func (r loadResult) perSec() float64 { return float64(r.count) / r.elapsed.Seconds() }

// percentile returns the p-th latency in milliseconds.
func (r loadResult) percentile(p float64) float64 {
	l := slices.Clone(r.latencies)
	slices.Sort(l)
	return l[min(len(l)-1, int(float64(len(l))*p))].Seconds() * 1000
}

// measure runs total allocations of fresh label sets spread over the workers and times each.
func measure(b *testing.B, workers, total int, allocs []func(context.Context, Labels) (ID, error)) loadResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sets := make([]Labels, total)
	tag := rand.Uint64()
	for i := range sets {
		sets[i] = NewLabels(
			Label{Source: SourceK8s, Key: "app", Value: fmt.Sprintf("bench-%x-%d", tag, i)},
			Label{Source: SourceK8s, Key: LabelNamespace, Value: "bench"},
		)
	}
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, total)
		wg        sync.WaitGroup
		failed    atomic.Value
	)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				t0 := time.Now()
				if _, err := allocs[w](ctx, sets[i]); err != nil {
					failed.Store(err)
					return
				}
				d := time.Since(t0)
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return loadResult{count: total, elapsed: elapsed, latencies: latencies}
}

func newPalisadeAllocs(b *testing.B, srv etcdtest.Endpointer, n int, prefix string, reg prometheus.Registerer) []func(context.Context, Labels) (ID, error) {
	b.Helper()
	out := make([]func(context.Context, Labels) (ID, error), n)
	for i := range out {
		kv := etcdtest.NewClient(b, srv, etcdtest.WithPrefix(prefix), etcdtest.WithConfig(quietClient))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		a, err := NewAllocator(ctx, kv, AllocatorConfig{Node: fmt.Sprintf("node-%d", i), Cluster: testCluster, Logger: quietLogger(), Registerer: reg})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { a.Close() })
		out[i] = func(ctx context.Context, l Labels) (ID, error) {
			id, _, err := a.Allocate(ctx, l)
			return id, err
		}
	}
	return out
}

// lockAllocator is the reference: the classic kvstore allocator algorithm, serialized by one
// cluster-wide lock key. Take the lock (create-only, with the node's lease so that a dead holder
// cannot block the cluster forever; waiters poll), read the value key, and if the labels have no
// identity yet create-only a master key at a number its watch-backed cache shows free and write
// the value key; write the node's reference; unlock. Like the palisade allocator, every node
// watches the identities (a real node must, to resolve them), so both pay the same fan-out. It
// only exists in this benchmark.
type lockAllocator struct {
	kv    *kvstore.Client
	node  string
	lease kvstore.LeaseID
	rng   idRange
	cache *Cache
}

const lockKey = "locks/identities"

func newLockAllocs(b *testing.B, srv etcdtest.Endpointer, n int, prefix string) []func(context.Context, Labels) (ID, error) {
	b.Helper()
	rng, err := newIDRange(DefaultLayout, testCluster.ID, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]func(context.Context, Labels) (ID, error), n)
	for i := range out {
		kv := etcdtest.NewClient(b, srv, etcdtest.WithPrefix(prefix), etcdtest.WithConfig(quietClient))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		sess, err := kv.NewSession(ctx, 30*time.Second)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sess.Close(context.Background()) })
		lease, err := sess.Acquire(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		cache := NewCache(kv, CacheConfig{Logger: quietLogger()})
		b.Cleanup(cache.Close)
		if err := cache.WaitSynced(context.Background()); err != nil {
			b.Fatal(err)
		}
		la := &lockAllocator{kv: kv, node: fmt.Sprintf("node-%d", i), lease: lease, rng: rng, cache: cache}
		out[i] = la.allocate
	}
	return out
}

func (l *lockAllocator) allocate(ctx context.Context, lbls Labels) (ID, error) {
	if err := l.lock(ctx); err != nil {
		return 0, err
	}
	defer l.kv.Delete(context.Background(), lockKey)
	vk := valueKey(lbls.Digest())
	v, found, err := l.kv.Get(ctx, vk)
	if err != nil {
		return 0, err
	}
	var id ID
	if found {
		if id, err = decodeValue(v.Value); err != nil {
			return 0, err
		}
	} else {
		tried := map[ID]bool{}
		for {
			var ok bool
			if id, ok = pickFree(l.rng, func(id ID) bool { return tried[id] || l.cache.has(id) }); !ok {
				return 0, fmt.Errorf("reference allocator: %w", ErrExhausted)
			}
			tried[id] = true
			created, err := l.kv.CreateOnly(ctx, masterKey(id), encodeMaster(lbls), kvstore.NoLease)
			if err != nil {
				return 0, err
			}
			if created {
				break
			}
		}
		if err := l.kv.Put(ctx, vk, encodeValue(id), kvstore.NoLease); err != nil {
			return 0, err
		}
	}
	return id, l.kv.Put(ctx, refKey(id, l.node), refValue, l.lease)
}

func (l *lockAllocator) lock(ctx context.Context) error {
	wait := 500 * time.Microsecond
	for {
		ok, err := l.kv.CreateOnly(ctx, lockKey, []byte(l.node), l.lease)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, 8*time.Millisecond)
	}
}
