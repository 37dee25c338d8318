package identity

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

func TestGC_DeletesOnlyWhatStaysUnreferencedForARound(t *testing.T) {
	srv := etcdtest.Start(t)
	a, kv := newTestAllocator(t, srv, "node-a")
	ctx := testCtx(t, 20*time.Second)
	held, _, err := a.Allocate(ctx, labelSet(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	gone, _, err := a.Allocate(ctx, labelSet(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := a.Allocate(ctx, labelSet(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []ID{gone, back} {
		if _, err := a.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan value key (its master vanished) and an orphan master (its value key vanished).
	orphanValue := labelSet(t, 4)
	if err := kv.Put(ctx, valueKey(orphanValue.Digest()), encodeValue(ID(1<<16|9000)), 0); err != nil {
		t.Fatal(err)
	}
	orphanMaster := ID(1<<16 | 9001)
	if err := kv.Put(ctx, masterKey(orphanMaster), encodeMaster(labelSet(t, 5)), 0); err != nil {
		t.Fatal(err)
	}

	gc := newTestGC(t, kv, GCConfig{})
	st, err := gc.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted+st.OrphanValues != 0 || st.Marked != 4 || st.Identities != 4 || st.Referenced != 1 {
		t.Fatalf("first round %+v: want 4 marked (2 released, orphan value, orphan master), nothing deleted", st)
	}
	// Between the rounds, node-a allocates one released label set again: it must survive.
	if id, _, err := a.Allocate(ctx, labelSet(t, 3)); err != nil || id != back {
		t.Fatalf("re-allocation = %d %v, want %d", id, err, back)
	}
	st, err = gc.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 2 || st.OrphanValues != 1 {
		t.Fatalf("second round %+v: want the released identity and the orphan master deleted, and the orphan value", st)
	}
	s := readStore(t, kv)
	s.checkConsistent(t)
	for _, id := range []ID{held, back} {
		if _, ok := s.masters[id]; !ok {
			t.Errorf("held identity %d deleted", id)
		}
	}
	for _, id := range []ID{gone, orphanMaster} {
		if _, ok := s.masters[id]; ok {
			t.Errorf("garbage identity %d kept", id)
		}
	}
	if len(s.masters) != 2 || len(s.values) != 2 {
		t.Fatalf("left %d masters and %d values, want 2 and 2", len(s.masters), len(s.values))
	}
}

// TestGC_NeverDeletesAHeldIdentity races allocations and releases of the same few label sets on
// several nodes against GC rounds run back to back: whenever Allocate returns, the identity's
// master must hold the labels, and stay there while held.
func TestGC_NeverDeletesAHeldIdentity(t *testing.T) {
	srv := etcdtest.Start(t)
	const nodes, rounds = 4, 100
	gcKV := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	totals := runGC(t, gcKV, 0)
	allocs := make([]*Allocator, nodes)
	for i := range allocs {
		allocs[i], _ = newTestAllocator(t, srv, "node-"+string(rune('a'+i)))
	}
	// Enough label sets that each is often idle long enough for GC to delete it, and then
	// allocated again, while a few are always busy.
	sets := make([]Labels, 12)
	for i := range sets {
		sets[i] = labelSet(t, i)
	}
	ctx := testCtx(t, 60*time.Second)
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				lbls := sets[rand.IntN(len(sets))]
				id, _, err := allocs[n].Allocate(ctx, lbls)
				if err != nil {
					t.Error(err)
					return
				}
				m, found, err := gcKV.Get(ctx, masterKey(id))
				if err != nil {
					t.Error(err)
					return
				}
				if got, derr := decodeMaster(m.Value); !found || derr != nil || !got.Equal(lbls) {
					t.Errorf("node %d round %d: holding %d but etcd has %q (found %v)", n, r, id, m.Value, found)
					return
				}
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				if _, err := allocs[n].Release(ctx, id); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st, gcRounds := totals.get()
	t.Logf("%d GC rounds: %d deleted, %d deletions lost to an allocation", gcRounds, st.Deleted, st.Changed)
	if st.Deleted == 0 {
		t.Error("GC never deleted anything: the race was not exercised")
	}
}

func TestGC_RateLimit(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	ctx := testCtx(t, 30*time.Second)
	const n = 30
	for i := range n {
		id := ID(1<<16 | uint32(1000+i))
		lbls := labelSet(t, i)
		if err := kv.Put(ctx, masterKey(id), encodeMaster(lbls), 0); err != nil {
			t.Fatal(err)
		}
		if err := kv.Put(ctx, valueKey(lbls.Digest()), encodeValue(id), 0); err != nil {
			t.Fatal(err)
		}
	}
	gc := newTestGC(t, kv, GCConfig{RateLimit: 20, Burst: 1})
	if _, err := gc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := gc.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != n {
		t.Fatalf("deleted %d, want %d", st.Deleted, n)
	}
	// 30 deletions at 20/s with a burst of 1 take at least 29/20 s.
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Fatalf("30 deletions took %s: not rate limited to 20/s", d)
	}
	// A cancelled context stops a round in its rate-limit wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := gc.RunOnce(cctx); err == nil {
		t.Fatal("round with a cancelled context succeeded")
	}
}
