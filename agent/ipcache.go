package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

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

// watchIPCache mirrors the cluster's ipcache into the datapath, so that packets from any endpoint
// of the cluster are classified by its identity.
func (a *Agent) watchIPCache(ctx context.Context) {
	for ev := range a.kv.Watch(ctx, ipcachePrefix) {
		if ev.Type == kvstore.EventSynced {
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
			if err := a.dp.UpsertIPCache(prefix, uint32(e.Identity)); err != nil {
				a.log.Error("ipcache upsert", "prefix", prefix, "error", err)
			}
		case kvstore.EventDelete:
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
