package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/identity"
)

// meshSink is where state imported from remote clusters goes: the policy engine's identities, the
// datapath's ipcache and the routes to the remote clusters' pod CIDRs. The agent implements it
// (agentMeshSink); it lets the importer's bookkeeping be tested without root.
type meshSink interface {
	updateIdentities(added map[identity.ID]identity.Labels, deleted []identity.ID)
	upsertIPCache(p netip.Prefix, id identity.ID) error
	deleteIPCache(p netip.Prefix) error
	// setRoute routes a remote node's pod CIDRs through its address; name is unique in the mesh.
	setRoute(name, cluster string, n remote.Node) error
	removeRoute(name string)
	// isLocalRange reports whether p overlaps an address range of the local cluster: a remote
	// cluster may never claim (and so reclassify or reroute) local addresses.
	isLocalRange(p netip.Prefix) bool
	// hostRanges lists this node's own addresses and the routes the agent did not install.
	hostRanges() (hostRanges, error)
}

// minRemotePodCIDRBits: a remote pod CIDR shorter than this would route much of the address
// space (128.0.0.0/1) to one remote node.
const minRemotePodCIDRBits = 8

// reservedRanges are never a remote pod CIDR: "this network", loopback, link-local, multicast
// and the reserved and broadcast range.
var reservedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// imported is what one remote cluster holds in the agent, so that removing the cluster withdraws
// exactly that.
type imported struct {
	mu         sync.Mutex
	identities map[identity.ID]struct{}
	ipcache    map[netip.Prefix]identity.ID // in the datapath
	// pending are ipcache entries outside every pod CIDR of this cluster's nodes accepted so far
	// (the node not imported yet, or its CIDR refused): written once a CIDR covers them.
	pending map[netip.Prefix]identity.ID
	// nodes maps the remote node names (without the cluster prefix) to their accepted pod CIDRs.
	nodes map[string][]netip.Prefix
	// cidrs counts, per accepted pod CIDR, the nodes announcing it; cidrBits counts the CIDRs per
	// prefix length, so covering an address costs one map lookup per length in use. Both are
	// written with clusterMesh.mu held too, so that other clusters' imports can read cidrs under
	// it (clusterMesh.mu is taken under imported.mu, never the other way round).
	cidrs    map[netip.Prefix]int
	cidrBits map[int]int
	// rejected counts the pod CIDRs, nodes and ipcache entries refused.
	rejected uint64
}

func newImported() imported {
	return imported{identities: map[identity.ID]struct{}{}, ipcache: map[netip.Prefix]identity.ID{}, pending: map[netip.Prefix]identity.ID{},
		nodes: map[string][]netip.Prefix{}, cidrs: map[netip.Prefix]int{}, cidrBits: map[int]int{}}
}

// covered reports whether p lies inside one of the cluster's accepted pod CIDRs.
func (im *imported) covered(p netip.Prefix) bool {
	for bits := range im.cidrBits {
		if bits > p.Bits() {
			continue
		}
		c, err := p.Addr().Prefix(bits)
		if err == nil && im.cidrs[c] > 0 {
			return true
		}
	}
	return false
}

// routeName makes a remote node's name unique beside the local nodes and other clusters' nodes.
func routeName(cluster, node string) string { return cluster + "/" + node }

// meshConsumer applies one remote cluster's changes.
type meshConsumer struct {
	m  *clusterMesh
	rc *remoteCluster
}

func (c *meshConsumer) Apply(ch remote.Changes) {
	im := &c.rc.imported
	im.mu.Lock()
	defer im.mu.Unlock()
	c.m.applyLocked(c.rc.name, im, ch)
	if ch.Synced {
		c.rc.syncedOnce.Do(func() { close(c.rc.synced) })
	}
}

