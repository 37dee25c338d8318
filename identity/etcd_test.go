package identity

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// Helpers shared by the tests that run against a real embedded etcd.

var testCluster = ClusterConfig{Name: "test", ID: 1}

type allocOpt func(*AllocatorConfig)

func withRange(min, max uint32) allocOpt {
	return func(c *AllocatorConfig) { c.MinLocal, c.MaxLocal = min, max }
}

func withLeaseTTL(d time.Duration) allocOpt { return func(c *AllocatorConfig) { c.LeaseTTL = d } }

func withOnLost(f func(Identity)) allocOpt { return func(c *AllocatorConfig) { c.OnLost = f } }

// newTestAllocator starts an allocator for node on its own client (a simulated node); both are
// closed when the test ends.
func newTestAllocator(t testing.TB, srv etcdtest.Endpointer, node string, opts ...allocOpt) (*Allocator, *kvstore.Client) {
	t.Helper()
	kv := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	cfg := AllocatorConfig{Node: node, Cluster: testCluster, Logger: quietLogger()}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := NewAllocator(ctx, kv, cfg)
	if err != nil {
		t.Fatalf("start allocator %s: %v", node, err)
	}
	t.Cleanup(func() { a.Close() })
	return a, kv
}

func quietClient(c *kvstore.Config) { c.Logger = quietLogger() }

// testCtx is a context bounded well within the package's test budget.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// labelSet returns the i-th of a family of distinct endpoint label sets.
func labelSet(t testing.TB, i int) Labels {
	t.Helper()
	l, err := EndpointLabels(map[string]string{"app": fmt.Sprintf("app-%d", i)}, fmt.Sprintf("ns-%d", i%7), nil, testCluster.Name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// storeState is every identity key in etcd, decoded.
type storeState struct {
	masters map[ID]Labels
	values  map[string]ID
	refs    map[ID][]string
}

func readStore(t testing.TB, kv *kvstore.Client) storeState {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	st := storeState{masters: map[ID]Labels{}, values: map[string]ID{}, refs: map[ID][]string{}}
	kvs, _, err := kv.List(ctx, "identities/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range kvs {
		switch {
		case strings.HasPrefix(e.Key, MasterPrefix):
			id, err := parseMasterKey(e.Key)
			if err != nil {
				t.Fatalf("bad master key %q", e.Key)
			}
			lbls, err := decodeMaster(e.Value)
			if err != nil {
				t.Fatalf("master %d: %v", id, err)
			}
			st.masters[id] = lbls
		case strings.HasPrefix(e.Key, ValuePrefix):
			id, err := decodeValue(e.Value)
			if err != nil {
				t.Fatalf("value %s: %v", e.Key, err)
			}
			st.values[strings.TrimPrefix(e.Key, ValuePrefix)] = id
		case strings.HasPrefix(e.Key, RefPrefix):
			id, node, err := parseRefKey(e.Key)
			if err != nil {
				t.Fatal(err)
			}
			st.refs[id] = append(st.refs[id], node)
		}
	}
	return st
}

// checkConsistent fails unless masters and value keys are a bijection: one number per label set,
// one label set per number.
func (st storeState) checkConsistent(t testing.TB) {
	t.Helper()
	seen := map[string]ID{}
	for id, lbls := range st.masters {
		d := lbls.Digest()
		if other, dup := seen[d]; dup {
			t.Errorf("labels %s have two identities: %d and %d", lbls, other, id)
		}
		seen[d] = id
		if st.values[d] != id {
			t.Errorf("identity %d (%s): value key says %d", id, lbls, st.values[d])
		}
	}
	for d, id := range st.values {
		if lbls, ok := st.masters[id]; !ok || lbls.Digest() != d {
			t.Errorf("value key %s -> %d has no matching master", d, id)
		}
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newTestGC returns a collector logging only errors.
func newTestGC(t testing.TB, kv *kvstore.Client, cfg GCConfig) *GC {
	t.Helper()
	cfg.Logger = quietLogger()
	gc, err := NewGC(kv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return gc
}

// gcTotals adds up what background GC rounds did.
type gcTotals struct {
	mu sync.Mutex
	GCStats
	rounds int
}

func (g *gcTotals) get() (GCStats, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.GCStats, g.rounds
}

// runGC runs GC rounds in the background until the test ends.
func runGC(t testing.TB, kv *kvstore.Client, interval time.Duration) *gcTotals {
	ctx, cancel := context.WithCancel(context.Background())
	totals := &gcTotals{}
	gc := newTestGC(t, kv, GCConfig{RateLimit: 10000, Burst: 100})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			st, err := gc.RunOnce(ctx)
			if err == nil {
				totals.mu.Lock()
				totals.rounds++
				totals.Deleted += st.Deleted
				totals.OrphanValues += st.OrphanValues
				totals.Changed += st.Changed
				totals.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(interval):
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return totals
}
