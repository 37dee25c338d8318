package identity

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// quietLogger keeps the test output to errors: retries while etcd is away are expected noise.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func TestAllocator_SameLabelsSameID(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a")
	b, _ := newTestAllocator(t, srv, "node-b")
	ctx := testCtx(t, 30*time.Second)
	lbls := labelSet(t, 1)

	idA, newA, err := a.Allocate(ctx, lbls)
	if err != nil {
		t.Fatal(err)
	}
	idB, newB, err := b.Allocate(ctx, lbls)
	if err != nil {
		t.Fatal(err)
	}
	if idA != idB {
		t.Fatalf("same labels got %d and %d", idA, idB)
	}
	if !newA || newB {
		t.Fatalf("isNew = %v, %v; want true for the first allocation only", newA, newB)
	}
	if k := DefaultLayout.KindOf(idA); k != KindCluster || DefaultLayout.ClusterOf(idA) != testCluster.ID {
		t.Fatalf("identity %d: kind %v cluster %d", idA, k, DefaultLayout.ClusterOf(idA))
	}
	// A repeat on the same node is served locally and counted.
	again, isNew, err := a.Allocate(ctx, lbls)
	if err != nil || again != idA || isNew {
		t.Fatalf("repeat = %d %v %v", again, isNew, err)
	}
	if got := a.Held()[idA]; got != 2 {
		t.Fatalf("uses of %d on node-a = %d, want 2", idA, got)
	}
	st := readStore(t, kv)
	st.checkConsistent(t)
	if !st.masters[idA].Equal(lbls) {
		t.Fatalf("stored labels %s, want %s", st.masters[idA], lbls)
	}
	if got := strings.Join(st.refs[idA], ","); got != "node-a,node-b" {
		t.Fatalf("references %q", got)
	}
	if got, ok := a.Lookup(idA); !ok || !got.Equal(lbls) {
		t.Fatalf("Lookup = %s %v", got, ok)
	}
	eventually(t, 5*time.Second, "node-b's cache to learn the identity", func() bool {
		id, ok := b.LookupByLabels(lbls)
		return ok && id == idA
	})

	// Releasing drops the reference only with the last use.
	if released, err := a.Release(ctx, idA); err != nil || released {
		t.Fatalf("first release = %v %v", released, err)
	}
	if released, err := a.Release(ctx, idA); err != nil || !released {
		t.Fatalf("second release = %v %v", released, err)
	}
	if got := strings.Join(readStore(t, kv).refs[idA], ","); got != "node-b" {
		t.Fatalf("references after release %q", got)
	}
	if _, err := a.Release(ctx, idA); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("third release: %v, want ErrNotHeld", err)
	}
}

func TestAllocator_ReservedNeverStored(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a")
	ctx := testCtx(t, 10*time.Second)
	for _, id := range ReservedIDs() {
		lbls, _ := ReservedLabels(id)
		got, isNew, err := a.Allocate(ctx, lbls)
		if err != nil || got != id || isNew {
			t.Fatalf("Allocate(%s) = %d %v %v", lbls, got, isNew, err)
		}
		if released, err := a.Release(ctx, id); err != nil || released {
			t.Fatalf("Release(%s) = %v %v", id, released, err)
		}
	}
	if st := readStore(t, kv); len(st.masters)+len(st.values)+len(st.refs) != 0 {
		t.Fatalf("reserved identities reached etcd: %+v", st)
	}
}

