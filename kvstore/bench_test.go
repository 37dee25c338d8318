package kvstore_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// The benchmarks compare the kvstore package with raw clientv3 calls on the same embedded server in
// the same run. The two sides alternate in small rounds, so that noise from other processes on the
// machine hits both alike. Each reports clientv3-*, kvstore-* and overhead-ratio (kvstore cost over
// clientv3 cost; the package must stay within 1.10).

type benchEnv struct {
	kv  *kvstore.Client
	raw *clientv3.Client
}

func newBenchEnv(b *testing.B) benchEnv {
	b.Helper()
	srv := etcdtest.Start(b)
	kv := etcdtest.NewClient(b, srv, etcdtest.WithPrefix("bench/"))
	raw, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()[:1], DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	return benchEnv{kv: kv, raw: raw}
}

// throughputWorkers is the number of concurrent callers in the throughput benchmarks: enough to keep
// etcd's batching busy on two cores.
const (
	throughputWorkers = 8
	roundOps          = 400
)

// compareThroughput runs b.N operations per side with throughputWorkers goroutines, in rounds of
// roundOps per side, alternating which side goes first. It reports each side's operations per
// second, overhead-ratio (the median over rounds of kvstore time / clientv3 time: a round's two
// halves run back to back, so a burst of load from elsewhere on the machine cancels out) and
// total-ratio (total times, which such bursts skew either way).
func compareThroughput(b *testing.B, raw, wrapped func(ctx context.Context, i int) error) {
	ctx := context.Background()
	var spent [2]time.Duration
	var ratios []float64
	sides := [2]func(context.Context, int) error{raw, wrapped}
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(roundOps, b.N-done)
		var took [2]time.Duration
		for k := range 2 {
			side := (k + round) % 2
			start := time.Now()
			var wg sync.WaitGroup
			for w := range throughputWorkers {
				wg.Go(func() {
					for i := w; i < n; i += throughputWorkers {
						if err := sides[side](ctx, done+i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			took[side] = time.Since(start)
			spent[side] += took[side]
		}
		ratios = append(ratios, took[1].Seconds()/took[0].Seconds())
		done += n
	}
	b.StopTimer()
	rawOps := float64(b.N) / spent[0].Seconds()
	kvOps := float64(b.N) / spent[1].Seconds()
	b.ReportMetric(rawOps, "clientv3-ops/s")
	b.ReportMetric(kvOps, "kvstore-ops/s")
	b.ReportMetric(median(ratios), "overhead-ratio")
	b.ReportMetric(rawOps/kvOps, "total-ratio")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func BenchmarkPutThroughput(b *testing.B) {
	env := newBenchEnv(b)
	value := []byte(`{"identity":1234,"hostIP":"10.0.0.1","node":"node-1","endpointID":42}`)
	compareThroughput(b,
		func(ctx context.Context, i int) error {
			_, err := env.raw.Put(ctx, "bench/raw/"+strconv.Itoa(i%1000), string(value))
			return err
		},
		func(ctx context.Context, i int) error {
			return env.kv.Put(ctx, "kv/"+strconv.Itoa(i%1000), value, kvstore.NoLease)
		})
}

func BenchmarkGetThroughput(b *testing.B) {
	env := newBenchEnv(b)
	ctx := context.Background()
	for i := range 1000 {
		v := fmt.Sprintf(`{"id":%d}`, i)
		if _, err := env.raw.Put(ctx, "bench/raw/"+strconv.Itoa(i), v); err != nil {
			b.Fatal(err)
		}
		if err := env.kv.Put(ctx, "kv/"+strconv.Itoa(i), []byte(v), kvstore.NoLease); err != nil {
			b.Fatal(err)
		}
	}
	compareThroughput(b,
		func(ctx context.Context, i int) error {
			resp, err := env.raw.Get(ctx, "bench/raw/"+strconv.Itoa(i%1000))
			if err == nil && len(resp.Kvs) != 1 {
				err = fmt.Errorf("raw get %d: %d keys", i%1000, len(resp.Kvs))
			}
			return err
		},
		func(ctx context.Context, i int) error {
			_, found, err := env.kv.Get(ctx, "kv/"+strconv.Itoa(i%1000))
			if err == nil && !found {
				err = fmt.Errorf("kvstore get %d: not found", i%1000)
			}
			return err
		})
}

// watchers is the fan-out of the watch benchmark: one writer, this many watchers per side.
const watchers = 50

// BenchmarkWatchDelivery measures the latency from a Put until each of 50 watchers has the change,
// one change at a time (so that it measures delivery, not queueing), alternating between a change
// under the raw watchers' prefix and one under the kvstore watchers' prefix.
func BenchmarkWatchDelivery(b *testing.B) {
	env := newBenchEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Each watcher reports the latency of every change it sees on its side's channel.
	var lat [2]chan time.Duration
	for side := range lat {
		lat[side] = make(chan time.Duration, watchers*4)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stamp := func(v []byte) time.Duration {
		ns, _ := strconv.ParseInt(string(v), 10, 64)
		return time.Since(time.Unix(0, ns))
	}
	for range watchers {
		rawCh := env.raw.Watch(ctx, "bench/rawwatch/", clientv3.WithPrefix())
		wg.Go(func() {
			for resp := range rawCh {
				for _, ev := range resp.Events {
					lat[0] <- stamp(ev.Kv.Value)
				}
			}
		})
		kvCh := env.kv.Watch(ctx, "kvwatch/")
		for ev := range kvCh { // the initial listing of an empty prefix: just the marker
			if ev.Type == kvstore.EventSynced {
				break
			}
		}
		wg.Go(func() {
			for ev := range kvCh {
				if ev.Type == kvstore.EventUpsert {
					lat[1] <- stamp(ev.Value)
				}
			}
		})
	}
	// Raw watches have no synced marker: make sure they are established before measuring.
	if _, err := env.raw.Put(ctx, "bench/rawwatch/warmup", strconv.FormatInt(time.Now().UnixNano(), 10)); err != nil {
		b.Fatal(err)
	}
	for range watchers {
		<-lat[0]
	}

	put := [2]func(string) error{
		func(v string) error { _, err := env.raw.Put(ctx, "bench/rawwatch/k", v); return err },
		func(v string) error { return env.kv.Put(ctx, "kvwatch/k", []byte(v), kvstore.NoLease) },
	}
	samples := [2][]time.Duration{}
	var ratios []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var roundMean [2]time.Duration
		for k := range 2 {
			side := (k + i) % 2
			if err := put[side](strconv.FormatInt(time.Now().UnixNano(), 10)); err != nil {
				b.Fatal(err)
			}
			var sum time.Duration
			for range watchers {
				d := <-lat[side]
				sum += d
				samples[side] = append(samples[side], d)
			}
			roundMean[side] = sum / watchers
		}
		ratios = append(ratios, roundMean[1].Seconds()/roundMean[0].Seconds())
	}
	b.StopTimer()
	raw, kv := summarize(samples[0]), summarize(samples[1])
	b.ReportMetric(float64(raw.mean.Microseconds()), "clientv3-mean-µs")
	b.ReportMetric(float64(kv.mean.Microseconds()), "kvstore-mean-µs")
	b.ReportMetric(float64(raw.p99.Microseconds()), "clientv3-p99-µs")
	b.ReportMetric(float64(kv.p99.Microseconds()), "kvstore-p99-µs")
	// Per change: the kvstore watchers' mean latency over the raw watchers' for the neighbouring
	// change; the median of those pairs, and the ratio of the overall means.
	b.ReportMetric(median(ratios), "overhead-ratio")
	b.ReportMetric(kv.mean.Seconds()/raw.mean.Seconds(), "total-ratio")
}

type latencySummary struct{ mean, p99 time.Duration }

func summarize(d []time.Duration) latencySummary {
	if len(d) == 0 {
		return latencySummary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return latencySummary{mean: sum / time.Duration(len(s)), p99: s[len(s)*99/100]}
}
