package remote

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
)

// view is one picture of a remote cluster: what a stream has sent so far, or what the consumer
// holds.
type view struct {
	identities map[identity.ID]identity.Labels
	ipcache    map[netip.Prefix]IPCacheEntry
	nodes      map[string]Node
}

func newView() *view {
	return &view{
		identities: map[identity.ID]identity.Labels{},
		ipcache:    map[netip.Prefix]IPCacheEntry{},
		nodes:      map[string]Node{},
	}
}

// apply records one change.
func (v *view) apply(c change) {
	switch c.kind {
	case kindIdentity:
		if c.deleted {
			delete(v.identities, c.id)
		} else {
			v.identities[c.id] = c.labels
		}
	case kindIPCache:
		if c.deleted {
			delete(v.ipcache, c.entry.Prefix)
		} else {
			v.ipcache[c.entry.Prefix] = c.entry
		}
	case kindNode:
		if c.deleted {
			delete(v.nodes, c.node.Name)
		} else {
			v.nodes[c.node.Name] = c.node
		}
	}
}

// diff returns what turns the picture from into the picture to. Upserted identities come before
// the entries that use them in the consumer's order of application; output is sorted so that a
// batch is deterministic.
func diff(from, to *view) Changes {
	var out Changes
	for id, lbls := range to.identities {
		if old, ok := from.identities[id]; !ok || !old.Equal(lbls) {
			if out.Identities == nil {
				out.Identities = map[identity.ID]identity.Labels{}
			}
			out.Identities[id] = lbls
		}
	}
	for id := range from.identities {
		if _, ok := to.identities[id]; !ok {
			out.DeletedIdentities = append(out.DeletedIdentities, id)
		}
	}
	for p, e := range to.ipcache {
		if old, ok := from.ipcache[p]; !ok || old != e {
			out.IPCache = append(out.IPCache, e)
		}
	}
	for p := range from.ipcache {
		if _, ok := to.ipcache[p]; !ok {
			out.DeletedIPCache = append(out.DeletedIPCache, p)
		}
	}
	for name, n := range to.nodes {
		if old, ok := from.nodes[name]; !ok || !old.equal(n) {
			out.Nodes = append(out.Nodes, n)
		}
	}
	for name := range from.nodes {
		if _, ok := to.nodes[name]; !ok {
			out.DeletedNodes = append(out.DeletedNodes, name)
		}
	}
	out.sort()
	return out
}

// applyLive records a batch of live changes in v and returns their net effect: a key changed and
// changed back within the batch is not delivered at all.
func (v *view) applyLive(changes []change) Changes {
	before, after := newView(), newView()
	touchedIDs := map[identity.ID]bool{}
	touchedIPs := map[netip.Prefix]bool{}
	touchedNodes := map[string]bool{}
	for _, c := range changes {
		switch c.kind {
		case kindIdentity:
			if !touchedIDs[c.id] {
				touchedIDs[c.id] = true
				if l, ok := v.identities[c.id]; ok {
					before.identities[c.id] = l
				}
			}
		case kindIPCache:
			if !touchedIPs[c.entry.Prefix] {
				touchedIPs[c.entry.Prefix] = true
				if e, ok := v.ipcache[c.entry.Prefix]; ok {
					before.ipcache[c.entry.Prefix] = e
				}
			}
		case kindNode:
			if !touchedNodes[c.node.Name] {
				touchedNodes[c.node.Name] = true
				if n, ok := v.nodes[c.node.Name]; ok {
					before.nodes[c.node.Name] = n
				}
			}
		}
		v.apply(c)
	}
	for id := range touchedIDs {
		if l, ok := v.identities[id]; ok {
			after.identities[id] = l
		}
	}
	for p := range touchedIPs {
		if e, ok := v.ipcache[p]; ok {
			after.ipcache[p] = e
		}
	}
	for name := range touchedNodes {
		if n, ok := v.nodes[name]; ok {
			after.nodes[name] = n
		}
	}
	return diff(before, after)
}

func (c *Changes) sort() {
	slices.Sort(c.DeletedIdentities)
	slices.SortFunc(c.IPCache, func(a, b IPCacheEntry) int { return a.Prefix.Compare(b.Prefix) })
	slices.SortFunc(c.DeletedIPCache, netip.Prefix.Compare)
	slices.SortFunc(c.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(c.DeletedNodes)
}

func (v *view) size() int { return len(v.identities) + len(v.ipcache) + len(v.nodes) }

// sizesAfter returns how many identities, ipcache entries and nodes v would hold after changes,
// without changing v: the limits are checked before anything is recorded or delivered.
func (v *view) sizesAfter(changes []change) (ids, ips, nodes int) {
	ids, ips, nodes = len(v.identities), len(v.ipcache), len(v.nodes)
	idNow := map[identity.ID]bool{}
	ipNow := map[netip.Prefix]bool{}
	nodeNow := map[string]bool{}
	step := func(count *int, was, now bool) {
		switch {
		case !was && now:
			*count++
		case was && !now:
			*count--
		}
	}
	for _, c := range changes {
		switch c.kind {
		case kindIdentity:
			was, seen := idNow[c.id]
			if !seen {
				_, was = v.identities[c.id]
			}
			idNow[c.id] = !c.deleted
			step(&ids, was, !c.deleted)
		case kindIPCache:
			was, seen := ipNow[c.entry.Prefix]
			if !seen {
				_, was = v.ipcache[c.entry.Prefix]
			}
			ipNow[c.entry.Prefix] = !c.deleted
			step(&ips, was, !c.deleted)
		case kindNode:
			was, seen := nodeNow[c.node.Name]
			if !seen {
				_, was = v.nodes[c.node.Name]
			}
			nodeNow[c.node.Name] = !c.deleted
			step(&nodes, was, !c.deleted)
		}
	}
	return ids, ips, nodes
}

// viewOf is the picture of what a batch of upserts holds.
func viewOf(ch Changes) *view {
	v := newView()
	for id, lbls := range ch.Identities {
		v.identities[id] = lbls
	}
	for _, e := range ch.IPCache {
		v.ipcache[e.Prefix] = e
	}
	for _, n := range ch.Nodes {
		v.nodes[n.Name] = n
	}
	return v
}

// changes is everything v holds, as upserts.
func (v *view) changes() Changes {
	return diff(newView(), v)
}