func TestAllocator_RejectsBadLabels(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a")
	ctx := testCtx(t, 10*time.Second)
	app := Label{Source: SourceK8s, Key: "app", Value: "web"}
	ns := Label{Source: SourceK8s, Key: LabelNamespace, Value: "default"}
	cases := []struct {
		name string
		lbls Labels
		want string
	}{
		{"empty", Labels{}, "empty label set"},
		{"bad character", Labels{{Source: SourceK8s, Key: "app", Value: "a b"}}, "not allowed"},
		{"unknown source", Labels{{Source: "bogus", Key: "app", Value: "x"}}, `unknown source "bogus"`},
		{"selector source", Labels{{Source: SourceAny, Key: "app", Value: "x"}}, "only valid in selectors"},
		{"not canonical", Labels{ns, app}, "canonical order"},
		{"one key twice", Labels{app, {Source: SourceK8s, Key: "app", Value: "db"}}, "one key twice"},
		{"reserved with others", NewLabels(app, Label{Source: SourceReserved, Key: "host"}), "exactly one reserved label"},
		{"unknown reserved", Labels{{Source: SourceReserved, Key: "nope"}}, "exactly one reserved label"},
		{"cidr", Labels{{Source: SourceCIDR, Key: "10.0.0.0/8"}}, "node-local"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := a.Allocate(ctx, c.lbls)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	if st := readStore(t, kv); len(st.masters)+len(st.values)+len(st.refs) != 0 {
		t.Fatalf("bad input changed etcd: %+v", st)
	}
}

func TestNewAllocator_RejectsBadConfig(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	ctx := testCtx(t, 20*time.Second)
	if _, err := EnsureClusterConfig(ctx, kv, ClusterConfig{Name: "east", ID: 3}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  AllocatorConfig
		want []string
	}{
		{"no node", AllocatorConfig{Cluster: ClusterConfig{Name: "east", ID: 3}}, []string{"node name"}},
		{"node with slash", AllocatorConfig{Node: "a/b", Cluster: ClusterConfig{Name: "east", ID: 3}}, []string{`"a/b"`}},
		{"cluster ID 0", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "east", ID: 0}}, []string{"cluster ID 0 out of range 1..255"}},
		{"cluster ID 256", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "east", ID: 256}}, []string{"cluster ID 256 out of range 1..255"}},
		{"other name", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "west", ID: 3}}, []string{`"east"`, `"west"`}},
		{"other ID", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "east", ID: 4}}, []string{"ID 3", "ID 4"}},
		{"other layout", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "east", ID: 3, MaxConnectedClusters: 511}}, []string{"255", "511"}},
		{"range outside layout", AllocatorConfig{Node: "n", Cluster: ClusterConfig{Name: "east", ID: 3}, MinLocal: 100, MaxLocal: 200}, []string{"100..200"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewAllocator(ctx, kv, c.cfg)
			if err == nil {
				a.Close()
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
	cfg, found, err := GetClusterConfig(ctx, kv)
	if err != nil || !found || cfg.Name != "east" || cfg.ID != 3 || cfg.MaxConnectedClusters != 255 {
		t.Fatalf("stored config changed: %+v %v %v", cfg, found, err)
	}
}

func TestEnsureClusterConfig_OneWinnerUnderRace(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	ctx := testCtx(t, 20*time.Second)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		wins  []string
		errsN int
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d", i)
			_, err := EnsureClusterConfig(ctx, kv, ClusterConfig{Name: name, ID: uint32(i + 1)})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !strings.Contains(err.Error(), "cluster config mismatch") {
					t.Errorf("%s: %v", name, err)
				}
				errsN++
				return
			}
			wins = append(wins, name)
		}()
	}
	wg.Wait()
	if len(wins) != 1 || errsN != 7 {
		t.Fatalf("winners %v, refused %d; want exactly one winner", wins, errsN)
	}
	// The winner's own check passes again; capabilities do not matter.
	n := wins[0]
	id := uint32(n[1]-'0') + 1
	if _, err := EnsureClusterConfig(ctx, kv, ClusterConfig{Name: n, ID: id, Capabilities: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
}

func TestAllocator_Exhaustion(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a", withRange(1000, 1009))
	b, _ := newTestAllocator(t, srv, "node-b", withRange(1000, 1009))
	ctx := testCtx(t, 30*time.Second)
	var ids []ID
	for i := range 10 {
		alloc := a
		if i%2 == 1 {
			alloc = b // two nodes fill it, so one cache is always behind
		}
		id, _, err := alloc.Allocate(ctx, labelSet(t, i))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	_, _, err := a.Allocate(ctx, labelSet(t, 10))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("11th allocation: %v, want ErrExhausted", err)
	}
	for _, want := range []string{"all 10 identities", "66536..66545", "1000..1009", "cluster 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("exhaustion error %q does not name %q", err, want)
		}
	}
	// Release one; GC reclaims it after two rounds; the next allocation gets it.
	if _, err := b.Release(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	gc := newTestGC(t, kv, GCConfig{})
	for range 2 {
		if _, err := gc.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	id, isNew, err := a.Allocate(ctx, labelSet(t, 10))
	if err != nil || !isNew || id != ids[1] {
		t.Fatalf("after release: %d %v %v, want the freed %d", id, isNew, err, ids[1])
	}
	readStore(t, kv).checkConsistent(t)
}

// TestAllocator_ConcurrentNodes is the scale test of issue 3: 32 nodes, each with its own etcd
// client, allocate and release 500 label sets with heavy overlap while GC runs, then every label
// set has exactly one identity, no two share one and etcd's labels match.
func TestAllocator_ConcurrentNodes(t *testing.T) {
	srv := etcdtest.StartRestartable(t)
	concurrentNodes(t, srv, nil)
}

// TestAllocator_ConcurrentNodesEtcdRestart is the same with etcd killed and restarted in the middle.
func TestAllocator_ConcurrentNodesEtcdRestart(t *testing.T) {
	srv := etcdtest.StartRestartable(t)
	concurrentNodes(t, srv, func() {
		srv.Stop()
		time.Sleep(time.Second)
		srv.Restart()
	})
}

func concurrentNodes(t *testing.T, srv *etcdtest.Embedded, disrupt func()) {
	const (
		nodes     = 32
		labelSets = 500
		perNode   = 48 // 32*48 = 1536 allocations over 500 sets: each set ~3 nodes
	)
	if testing.Short() {
		t.Skip("scale test")
	}
	gcKV := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	allocs := make([]*Allocator, nodes)
	for i := range allocs {
		allocs[i], _ = newTestAllocator(t, srv, fmt.Sprintf("node-%02d", i), withLeaseTTL(20*time.Second))
	}
	gcStats := runGC(t, gcKV, 50*time.Millisecond)
	sets := make([]Labels, labelSets)
	for i := range sets {
		sets[i] = labelSet(t, i)
	}
	// A bound against a hang, not a speed requirement: under -race next to the e2e packages the
	// 1,536 allocations with GC running can take over a minute on two cores.
	ctx := testCtx(t, 3*time.Minute)

	// Each node allocates a random selection (every set is covered by the first nodes' share),
	// releasing and re-allocating some as it goes so that GC sees identities come and go.
	held := make([]map[int]ID, nodes)
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	var (
		disruptOnce sync.Once
		allocated   atomic.Int64 // allocations done
		atStop      atomic.Int64 // allocations done when etcd went away
	)
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := map[int]ID{}
			for k := range perNode {
				i := rand.IntN(labelSets)
				if k < labelSets/nodes+1 {
					i = (n*(labelSets/nodes+1) + k) % labelSets
				}
				if n == 0 && k == perNode/3 && disrupt != nil {
					disruptOnce.Do(func() {
						atStop.Store(-1)
						go func() {
							atStop.Store(allocated.Load())
							disrupt()
						}()
					})
				}
				id, _, err := allocs[n].Allocate(ctx, sets[i])
				if err != nil {
					errs <- fmt.Errorf("node %d: %w", n, err)
					return
				}
				allocated.Add(1)
				if prev, ok := mine[i]; ok && prev != id {
					errs <- fmt.Errorf("node %d: labels %d got %d, then %d while held", n, i, prev, id)
					return
				}
				if _, ok := mine[i]; ok {
					// Held twice: drop one use straight away.
					if _, err := allocs[n].Release(ctx, id); err != nil {
						errs <- fmt.Errorf("node %d: %w", n, err)
						return
					}
				}
				mine[i] = id
				if k%5 == 4 {
					// Churn: release a random held set completely.
					for j, rid := range mine {
						if j != i {
							if _, err := allocs[n].Release(ctx, rid); err != nil && !errors.Is(err, ErrNotHeld) {
								errs <- fmt.Errorf("node %d: release: %w", n, err)
								return
							}
							delete(mine, j)
							break
						}
					}
				}
			}
			held[n] = mine
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Every held set: one identity, the same on every node, stored with its labels and value key.
	byLabels := map[int]ID{}
	byID := map[ID]int{}
	for n, mine := range held {
		for i, id := range mine {
			if prev, ok := byLabels[i]; ok && prev != id {
				t.Fatalf("label set %d has identities %d and %d (node %d)", i, prev, id, n)
			}
			if j, ok := byID[id]; ok && j != i {
				t.Fatalf("identity %d held for label sets %d and %d", id, j, i)
			}
			byLabels[i], byID[id] = id, i
		}
	}
	st := readStore(t, gcKV)
	st.checkConsistent(t)
	for i, id := range byLabels {
		if !st.masters[id].Equal(sets[i]) {
			t.Fatalf("identity %d: etcd has labels %s, want %s", id, st.masters[id], sets[i])
		}
	}
	covered := 0
	for i := range sets {
		if _, ok := byLabels[i]; ok {
			covered++
		}
	}
	if covered < labelSets*8/10 {
		t.Fatalf("only %d of %d label sets held at the end; the test lost its overlap", covered, labelSets)
	}
	// Every one of the 500 label sets: allocated once more (on some node, concurrently, GC still
	// running), it gets the identity it is held under if it is held, and no two sets share one.
	final := make([]ID, labelSets)
	var fwg sync.WaitGroup
	for n := range 8 {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for i := n; i < labelSets; i += 8 {
				id, _, err := allocs[(n*5)%nodes].Allocate(ctx, sets[i])
				if err != nil {
					t.Errorf("final allocation of set %d: %v", i, err)
					return
				}
				final[i] = id
			}
		}()
	}
	fwg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	owner := map[ID]int{}
	for i, id := range final {
		if j, dup := owner[id]; dup {
			t.Fatalf("label sets %d and %d both got identity %d", j, i, id)
		}
		owner[id] = i
		if held, ok := byLabels[i]; ok && held != id {
			t.Fatalf("label set %d is held as %d but allocating it again gave %d", i, held, id)
		}
	}
	st = readStore(t, gcKV)
	st.checkConsistent(t)
	for i, id := range final {
		if !st.masters[id].Equal(sets[i]) {
			t.Fatalf("identity %d: etcd has labels %s, want %s", id, st.masters[id], sets[i])
		}
	}
	// Every reference in etcd belongs to a holder and vice versa (once repairs settle).
	eventually(t, 20*time.Second, "references to match the holders", func() bool {
		st := readStore(t, gcKV)
		want := 0
		for n, a := range allocs {
			for id := range a.Held() {
				want++
				if !slices.Contains(st.refs[id], fmt.Sprintf("node-%02d", n)) {
					return false
				}
			}
		}
		got := 0
		for _, r := range st.refs {
			got += len(r)
		}
		return got == want
	})
	gcs, rounds := gcStats.get()
	t.Logf("%d label sets held by %d nodes, %d identities in etcd; %d allocations, GC: %d rounds, %d deleted, %d deletions lost to an allocation",
		covered, nodes, len(st.masters), allocated.Load(), rounds, gcs.Deleted, gcs.Changed)
	if gcs.Deleted == 0 {
		t.Error("GC deleted nothing: the test did not exercise GC against allocation")
	}
	if disrupt != nil {
		if n := atStop.Load(); n <= 0 || n >= allocated.Load() {
			t.Errorf("etcd went away after %d of %d allocations: not in the middle", n, allocated.Load())
		}
	}
}

func TestAllocator_RestoresVanishedMaster(t *testing.T) {
	srv := etcdtest.Start(t)
	lost := make(chan Identity, 1)
	a, kv := newTestAllocator(t, srv, "node-a", withOnLost(func(i Identity) { lost <- i }))
	ctx := testCtx(t, 30*time.Second)
	lbls := labelSet(t, 1)
	id, _, err := a.Allocate(ctx, lbls)
	if err != nil {
		t.Fatal(err)
	}
	// Someone deletes the master and value keys (a GC bug, an operator): the holder restores them.
	if _, err := kv.Delete(ctx, masterKey(id)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Delete(ctx, valueKey(lbls.Digest())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the master key to be restored", func() bool {
		st := readStore(t, kv)
		return st.masters[id].Equal(lbls) && st.values[lbls.Digest()] == id
	})

	// Now the number goes to another label set (an operator's edit): the holder must not overwrite
	// it, and reports the identity lost.
	other := labelSet(t, 2)
	if err := kv.Put(ctx, masterKey(id), encodeMaster(other), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-lost:
		if got.ID != id || !got.Labels.Equal(lbls) {
			t.Fatalf("lost %+v", got)
		}
	case <-ctx.Done():
		t.Fatal("identity not reported lost")
	}
	st := readStore(t, kv)
	if !st.masters[id].Equal(other) {
		t.Fatalf("master overwritten: %s", st.masters[id])
	}
	if len(st.refs[id]) != 0 {
		t.Fatalf("lost identity still referenced by %v", st.refs[id])
	}
	if _, ok := a.Held()[id]; ok {
		t.Fatal("lost identity still held")
	}
	// Allocating the labels again gives them a fresh number.
	id2, isNew, err := a.Allocate(ctx, lbls)
	if err != nil || id2 == id || !isNew {
		t.Fatalf("re-allocation = %d %v %v", id2, isNew, err)
	}
}

func TestAllocator_LeaseExpiryFreesReferences(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kvA := newTestAllocator(t, srv, "node-a", withLeaseTTL(2*time.Second))
	b, kv := newTestAllocator(t, srv, "node-b")
	ctx := testCtx(t, 40*time.Second)
	onlyA, _, err := a.Allocate(ctx, labelSet(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	shared, _, err := a.Allocate(ctx, labelSet(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := b.Allocate(ctx, labelSet(t, 2)); err != nil || id != shared {
		t.Fatalf("node-b: %d %v", id, err)
	}
	onlyB, _, err := b.Allocate(ctx, labelSet(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	// An identity nobody references from the start (its node released it).
	released, _, err := b.Allocate(ctx, labelSet(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Release(ctx, released); err != nil {
		t.Fatal(err)
	}

	// node-a dies: its client goes away without revoking its lease.
	kvA.Close()
	eventually(t, 15*time.Second, "node-a's references to expire", func() bool {
		st := readStore(t, kv)
		return len(st.refs[onlyA]) == 0 && strings.Join(st.refs[shared], ",") == "node-b"
	})
	gc := newTestGC(t, kv, GCConfig{})
	var total GCStats
	for range 2 {
		st, err := gc.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total.Deleted += st.Deleted
	}
	st := readStore(t, kv)
	st.checkConsistent(t)
	if _, ok := st.masters[onlyA]; ok {
		t.Errorf("identity %d of the dead node survived GC", onlyA)
	}
	if _, ok := st.masters[released]; ok {
		t.Errorf("released identity %d survived GC", released)
	}
	for _, id := range []ID{shared, onlyB} {
		if _, ok := st.masters[id]; !ok {
			t.Errorf("identity %d held by node-b was collected", id)
		}
	}
	if total.Deleted != 2 {
		t.Errorf("GC deleted %d identities, want 2", total.Deleted)
	}
}

func TestAllocator_RestartKeepsIdentities(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a", withLeaseTTL(2*time.Second))
	ctx := testCtx(t, 30*time.Second)
	lbls := labelSet(t, 1)
	id, _, err := a.Allocate(ctx, lbls)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CloseKeepReferences(); err != nil {
		t.Fatal(err)
	}
	if refs := readStore(t, kv).refs[id]; len(refs) != 1 {
		t.Fatalf("references after CloseKeepReferences: %v", refs)
	}
	// The restarted agent allocates the same labels and takes the reference over before the old
	// lease expires; after the expiry the reference is still there.
	a2, _ := newTestAllocator(t, srv, "node-a", withLeaseTTL(2*time.Second))
	id2, isNew, err := a2.Allocate(ctx, lbls)
	if err != nil || id2 != id || isNew {
		t.Fatalf("after restart: %d %v %v, want %d", id2, isNew, err, id)
	}
	time.Sleep(3 * time.Second)
	if refs := readStore(t, kv).refs[id]; len(refs) != 1 {
		t.Fatalf("references after the old lease expired: %v", refs)
	}
	if released, err := a2.ReleaseLabels(ctx, lbls); err != nil || !released {
		t.Fatalf("ReleaseLabels = %v %v", released, err)
	}
	if refs := readStore(t, kv).refs[id]; len(refs) != 0 {
		t.Fatalf("references after release: %v", refs)
	}
	if _, err := a2.ReleaseLabels(ctx, lbls); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second ReleaseLabels: %v", err)
	}
}

func TestAllocator_FailsFastWhenClosed(t *testing.T) {
	srv := etcdtest.Start(t)
	a, _ := newTestAllocator(t, srv, "node-a")
	ctx := testCtx(t, 20*time.Second)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := a.Allocate(ctx, labelSet(t, 1)); err == nil {
		t.Fatal("allocation on a closed allocator succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("allocation on a closed allocator took %s to fail", d)
	}
}

func TestAllocator_RestoresReferencesAfterLeaseLoss(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a", withLeaseTTL(5*time.Second))
	ctx := testCtx(t, 30*time.Second)
	var ids []ID
	for i := range 3 {
		id, _, err := a.Allocate(ctx, labelSet(t, i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ref, found, err := kv.Get(ctx, refKey(ids[0], "node-a"))
	if err != nil || !found {
		t.Fatalf("reference: %v %v", found, err)
	}
	// The lease goes (as after an etcd outage longer than its TTL), and with it every reference;
	// meanwhile GC deletes one identity whose references are gone.
	if err := kv.RevokeLease(ctx, ref.Lease); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Txn(ctx, nil, []kvstore.Op{
		kvstore.OpDelete(masterKey(ids[2])), kvstore.OpDelete(valueKey(labelSet(t, 2).Digest())),
	}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "references and the deleted identity to be restored", func() bool {
		st := readStore(t, kv)
		for i, id := range ids {
			if len(st.refs[id]) != 1 || !st.masters[id].Equal(labelSet(t, i)) {
				return false
			}
		}
		return true
	})
	ref2, _, err := kv.Get(ctx, refKey(ids[0], "node-a"))
	if err != nil || ref2.Lease == ref.Lease || ref2.Lease == 0 {
		t.Fatalf("restored reference on lease %x (old %x): %v", ref2.Lease, ref.Lease, err)
	}
	readStore(t, kv).checkConsistent(t)
	// And the node keeps working on its new session.
	if _, _, err := a.Allocate(ctx, labelSet(t, 3)); err != nil {
		t.Fatal(err)
	}
}

// TestAllocator_PartitionedNodeComesBack: a node cut off from etcd for longer than its lease TTL
// loses its references; GC reclaims the identities only it held; one of those numbers goes to
// other labels. When the node is back it restores what it can with create-only writes, and
// reports the identity whose number was taken without overwriting it.
func TestAllocator_PartitionedNodeComesBack(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv)
	lost := make(chan Identity, 4)
	a, _ := newTestAllocator(t, proxy, "node-a", withLeaseTTL(2*time.Second), withRange(1000, 1002),
		withOnLost(func(i Identity) { lost <- i }))
	b, kv := newTestAllocator(t, srv, "node-b", withRange(1000, 1002))
	ctx := testCtx(t, 60*time.Second)
	kept, taken := labelSet(t, 1), labelSet(t, 2)
	idKept, _, err := a.Allocate(ctx, kept)
	if err != nil {
		t.Fatal(err)
	}
	idTaken, _, err := a.Allocate(ctx, taken)
	if err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	eventually(t, 20*time.Second, "node-a's references to expire", func() bool {
		return len(readStore(t, kv).refs) == 0
	})
	gc := newTestGC(t, kv, GCConfig{})
	for range 2 {
		if _, err := gc.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(readStore(t, kv).masters); n != 0 {
		t.Fatalf("GC left %d identities nobody references", n)
	}
	// Node-b fills the range with other labels, except one number: the one node-a held for kept.
	var others []Labels
	for i := 10; len(others) < 2; i++ {
		lbls := labelSet(t, i)
		id, _, err := b.Allocate(ctx, lbls)
		if err != nil {
			t.Fatal(err)
		}
		if id == idKept {
			// Give the number back and try other labels, so that idTaken is the one reused.
			if _, err := b.Release(ctx, id); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Txn(ctx, nil, []kvstore.Op{kvstore.OpDelete(masterKey(id)), kvstore.OpDelete(valueKey(lbls.Digest()))}, nil); err != nil {
				t.Fatal(err)
			}
			continue
		}
		others = append(others, lbls)
	}
	before := readStore(t, kv)

	proxy.Restore()
	select {
	case got := <-lost:
		if got.ID != idTaken || !got.Labels.Equal(taken) {
			t.Fatalf("lost %d (%s), want %d (%s)", got.ID, got.Labels, idTaken, taken)
		}
	case <-ctx.Done():
		t.Fatal("node-a did not report the identity whose number was taken")
	}
	eventually(t, 20*time.Second, "node-a to restore the identity nobody took", func() bool {
		st := readStore(t, kv)
		return st.masters[idKept].Equal(kept) && strings.Join(st.refs[idKept], ",") == "node-a"
	})
	after := readStore(t, kv)
	after.checkConsistent(t)
	for id, lbls := range before.masters {
		if !after.masters[id].Equal(lbls) {
			t.Fatalf("identity %d of node-b changed from %s to %s", id, lbls, after.masters[id])
		}
	}
	if _, ok := a.Held()[idTaken]; ok {
		t.Fatal("node-a still holds the lost identity")
	}
	select {
	case extra := <-lost:
		t.Fatalf("also lost %+v", extra)
	default:
	}
}
