package policy

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/palisade-mesh/palisade/identity"
)

// CIDRIdentityAllocator gives the prefixes of CIDR peers identities, so that the datapath only
// matches identities: the agent also maps each prefix to its identity in the ipcache. The engine
// calls AllocateCIDR once per prefix while some policy uses it and ReleaseCIDR when none does.
type CIDRIdentityAllocator interface {
	AllocateCIDR(prefix netip.Prefix) (identity.ID, error)
	ReleaseCIDR(prefix netip.Prefix)
}

// CIDRLabels are the labels of the identity of prefix: cidr:<prefix> and reserved:world, so that
// the world entity covers CIDR identities as it covers the addresses they stand for.
func CIDRLabels(prefix netip.Prefix) identity.Labels {
	return identity.NewLabels(
		identity.Label{Source: identity.SourceCIDR, Key: prefix.Masked().String()},
		identity.Label{Source: identity.SourceReserved, Key: identity.IDWorld.String()},
	)
}

// LocalCIDRAllocator hands out node-local CIDR identities (1<<24 | n) from memory. It serves
// offline tracing and tests, and suits an agent whose CIDR identities never leave the node.
type LocalCIDRAllocator struct {
	mu       sync.Mutex
	next     uint32
	byPrefix map[netip.Prefix]identity.ID
}

// NewLocalCIDRAllocator returns an allocator whose first identity is LocalCIDR(1).
func NewLocalCIDRAllocator() *LocalCIDRAllocator {
	return &LocalCIDRAllocator{next: 1, byPrefix: map[netip.Prefix]identity.ID{}}
}

// AllocateCIDR returns the identity of prefix, allocating one if needed.
func (a *LocalCIDRAllocator) AllocateCIDR(prefix netip.Prefix) (identity.ID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	prefix = prefix.Masked()
	if id, ok := a.byPrefix[prefix]; ok {
		return id, nil
	}
	id, err := identity.LocalCIDR(a.next)
	if err != nil {
		return 0, fmt.Errorf("allocate CIDR identity for %s: %w", prefix, err)
	}
	a.next++
	a.byPrefix[prefix] = id
	return id, nil
}

// ReleaseCIDR forgets the prefix. Numbers are not reused, so a stale datapath entry can never name
// another prefix.
func (a *LocalCIDRAllocator) ReleaseCIDR(prefix netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.byPrefix, prefix.Masked())
}

// Resolve returns the identity an address maps to, as the ipcache's longest-prefix match would:
// the most specific allocated prefix holding it, else world-ipv4 or world-ipv6.
func (a *LocalCIDRAllocator) Resolve(addr netip.Addr) identity.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr = addr.Unmap()
	best, bestBits := identity.IDWorldIPv4, -1
	if addr.Is6() {
		best = identity.IDWorldIPv6
	}
	for p, id := range a.byPrefix {
		if p.Contains(addr) && p.Bits() > bestBits {
			best, bestBits = id, p.Bits()
		}
	}
	return best
}
