package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/palisade-mesh/palisade/kvstore"
)

// parseIPCacheKey reads ipcache/<ip>/<prefixlen>.
func parseIPCacheKey(key string) (netip.Prefix, error) {
	rest := strings.TrimPrefix(key, ipcachePrefix)
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("ipcache key %q: no prefix length", key)
	}
	addr, err := netip.ParseAddr(rest[:i])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ipcache key %q: %w", key, err)
	}
	bits, err := strconv.Atoi(rest[i+1:])
	if err != nil || bits < 0 || bits > addr.BitLen() {
		return netip.Prefix{}, fmt.Errorf("ipcache key %q: bad prefix length", key)
	}
	return netip.PrefixFrom(addr, bits), nil
}

// clusterIPCache is the cluster's ipcache as the watch last saw it, so that a restarted agent can
// tell which entries of the pinned map nobody publishes any more.
type clusterIPCache struct {
	mu       sync.Mutex
	prefixes map[netip.Prefix]struct{}
	synced   chan struct{} // closed at the first full listing
	once     sync.Once
}

func newClusterIPCache() *clusterIPCache {
	return &clusterIPCache{prefixes: map[netip.Prefix]struct{}{}, synced: make(chan struct{})}
}

func (c *clusterIPCache) set(p netip.Prefix, present bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if present {
		c.prefixes[p] = struct{}{}
	} else {
		delete(c.prefixes, p)
	}
}

// watchIPCache mirrors the cluster's ipcache into the datapath, so that packets from any endpoint
// of the cluster are classified by its identity.
func (a *Agent) watchIPCache(ctx context.Context) {
	for ev := range a.kv.Watch(ctx, ipcachePrefix) {
		if ev.Type == kvstore.EventSynced {
			a.ipcache.once.Do(func() { close(a.ipcache.synced) })
			continue
		}
		prefix, err := parseIPCacheKey(ev.Key)
		if err != nil {
			a.log.Warn("ignoring malformed ipcache key", "error", err)
			continue
		}
		switch ev.Type {
		case kvstore.EventUpsert:
			var e ipcacheEntry
			if err := json.Unmarshal(ev.Value, &e); err != nil {
				a.log.Warn("ignoring malformed ipcache entry", "key", ev.Key, "error", err)
				continue
			}
			// Recorded before the datapath write, so pruneIPCache never removes an entry it is
			// about to see written.
			a.ipcache.set(prefix, true)
			if err := a.dp.UpsertIPCache(prefix, uint32(e.Identity)); err != nil {
				a.log.Error("ipcache upsert", "prefix", prefix, "error", err)
			}
		case kvstore.EventDelete:
			a.ipcache.set(prefix, false)
			// A local endpoint's entry disappears when the node's lease is lost; the agent
			// republishes it with the next lease, and the datapath keeps classifying meanwhile.
			if a.isLocalAddress(prefix) {
				continue
			}
			if err := a.dp.DeleteIPCache(prefix); err != nil {
				a.log.Error("ipcache delete", "prefix", prefix, "error", err)
			}
		}
	}
}

func (a *Agent) isLocalAddress(p netip.Prefix) bool {
	if p.Bits() != 32 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ep := range a.endpoints {
		if ep.rec.IPv4 == p.Addr() {
			return true
		}
	}
	return false
}

// pruneIPCache removes, once after start-up, the entries of the pinned ipcache that no source
// publishes any more: addresses released in this cluster or in a remote one while the agent was
// down, which would otherwise keep classifying a reused address with a stale identity. It runs
// after the endpoints are restored and the remote clusters synced (or timed out), and waits for
// the cluster's ipcache to be listed.
func (a *Agent) pruneIPCache(ctx context.Context) {
	select {
	case <-a.ipcache.synced:
	case <-ctx.Done():
		return
	}
	pinned, err := a.dp.IPCache()
	if err != nil {
		a.log.Warn("list the pinned ipcache to prune it", "error", err)
		return
	}
	removed := 0
	for p := range pinned {
		if a.pruneIPCacheEntry(p) {
			removed++
		}
	}
	if removed > 0 {
		a.log.Info("removed ipcache entries nobody publishes any more", "entries", removed)
	}
}

// pruneIPCacheEntry deletes p unless a source wants it. The cluster watch and the mesh record a
// prefix before writing it, under the locks held here, so a prefix claimed concurrently is
// written again after this deletion.
func (a *Agent) pruneIPCacheEntry(p netip.Prefix) bool {
	a.ipcache.mu.Lock()
	defer a.ipcache.mu.Unlock()
	if _, ok := a.ipcache.prefixes[p]; ok || a.isLocalAddress(p) {
		return false
	}
	deleted := false
	a.mesh.withoutPrefix(p, func() {
		if err := a.dp.DeleteIPCache(p); err != nil {
			a.log.Warn("prune ipcache entry", "prefix", p, "error", err)
			return
		}
		deleted = true
	})
	return deleted
}
