package remote

import (
	"net/netip"
	"slices"

	"github.com/palisade-mesh/palisade/identity"
)

// Consumer receives what a Client imports from its remote cluster. Apply is called from the
// client's own goroutine, one batch at a time, never concurrently; it should not block for long,
// since the stream waits meanwhile.
type Consumer interface {
	Apply(Changes)
}

// Changes is one batch of differences from what the consumer holds. A key appears at most once
// in a batch. Identities referenced by ipcache entries of the same batch are in the same batch or
// were delivered before.
type Changes struct {
	// Identities added or whose labels changed; labels are validated and carry the remote
	// cluster's name in io.cilium.k8s.policy.cluster.
	Identities        map[identity.ID]identity.Labels
	DeletedIdentities []identity.ID
	IPCache           []IPCacheEntry
	DeletedIPCache    []netip.Prefix
	Nodes             []Node
	DeletedNodes      []string
	// Synced is set on the batch that completes a (re)sync: once it is applied, the consumer holds
	// the remote cluster's complete state (as selected). Such a batch may hold no change at all.
	Synced bool
}

// Empty reports whether the batch changes nothing.
func (c Changes) Empty() bool {
	return len(c.Identities) == 0 && len(c.DeletedIdentities) == 0 && len(c.IPCache) == 0 &&
		len(c.DeletedIPCache) == 0 && len(c.Nodes) == 0 && len(c.DeletedNodes) == 0
}

// IPCacheEntry maps an address range of the remote cluster to the identity of its endpoint.
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity identity.ID
	// HostIP is the address of the node the endpoint runs on (may be unset).
	HostIP netip.Addr
	Node   string
}

// Node is a node of the remote cluster: where its pod CIDRs are routed.
type Node struct {
	Name     string
	IPs      []netip.Addr
	PodCIDRs []netip.Prefix
}

func (n Node) equal(o Node) bool {
	return n.Name == o.Name && slices.Equal(n.IPs, o.IPs) && slices.Equal(n.PodCIDRs, o.PodCIDRs)
}
