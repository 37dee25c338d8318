package identity

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/palisade-mesh/palisade/kvstore"
)

// Identity is a numeric identity with its labels.
type Identity struct {
	ID     ID
	Labels Labels
}

// Change is one batch of identity changes delivered to a Cache subscriber.
type Change struct {
	// Added holds identities that appeared, and identities whose labels were replaced (the old
	// labels are then in Deleted of the same Change).
	Added []Identity
	// Deleted holds identities that disappeared, with the labels they had.
	Deleted []Identity
	// Synced is true in the first Change that reflects the whole of etcd (and in the replay a late
	// subscriber gets when the cache is already synced). Before it, a missing identity may simply
	// not be listed yet.
	Synced bool
}

func (c Change) empty() bool { return len(c.Added) == 0 && len(c.Deleted) == 0 && !c.Synced }

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Logger receives malformed keys and watch progress. Default slog.Default().
	Logger *slog.Logger
}

// Cache is a watch-backed, in-memory copy of a cluster's identities (the master keys), plus the
// reserved identities, which are never stored. Lookups never touch etcd.
type Cache struct {
	kv     *kvstore.Client
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.RWMutex
	byID map[ID]Labels
	// byDigest indexes byID by label digest. Normally one identity per digest; a hand-edited
	// store can give two numbers the same labels, and then lookups answer the lowest.
	byDigest map[string][]ID
	synced   bool
	syncedCh chan struct{}

	// subMu orders deliveries: the watch goroutine applies an event and delivers it while holding
	// it, so a subscriber's replay and the changes after it never overlap or miss an event.
	subMu   sync.Mutex
	subs    map[int]func(Change)
	nextSub int
}

// NewCache starts watching the identities of the cluster behind kv. It runs until Close; WaitSynced
// tells when it has listed everything.
func NewCache(kv *kvstore.Client, cfg CacheConfig) *Cache {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		kv:       kv,
		log:      log.With("component", "identity-cache"),
		cancel:   cancel,
		done:     make(chan struct{}),
		byID:     make(map[ID]Labels),
		byDigest: make(map[string][]ID),
		syncedCh: make(chan struct{}),
		subs:     make(map[int]func(Change)),
	}
	go c.run(ctx)
	return c
}

// Close stops the watch. Lookups keep answering from the last state.
func (c *Cache) Close() {
	c.cancel()
	<-c.done
}

// WaitSynced blocks until the cache has listed every identity in etcd once, or ctx ends.
func (c *Cache) WaitSynced(ctx context.Context) error {
	select {
	case <-c.syncedCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Synced reports whether the cache has listed every identity in etcd once.
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Lookup returns the labels of id, including reserved identities.
func (c *Cache) Lookup(id ID) (Labels, bool) {
	if lbls, ok := ReservedLabels(id); ok {
		return lbls, true
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	lbls, ok := c.byID[id]
	return lbls, ok
}

// LookupByLabels returns the identity of a label set, including reserved identities.
func (c *Cache) LookupByLabels(lbls Labels) (ID, bool) {
	if id, ok := reservedID(lbls); ok {
		return id, true
	}
	return c.lookupDigest(lbls.Digest())
}

func (c *Cache) lookupDigest(digest string) (ID, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := c.byDigest[digest]
	if len(ids) == 0 {
		return 0, false
	}
	return ids[0], true
}

func (c *Cache) has(id ID) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.byID[id]
	return ok
}

// List returns every identity the cache knows, reserved ones first, in numeric order.
func (c *Cache) List() []Identity {
	return append(reservedIdentities(), c.snapshot()...)
}

// Subscribe calls fn at once with the reserved identities and, when the cache is synced, every
// stored identity; otherwise the stored identities come in one Change marked Synced. After that fn
// gets every change, in order, until the returned function is called. fn runs on the cache's watch
// goroutine: it must not block and must not call Subscribe or the returned function; it may call
// Lookup.
func (c *Cache) Subscribe(fn func(Change)) (unsubscribe func()) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	replay := Change{Added: reservedIdentities()}
	// Before the first sync the stored identities arrive with the Synced change.
	if c.Synced() {
		replay.Added = append(replay.Added, c.snapshot()...)
		replay.Synced = true
	}
	fn(replay)
	key := c.nextSub
	c.nextSub++
	c.subs[key] = fn
	return func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		delete(c.subs, key)
	}
}

