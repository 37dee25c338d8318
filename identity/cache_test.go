package identity

import (
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// recorder collects what a subscriber receives.
type recorder struct {
	mu      sync.Mutex
	changes []Change
	ids     map[ID]Labels
}

func (r *recorder) fn(ch Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[ID]Labels{}
	}
	r.changes = append(r.changes, ch)
	for _, d := range ch.Deleted {
		delete(r.ids, d.ID)
	}
	for _, a := range ch.Added {
		r.ids[a.ID] = a.Labels
	}
}

func (r *recorder) labels(id ID) (Labels, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.ids[id]
	return l, ok
}

func (r *recorder) synced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.changes {
		if c.Synced {
			return true
		}
	}
	return false
}

func TestCache_SubscribersSeeAddsAndDeletes(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv, etcdtest.WithConfig(quietClient))
	ctx := testCtx(t, 20*time.Second)
	web, db := labelSet(t, 1), labelSet(t, 2)
	idWeb, idDB, idBad := ID(1<<16|300), ID(1<<16|301), ID(1<<16|302)
	if err := kv.Put(ctx, masterKey(idWeb), encodeMaster(web), 0); err != nil {
		t.Fatal(err)
	}
	// A master key nobody can trust is ignored, not turned into an identity.
	if err := kv.Put(ctx, masterKey(idBad), []byte(`{"labels":"bogus:x=y"}`), 0); err != nil {
		t.Fatal(err)
	}

	early := &recorder{}
	c := NewCache(kv, CacheConfig{Logger: quietLogger()})
	defer c.Close()
	c.Subscribe(early.fn) // before the first sync: reserved now, stored identities with Synced
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	late := &recorder{}
	c.Subscribe(late.fn)
	for name, r := range map[string]*recorder{"early": early, "late": late} {
		eventually(t, 5*time.Second, name+" subscriber to sync", r.synced)
		if l, ok := r.labels(idWeb); !ok || !l.Equal(web) {
			t.Fatalf("%s subscriber: %d = %s %v", name, idWeb, l, ok)
		}
		if l, ok := r.labels(IDWorld); !ok || l.String() != "reserved:world" {
			t.Fatalf("%s subscriber: world = %s %v", name, l, ok)
		}
		if _, ok := r.labels(idBad); ok {
			t.Fatalf("%s subscriber got the malformed identity", name)
		}
	}
	if got, ok := c.Lookup(idWeb); !ok || !got.Equal(web) {
		t.Fatalf("Lookup = %s %v", got, ok)
	}
	if got, ok := c.LookupByLabels(web); !ok || got != idWeb {
		t.Fatalf("LookupByLabels = %d %v", got, ok)
	}
	if got, ok := c.LookupByLabels(mustLabels(t, "reserved:host")); !ok || got != IDHost {
		t.Fatalf("LookupByLabels(reserved:host) = %d %v", got, ok)
	}

	// Changes after the sync: an addition, a relabel (delete + add in one change), a deletion.
	if err := kv.Put(ctx, masterKey(idDB), encodeMaster(db), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the new identity", func() bool { _, ok := late.labels(idDB); return ok })
	if err := kv.Put(ctx, masterKey(idDB), encodeMaster(web), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the relabel", func() bool { l, _ := late.labels(idDB); return l.Equal(web) })
	if _, err := kv.Delete(ctx, masterKey(idDB)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the deletion", func() bool { _, ok := late.labels(idDB); return !ok })
	if _, ok := c.Lookup(idDB); ok {
		t.Fatal("deleted identity still in the cache")
	}
	// The digest index still maps web to its own identity, not the relabelled-then-deleted one.
	if got, ok := c.LookupByLabels(web); !ok || got != idWeb {
		t.Fatalf("LookupByLabels(web) after relabel = %d %v", got, ok)
	}
	// A malformed value replacing a good one removes the identity.
	if err := kv.Put(ctx, masterKey(idWeb), []byte("garbage"), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the corrupted identity to go", func() bool { _, ok := late.labels(idWeb); return !ok })

	early.mu.Lock()
	defer early.mu.Unlock()
	syncs := 0
	for i, ch := range early.changes {
		if ch.Synced {
			syncs++
			if i > 1 {
				t.Fatalf("early subscriber: Synced in change %d, want the replay or the change after it", i)
			}
		}
	}
	if syncs != 1 {
		t.Fatalf("early subscriber got %d synced changes, want 1", syncs)
	}
	if len(c.List()) != len(ReservedIDs()) {
		t.Fatalf("List = %v, want only reserved identities", c.List())
	}
}
