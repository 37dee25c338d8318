package remote

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
)

type changeKind uint8

const (
	kindIdentity changeKind = iota + 1
	kindIPCache
	kindNode
)

// change is one validated MeshChange.
type change struct {
	kind    changeKind
	deleted bool
	id      identity.ID
	labels  identity.Labels
	entry   IPCacheEntry // for a deletion only the prefix is set
	node    Node         // for a deletion only the name is set
}

// Limits on what one remote object may carry: the stream is untrusted input.
const (
	maxNodeAddresses = 64
	maxNodeNameLen   = 253
)

// validator checks what the remote cluster sends: every identity must be one of its own
// (cluster-scoped with its cluster ID, labelled with its name), so a remote cluster can never pass
// its endpoints off as another cluster's or as reserved identities.
type validator struct {
	cluster   string
	clusterID uint32
	layout    identity.Layout
}

func (v validator) ownIdentity(id identity.ID) error {
	if v.layout.KindOf(id) != identity.KindCluster || v.layout.ClusterOf(id) != v.clusterID {
		return fmt.Errorf("identity %d is not an identity of cluster %q (ID %d)", id, v.cluster, v.clusterID)
	}
	return nil
}

func (v validator) convert(m *apiv1.MeshChange) (change, error) {
	if m == nil {
		return change{}, errors.New("empty change")
	}
	switch obj := m.Object.(type) {
	case *apiv1.MeshChange_Identity:
		if m.Deleted {
			if obj.Identity == nil {
				return change{}, errors.New("identity deletion without an ID")
			}
			id := identity.ID(obj.Identity.Id)
			if err := v.ownIdentity(id); err != nil {
				return change{}, err
			}
			return change{kind: kindIdentity, deleted: true, id: id}, nil
		}
		id, lbls, err := clustermesh.IdentityFromProto(obj.Identity, v.cluster)
		if err != nil {
			return change{}, err
		}
		if err := v.ownIdentity(id); err != nil {
			return change{}, err
		}
		return change{kind: kindIdentity, id: id, labels: lbls}, nil
	case *apiv1.MeshChange_Ipcache:
		e := obj.Ipcache
		if e == nil {
			return change{}, errors.New("empty ipcache entry")
		}
		p, err := clustermesh.ParsePrefix(e.Prefix)
		if err != nil {
			return change{}, err
		}
		if m.Deleted {
			return change{kind: kindIPCache, deleted: true, entry: IPCacheEntry{Prefix: p}}, nil
		}
		entry := IPCacheEntry{Prefix: p, Identity: identity.ID(e.Identity), Node: e.Node}
		if err := v.ownIdentity(entry.Identity); err != nil {
			return change{}, fmt.Errorf("ipcache %s: %w", p, err)
		}
		if e.HostIp != "" {
			if entry.HostIP, err = netip.ParseAddr(e.HostIp); err != nil {
				return change{}, fmt.Errorf("ipcache %s: host IP: %w", p, err)
			}
		}
		return change{kind: kindIPCache, entry: entry}, nil
	case *apiv1.MeshChange_Node:
		n := obj.Node
		if n == nil {
			return change{}, errors.New("empty node")
		}
		if err := validNodeName(n.Name); err != nil {
			return change{}, err
		}
		if m.Deleted {
			return change{kind: kindNode, deleted: true, node: Node{Name: n.Name}}, nil
		}
		if len(n.Ips) > maxNodeAddresses || len(n.PodCidrs) > maxNodeAddresses {
			return change{}, fmt.Errorf("node %s: more than %d addresses or pod CIDRs", n.Name, maxNodeAddresses)
		}
		node := Node{Name: n.Name}
		for _, s := range n.Ips {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return change{}, fmt.Errorf("node %s: address: %w", n.Name, err)
			}
			node.IPs = append(node.IPs, ip)
		}
		for _, s := range n.PodCidrs {
			p, err := clustermesh.ParsePrefix(s)
			if err != nil {
				return change{}, fmt.Errorf("node %s: pod CIDR: %w", n.Name, err)
			}
			node.PodCIDRs = append(node.PodCIDRs, p)
		}
		return change{kind: kindNode, node: node}, nil
	}
	return change{}, errors.New("change carries no identity, ipcache entry or node")
}

func validNodeName(name string) error {
	if name == "" || len(name) > maxNodeNameLen || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("node name %q: want 1..%d characters without '/' or white space", name, maxNodeNameLen)
	}
	return nil
}

// deletion is the deletion of c's key.
func (c change) deletion() change {
	out := change{kind: c.kind, deleted: true, id: c.id}
	out.entry.Prefix, out.node.Name = c.entry.Prefix, c.node.Name
	return out
}

// rejectedKey returns the deletion of the key of an upsert that failed validation, when the key
// itself can still be read: an upsert replaces, so whatever the key held before must not stay in
// force as if the remote cluster still said so.
func rejectedKey(m *apiv1.MeshChange) (change, bool) {
	if m == nil || m.Deleted {
		return change{}, false
	}
	switch obj := m.Object.(type) {
	case *apiv1.MeshChange_Identity:
		if obj.Identity == nil || obj.Identity.Id == 0 {
			return change{}, false
		}
		return change{kind: kindIdentity, deleted: true, id: identity.ID(obj.Identity.Id)}, true
	case *apiv1.MeshChange_Ipcache:
		if obj.Ipcache == nil {
			return change{}, false
		}
		p, err := clustermesh.ParsePrefix(obj.Ipcache.Prefix)
		if err != nil {
			return change{}, false
		}
		return change{kind: kindIPCache, deleted: true, entry: IPCacheEntry{Prefix: p}}, true
	case *apiv1.MeshChange_Node:
		if obj.Node == nil || validNodeName(obj.Node.Name) != nil {
			return change{}, false
		}
		return change{kind: kindNode, deleted: true, node: Node{Name: obj.Node.Name}}, true
	}
	return change{}, false
}