func (c *Cache) run(ctx context.Context) {
	defer close(c.done)
	for ev := range c.kv.Watch(ctx, MasterPrefix) {
		c.subMu.Lock()
		wasSynced := c.Synced()
		ch := c.apply(ev)
		if !wasSynced && ch.Synced {
			// Subscribers see the initial state at once rather than thousands of single
			// additions, and nothing from before the first sync twice.
			ch = Change{Added: c.snapshot(), Synced: true}
		}
		if (wasSynced || ch.Synced) && !ch.empty() {
			for _, fn := range c.subs {
				fn(ch)
			}
		}
		c.subMu.Unlock()
	}
}

// snapshot returns the stored identities in numeric order.
func (c *Cache) snapshot() []Identity {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Identity, 0, len(c.byID))
	for _, id := range slices.Sorted(maps.Keys(c.byID)) {
		out = append(out, Identity{ID: id, Labels: c.byID[id]})
	}
	return out
}

// apply updates the maps with one watch event and returns what changed for subscribers.
func (c *Cache) apply(ev kvstore.Event) Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Type == kvstore.EventSynced {
		if c.synced {
			return Change{}
		}
		c.synced = true
		close(c.syncedCh)
		return Change{Synced: true}
	}
	id, err := parseMasterKey(ev.Key)
	if err != nil {
		c.log.Warn("ignoring malformed identity key", "key", ev.Key, "error", err)
		return Change{}
	}
	var ch Change
	old, had := c.byID[id]
	if ev.Type == kvstore.EventUpsert {
		if had && bytes.Equal(ev.Value, encodeMaster(old)) {
			// Every reference to an identity rewrites its master key unchanged: skip the parse.
			return Change{}
		}
		lbls, err := decodeMaster(ev.Value)
		if err != nil {
			// Treat a corrupt master key as absent: policy must not act on labels it cannot trust.
			c.log.Warn("ignoring malformed identity", "identity", id, "error", err)
		} else if had && old.Equal(lbls) {
			return Change{}
		} else {
			c.remove(id, old, had, &ch)
			c.byID[id] = lbls
			d := lbls.Digest()
			ids := c.byDigest[d]
			i, _ := slices.BinarySearch(ids, id)
			c.byDigest[d] = slices.Insert(ids, i, id)
			ch.Added = append(ch.Added, Identity{ID: id, Labels: lbls})
			return ch
		}
	}
	c.remove(id, old, had, &ch)
	return ch
}

func (c *Cache) remove(id ID, old Labels, had bool, ch *Change) {
	if !had {
		return
	}
	delete(c.byID, id)
	d := old.Digest()
	if ids := slices.DeleteFunc(c.byDigest[d], func(x ID) bool { return x == id }); len(ids) > 0 {
		c.byDigest[d] = ids
	} else {
		delete(c.byDigest, d)
	}
	ch.Deleted = append(ch.Deleted, Identity{ID: id, Labels: old})
}

func reservedIdentities() []Identity {
	ids := ReservedIDs()
	out := make([]Identity, 0, len(ids))
	for _, id := range ids {
		lbls, _ := ReservedLabels(id)
		out = append(out, Identity{ID: id, Labels: lbls})
	}
	return out
}

// reservedID returns the reserved identity whose labels are exactly lbls.
func reservedID(lbls Labels) (ID, bool) {
	if len(lbls) != 1 || lbls[0].Source != SourceReserved || lbls[0].Value != "" {
		return 0, false
	}
	return ReservedByName(lbls[0].Key)
}
