package agent

import (
	"net/netip"
	"strings"

	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/identity"
)

// agentMeshSink puts remote clusters' state into the agent's policy engine, datapath and routes.
type agentMeshSink struct{ a *Agent }

func (s agentMeshSink) updateIdentities(added map[identity.ID]identity.Labels, deleted []identity.ID) {
	if deltas := s.a.policy.engine.UpdateIdentities(added, deleted); len(deltas) > 0 {
		s.a.triggerRegeneration()
	}
}

func (s agentMeshSink) upsertIPCache(p netip.Prefix, id identity.ID) error {
	return s.a.dp.UpsertIPCache(p, uint32(id))
}

func (s agentMeshSink) deleteIPCache(p netip.Prefix) error { return s.a.dp.DeleteIPCache(p) }

func (s agentMeshSink) setRoute(name, cluster string, n remote.Node) error {
	info := NodeInfo{Name: name, Cluster: cluster}
	for _, ip := range n.IPs {
		info.IPs = append(info.IPs, ip.String())
	}
	for _, p := range n.PodCIDRs {
		info.PodCIDRs = append(info.PodCIDRs, p.String())
	}
	return s.a.routes.setNode(info)
}

func (s agentMeshSink) removeRoute(name string) { s.a.routes.removeNode(name) }

// isLocalRange: this node's pod CIDR and address and those of the cluster's other nodes (remote
// nodes are routed under "<cluster>/<node>" names, local ones under plain names).
func (s agentMeshSink) isLocalRange(p netip.Prefix) bool {
	if s.a.cfg.PodCIDR.Overlaps(p) || (s.a.cfg.NodeIP.IsValid() && p.Contains(s.a.cfg.NodeIP)) {
		return true
	}
	r := s.a.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, cidrs := range r.byNode {
		if strings.Contains(name, "/") {
			continue
		}
		if via := r.vias[name]; via.IsValid() && p.Contains(via) {
			return true
		}
		for _, c := range cidrs {
			if c.Overlaps(p) {
				return true
			}
		}
	}
	return false
}

func (s agentMeshSink) hostRanges() (hostRanges, error) { return readHostRanges() }