// applyLocked puts a batch into the sink, with im.mu held: identities first (so the policy knows
// them before packets are classified with them), then routes (so the ipcache entries can be
// checked against the pod CIDRs), ipcache entries, then the deletions.
func (m *clusterMesh) applyLocked(cluster string, im *imported, ch remote.Changes) {
	log := m.opts.log.With("cluster", cluster)
	var deleted []identity.ID
	for _, id := range ch.DeletedIdentities {
		if _, ok := im.identities[id]; ok {
			deleted = append(deleted, id)
			delete(im.identities, id)
		}
	}
	for id := range ch.Identities {
		im.identities[id] = struct{}{}
	}
	if len(ch.Identities) > 0 {
		m.sink.updateIdentities(ch.Identities, nil)
	}

	var (
		host    hostRanges // read once per batch, when a node needs it
		hostErr error
		read    bool
	)
	cidrsGained, cidrsLost := false, false
	for _, n := range ch.Nodes {
		if !read {
			host, hostErr = m.sink.hostRanges()
			read = true
		}
		gained, lost := m.setNodeCIDRs(cluster, im, n.Name, m.acceptNode(im, n, host, hostErr, log), log)
		cidrsGained, cidrsLost = cidrsGained || gained, cidrsLost || lost
		n.PodCIDRs = im.nodes[n.Name]
		if err := m.sink.setRoute(routeName(cluster, n.Name), cluster, n); err != nil {
			log.Warn("cannot route to remote node", "node", n.Name, "error", err)
		}
	}

	for _, e := range ch.IPCache {
		m.upsertRemoteIPCache(cluster, im, e.Prefix, e.Identity, log)
	}
	for _, p := range ch.DeletedIPCache {
		delete(im.pending, p)
		if _, ok := im.ipcache[p]; ok {
			m.dropIPCache(cluster, im, p, log)
		}
	}
	for _, n := range ch.DeletedNodes {
		if _, ok := im.nodes[n]; ok {
			_, lost := m.setNodeCIDRs(cluster, im, n, nil, log)
			cidrsLost = cidrsLost || lost
			delete(im.nodes, n)
			m.sink.removeRoute(routeName(cluster, n))
		}
	}
	// Entries whose pod CIDR went wait for another to cover them; pending ones a new CIDR covers
	// are written.
	if cidrsLost {
		for p, id := range im.ipcache {
			if !im.covered(p) {
				m.dropIPCache(cluster, im, p, log)
				im.pending[p] = id
			}
		}
	}
	if cidrsGained {
		for p, id := range im.pending {
			if im.covered(p) {
				m.upsertRemoteIPCache(cluster, im, p, id, log)
			}
		}
	}
	if ch.Synced && len(im.pending) > 0 {
		log.Warn("remote ipcache entries outside every pod CIDR accepted from that cluster's nodes wait for one", "entries", len(im.pending), "example", anyKey(im.pending))
	}
	if len(deleted) > 0 {
		m.sink.updateIdentities(nil, deleted)
	}
}

func anyKey(m map[netip.Prefix]identity.ID) netip.Prefix {
	for p := range m {
		return p
	}
	return netip.Prefix{}
}

// upsertRemoteIPCache writes a remote ipcache entry if one of its cluster's accepted pod CIDRs
// covers it and no one else holds it; outside every accepted CIDR it waits in pending.
func (m *clusterMesh) upsertRemoteIPCache(cluster string, im *imported, p netip.Prefix, id identity.ID, log *slog.Logger) {
	if !im.covered(p) {
		if _, held := im.ipcache[p]; held {
			m.dropIPCache(cluster, im, p, log)
		}
		im.pending[p] = id
		log.Debug("remote ipcache entry outside the cluster's accepted pod CIDRs; waiting for one", "prefix", p)
		return
	}
	delete(im.pending, p)
	if !m.claimPrefix(cluster, p, log) {
		im.rejected++
		if _, held := im.ipcache[p]; held {
			m.dropIPCache(cluster, im, p, log)
		}
		return
	}
	if err := m.sink.upsertIPCache(p, id); err != nil {
		log.Error("import ipcache entry", "prefix", p, "identity", id, "error", err)
		if _, held := im.ipcache[p]; !held {
			m.releasePrefix(cluster, p)
		}
		return
	}
	im.ipcache[p] = id
}

