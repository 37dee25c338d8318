package agent

import (
	"log/slog"
	"net/netip"
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
}

// imported is what one remote cluster holds in the agent, so that removing the cluster withdraws
// exactly that.
type imported struct {
	mu         sync.Mutex
	identities map[identity.ID]struct{}
	ipcache    map[netip.Prefix]identity.ID
	nodes      map[string]struct{} // remote node names (without the cluster prefix)
	// reconcileAtSync: a new client took over from a previous one; at its first sync whatever
	// is held and not in the new state goes.
	reconcileAtSync bool
}

func newImported() imported {
	return imported{identities: map[identity.ID]struct{}{}, ipcache: map[netip.Prefix]identity.ID{}, nodes: map[string]struct{}{}}
}

func (im *imported) setReconcileAtSync(v bool) {
	im.mu.Lock()
	im.reconcileAtSync = v
	im.mu.Unlock()
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
	if ch.Synced && im.reconcileAtSync {
		im.reconcileAtSync = false
		c.dropHeldNotIn(&ch)
	}
	c.m.applyLocked(c.rc.name, im, ch)
	if ch.Synced {
		c.rc.syncedOnce.Do(func() { close(c.rc.synced) })
	}
}

// dropHeldNotIn adds to a new client's first complete state the deletion of everything held from
// the previous client that the new state lacks.
func (c *meshConsumer) dropHeldNotIn(ch *remote.Changes) {
	im := &c.rc.imported
	for id := range im.identities {
		if _, ok := ch.Identities[id]; !ok {
			ch.DeletedIdentities = append(ch.DeletedIdentities, id)
		}
	}
	upserted := make(map[netip.Prefix]bool, len(ch.IPCache))
	for _, e := range ch.IPCache {
		upserted[e.Prefix] = true
	}
	for p := range im.ipcache {
		if !upserted[p] {
			ch.DeletedIPCache = append(ch.DeletedIPCache, p)
		}
	}
	nodes := make(map[string]bool, len(ch.Nodes))
	for _, n := range ch.Nodes {
		nodes[n.Name] = true
	}
	for n := range im.nodes {
		if !nodes[n] {
			ch.DeletedNodes = append(ch.DeletedNodes, n)
		}
	}
}

// applyLocked puts a batch into the sink, with im.mu held: identities first (so the policy knows
// them before packets are classified with them), then ipcache entries and routes, then the
// deletions.
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

	for _, e := range ch.IPCache {
		if !m.claimPrefix(cluster, e.Prefix, log) {
			continue
		}
		if err := m.sink.upsertIPCache(e.Prefix, e.Identity); err != nil {
			log.Error("import ipcache entry", "prefix", e.Prefix, "identity", e.Identity, "error", err)
			continue
		}
		im.ipcache[e.Prefix] = e.Identity
	}
	for _, n := range ch.Nodes {
		im.nodes[n.Name] = struct{}{}
		var cidrs []netip.Prefix
		for _, p := range n.PodCIDRs {
			if m.sink.isLocalRange(p) {
				log.Warn("ignoring a remote pod CIDR that overlaps this cluster's addresses", "node", n.Name, "cidr", p)
				continue
			}
			cidrs = append(cidrs, p)
		}
		n.PodCIDRs = cidrs
		if err := m.sink.setRoute(routeName(cluster, n.Name), cluster, n); err != nil {
			log.Warn("cannot route to remote node", "node", n.Name, "error", err)
		}
	}

	for _, p := range ch.DeletedIPCache {
		if _, ok := im.ipcache[p]; !ok {
			continue
		}
		delete(im.ipcache, p)
		m.releasePrefix(cluster, p)
		if err := m.sink.deleteIPCache(p); err != nil {
			log.Error("withdraw ipcache entry", "prefix", p, "error", err)
		}
	}
	for _, n := range ch.DeletedNodes {
		if _, ok := im.nodes[n]; ok {
			delete(im.nodes, n)
			m.sink.removeRoute(routeName(cluster, n))
		}
	}
	if len(deleted) > 0 {
		m.sink.updateIdentities(nil, deleted)
	}
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
	for p := range im.ipcache {
		ch.DeletedIPCache = append(ch.DeletedIPCache, p)
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

// withoutPrefix runs fn unless a remote cluster holds p, with claims on p held off meanwhile (a
// remote cluster claims a prefix before writing it to the datapath).
func (m *clusterMesh) withoutPrefix(p netip.Prefix, fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, held := m.ipOwner[p]; !held {
		fn()
	}
}