// dropIPCache takes a held entry out of the datapath and releases its claim.
func (m *clusterMesh) dropIPCache(cluster string, im *imported, p netip.Prefix, log *slog.Logger) {
	delete(im.ipcache, p)
	m.releasePrefix(cluster, p)
	if err := m.sink.deleteIPCache(p); err != nil {
		log.Error("withdraw ipcache entry", "prefix", p, "error", err)
	}
}

// acceptNode returns the pod CIDRs of a remote node that may be routed through it. A node whose
// address is this node's own, a loopback or a local pod address gets none, and so does every node
// while this node's addresses and routes cannot be read (hostErr); a CIDR is refused when it is
// not IPv4, shorter than /8, reserved, or overlaps a local pod CIDR, an address or a route of
// this node (other than the default route and one to that CIDR through the same node). Each
// refusal is logged and counted; setNodeCIDRs refuses CIDRs of other remote clusters.
func (m *clusterMesh) acceptNode(im *imported, n remote.Node, host hostRanges, hostErr error, log *slog.Logger) []netip.Prefix {
	if len(n.PodCIDRs) == 0 {
		return nil
	}
	err := m.checkGateway(n, host)
	if hostErr != nil {
		err = fmt.Errorf("cannot check its pod CIDRs: %w", hostErr)
	}
	if err != nil {
		im.rejected++
		log.Warn("refusing a remote node's routes", "node", n.Name, "error", err)
		return nil
	}
	via := n.IPs[0]
	var out []netip.Prefix
	for _, p := range n.PodCIDRs {
		if err := m.checkPodCIDR(p, via, host); err != nil {
			im.rejected++
			log.Warn("refusing a remote pod CIDR", "node", n.Name, "cidr", p, "error", err)
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

func (m *clusterMesh) checkGateway(n remote.Node, host hostRanges) error {
	if len(n.IPs) == 0 {
		return errors.New("the node has no address")
	}
	via := n.IPs[0]
	switch {
	case !via.Is4():
		return fmt.Errorf("address %s is not IPv4", via)
	case via.IsUnspecified() || via.IsLoopback() || via.IsMulticast() || via.IsLinkLocalUnicast() || via == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("address %s cannot be a gateway", via)
	case host.addrs[via]:
		return fmt.Errorf("address %s is this node's own", via)
	case m.sink.isLocalRange(netip.PrefixFrom(via, 32)):
		return fmt.Errorf("address %s is a node or pod address of this cluster", via)
	}
	return nil
}

func (m *clusterMesh) checkPodCIDR(p netip.Prefix, via netip.Addr, host hostRanges) error {
	if !p.Addr().Is4() {
		return errors.New("not IPv4")
	}
	p = p.Masked()
	if p.Bits() < minRemotePodCIDRBits {
		return fmt.Errorf("shorter than /%d", minRemotePodCIDRBits)
	}
	for _, r := range reservedRanges {
		if r.Overlaps(p) {
			return fmt.Errorf("overlaps the reserved range %s", r)
		}
	}
	if m.sink.isLocalRange(p) {
		return errors.New("overlaps this cluster's pod CIDRs or node addresses")
	}
	for a := range host.addrs {
		if p.Contains(a) {
			return fmt.Errorf("contains this node's address %s", a)
		}
	}
	for _, r := range host.routes {
		// The operator (or a test topology) may already route exactly this CIDR through the same
		// node: taking that route over changes nowhere traffic goes.
		if r.dst == p && r.gw == via {
			continue
		}
		if r.dst.Overlaps(p) {
			return fmt.Errorf("overlaps this node's route to %s", r.dst)
		}
	}
	return nil
}

// setNodeCIDRs replaces the accepted pod CIDRs of a remote node in the cluster's bookkeeping and
// reports whether the cluster gained or lost a CIDR. A new CIDR overlapping one another remote
// cluster holds is refused: checked and claimed under one lock, so that two clusters announcing
// one range at once cannot both get it.
func (m *clusterMesh) setNodeCIDRs(cluster string, im *imported, node string, cidrs []netip.Prefix, log *slog.Logger) (gained, lost bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := im.nodes[node]
	kept := cidrs[:0:0]
	for _, p := range cidrs {
		if slices.Contains(kept, p) {
			continue
		}
		if !slices.Contains(prev, p) {
			if c, holder, ok := m.podCIDRConflictLocked(cluster, p); ok {
				im.rejected++
				log.Warn("refusing a remote pod CIDR", "node", node, "cidr", p, "error", fmt.Sprintf("overlaps %s, a pod CIDR of remote cluster %s", c, holder))
				continue
			}
			if im.cidrs[p] == 0 {
				gained = true
				im.cidrBits[p.Bits()]++
			}
			im.cidrs[p]++
		}
		kept = append(kept, p)
	}
	for _, p := range prev {
		if slices.Contains(kept, p) {
			continue
		}
		if im.cidrs[p]--; im.cidrs[p] <= 0 {
			delete(im.cidrs, p)
			lost = true
			if im.cidrBits[p.Bits()]--; im.cidrBits[p.Bits()] <= 0 {
				delete(im.cidrBits, p.Bits())
			}
		}
	}
	im.nodes[node] = kept
	return gained, lost
}

// podCIDRConflictLocked finds a pod CIDR of another remote cluster that overlaps p. Called with
// clusterMesh.mu held, which guards every cluster's cidrs against writes.
func (m *clusterMesh) podCIDRConflictLocked(cluster string, p netip.Prefix) (netip.Prefix, string, bool) {
	for name, rc := range m.remotes {
		if name == cluster {
			continue
		}
		for c := range rc.imported.cidrs {
			if c.Overlaps(p) {
				return c, name, true
			}
		}
	}
	return netip.Prefix{}, "", false
}

// claimPrefix records that a remote cluster's ipcache entry owns prefix p, refusing local address
// ranges and prefixes another remote cluster owns.
func (m *clusterMesh) claimPrefix(cluster string, p netip.Prefix, log *slog.Logger) bool {
	if m.sink.isLocalRange(p) {
		log.Warn("ignoring a remote ipcache entry inside this cluster's addresses", "prefix", p)
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if owner, ok := m.ipOwner[p]; ok && owner != cluster {
		log.Warn("ignoring a remote ipcache entry another remote cluster holds", "prefix", p, "holder", owner)
		return false
	}
	m.ipOwner[p] = cluster
	return true
}

func (m *clusterMesh) releasePrefix(cluster string, p netip.Prefix) {
	m.mu.Lock()
	if m.ipOwner[p] == cluster {
		delete(m.ipOwner, p)
	}
	m.mu.Unlock()
}

// withdraw removes everything a remote cluster imported (its client has stopped).
func (m *clusterMesh) withdraw(rc *remoteCluster) {
	im := &rc.imported
	im.mu.Lock()
	defer im.mu.Unlock()
	var ch remote.Changes
	for id := range im.identities {
		ch.DeletedIdentities = append(ch.DeletedIdentities, id)
	}
	for _, held := range []map[netip.Prefix]identity.ID{im.ipcache, im.pending} {
		for p := range held {
			ch.DeletedIPCache = append(ch.DeletedIPCache, p)
		}
	}
	for n := range im.nodes {
		ch.DeletedNodes = append(ch.DeletedNodes, n)
	}
	m.applyLocked(rc.name, im, ch)
}

// counts returns how many identities, ipcache entries and nodes a remote cluster holds.
func (im *imported) counts() (ids, ips, nodes int) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return len(im.identities), len(im.ipcache), len(im.nodes)
}

// refused counts the pod CIDRs, nodes and ipcache entries of a remote cluster the agent refused.
func (im *imported) refused() uint64 {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.rejected
}

// withoutPrefix runs fn unless a remote cluster holds p, with claims on p held off meanwhile (a
// remote cluster claims a prefix before writing it to the datapath).
func (m *clusterMesh) withoutPrefix(p netip.Prefix, fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, held := m.ipOwner[p]; !held {
		fn()
	}
}
