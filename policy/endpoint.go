package policy

import (
	"fmt"
	"slices"

	"github.com/palisade-mesh/palisade/identity"
)

// contribution is one (peer selector, port) pair of one section of a rule selecting the endpoint:
// it puts an entry for each identity the selector matches.
type contribution struct {
	order         int // position in the endpoint's rules, for stable merging
	dir           Direction
	deny          bool
	cs            *CachedSelector // nil: every peer (identity 0)
	proto         uint8
	port, endPort uint16
	l7            *L7Policy
	origin        string // e.g. "CiliumNetworkPolicy default/x spec.ingress[0] fromEndpoints[0] toPorts[0].ports[0]"
}

func (c *contribution) key(id identity.ID) Key {
	return Key{Identity: id, Direction: c.dir, Proto: c.proto, Port: c.port, EndPort: c.endPort}
}

// matchesPort reports whether the contribution covers a packet's protocol and port.
func (c *contribution) matchesPort(proto uint8, port uint16) bool {
	return (c.proto == ProtoAny || c.proto == proto) && (c.port == 0 || (port >= c.port && port <= c.endPort))
}

type entry struct {
	contribs []*contribution // sorted by order
	value    Value
}

func (e *entry) compute() Value {
	var (
		plain bool
		l7    *L7Policy
	)
	for _, c := range e.contribs {
		switch {
		case c.deny:
			return Value{Deny: true}
		case c.l7 == nil:
			plain = true
		default:
			l7 = l7.merge(c.l7)
		}
	}
	if plain {
		return Value{}
	}
	return Value{Redirect: true, L7: l7}
}

// endpointPolicy is the computed policy of one endpoint identity. It subscribes to the selectors
// its contributions use and applies their changes to its entries, recording a delta.
type endpointPolicy struct {
	id       identity.ID
	enforced [2]bool
	contribs []*contribution
	bySel    map[*CachedSelector][]*contribution
	entries  map[Key]*entry
	owned    []*CachedSelector // selectors registered for this endpoint only (requirements)
	pending  pendingDelta
	dirty    func(*endpointPolicy) // tells the engine this policy has a pending delta
}

// SelectionsChanged implements SelectionUser.
func (ep *endpointPolicy) SelectionsChanged(cs *CachedSelector, added, removed []identity.ID) {
	for _, c := range ep.bySel[cs] {
		for _, id := range removed {
			ep.removeContribution(c, id)
		}
		for _, id := range added {
			ep.addContribution(c, id)
		}
	}
	if ep.dirty != nil && !ep.pending.empty() {
		ep.dirty(ep)
	}
}

func (ep *endpointPolicy) addContribution(c *contribution, id identity.ID) {
	k := c.key(id)
	e := ep.entries[k]
	if e == nil {
		e = &entry{}
		ep.entries[k] = e
	}
	i, found := slices.BinarySearchFunc(e.contribs, c.order, func(x *contribution, o int) int { return x.order - o })
	if found {
		return
	}
	e.contribs = slices.Insert(e.contribs, i, c)
	if v := e.compute(); len(e.contribs) == 1 || !v.Equal(e.value) {
		e.value = v
		ep.pending.upsert(k, v)
	}
}

func (ep *endpointPolicy) removeContribution(c *contribution, id identity.ID) {
	k := c.key(id)
	e := ep.entries[k]
	if e == nil {
		return
	}
	i, found := slices.BinarySearchFunc(e.contribs, c.order, func(x *contribution, o int) int { return x.order - o })
	if !found {
		return
	}
	e.contribs = slices.Delete(e.contribs, i, i+1)
	if len(e.contribs) == 0 {
		delete(ep.entries, k)
		ep.pending.remove(k)
		return
	}
	if v := e.compute(); !v.Equal(e.value) {
		e.value = v
		ep.pending.upsert(k, v)
	}
}

// mapState returns a copy of the entries.
func (ep *endpointPolicy) mapState() MapState {
	m := make(MapState, len(ep.entries))
	for k, e := range ep.entries {
		m[k] = e.value
	}
	return m
}

// computeEndpoint builds the policy of identity id from the rules selecting it. Selectors it
// registers for itself are in owned; the caller subscribes it (to keep it current) or releases it.
func computeEndpoint(cache *SelectorCache, rules []*compiledRule, id identity.ID) *endpointPolicy {
	ep := &endpointPolicy{id: id, bySel: map[*CachedSelector][]*contribution{}, entries: map[Key]*entry{}}
	cache.mu.RLock()
	var selecting []*compiledRule
	for _, r := range rules {
		if r.subject.selects(id) {
			selecting = append(selecting, r)
		}
	}
	cache.mu.RUnlock()

	var requires [2][]*selector
	for _, r := range selecting {
		for dir := range requires {
			if r.defaultDeny[dir] {
				ep.enforced[dir] = true
			}
			requires[dir] = append(requires[dir], r.requires[dir]...)
		}
	}
	add := func(c *contribution) {
		c.order = len(ep.contribs)
		ep.contribs = append(ep.contribs, c)
		if c.cs != nil {
			ep.bySel[c.cs] = append(ep.bySel[c.cs], c)
		}
	}
	for dir := range ep.enforced {
		if !ep.enforced[dir] {
			add(&contribution{dir: Direction(dir), origin: fmt.Sprintf("default allow: no rule puts this endpoint in %s default-deny", Direction(dir))})
		}
	}
	for _, r := range selecting {
		for _, s := range r.sections {
			for _, peer := range s.peers {
				cs := peer.cs
				if reqs := requires[s.dir]; len(reqs) > 0 && peer.requirable {
					cs = ep.narrow(cache, peer.sel, reqs)
				}
				origin := fmt.Sprintf("%s %s %s %s", r.policy.Kind, r.policy.DocName(), s.path, peer.what)
				if len(s.ports) == 0 {
					add(&contribution{dir: s.dir, deny: s.deny, cs: cs, origin: origin})
					continue
				}
				for _, p := range s.ports {
					add(&contribution{dir: s.dir, deny: s.deny, cs: cs, proto: p.proto, port: p.port, endPort: p.endPort, l7: p.l7, origin: origin + " " + p.path})
				}
			}
		}
	}
	cache.mu.RLock()
	for _, c := range ep.contribs {
		if c.cs == nil {
			ep.addContribution(c, 0)
			continue
		}
		for _, id := range c.cs.selections {
			ep.addContribution(c, id)
		}
	}
	cache.mu.RUnlock()
	ep.pending = pendingDelta{}
	return ep
}

// narrow registers the selector "peer and every requirement" for this endpoint.
func (ep *endpointPolicy) narrow(cache *SelectorCache, peer *selector, reqs []*selector) *CachedSelector {
	sel := newLabelSelector(nil)
	if peer != nil {
		sel = peer
	}
	for _, r := range reqs {
		sel = sel.and(r)
	}
	cs := cache.add(sel)
	ep.owned = append(ep.owned, cs)
	return cs
}

// selectors returns the distinct selectors the policy depends on.
func (ep *endpointPolicy) selectors() []*CachedSelector {
	out := make([]*CachedSelector, 0, len(ep.bySel))
	for cs := range ep.bySel {
		out = append(out, cs)
	}
	return out
}

func (ep *endpointPolicy) attach(cache *SelectorCache) {
	for _, cs := range ep.selectors() {
		cache.subscribe(cs, ep)
	}
}

// detach unsubscribes and drops the endpoint's own selectors.
func (ep *endpointPolicy) detach(cache *SelectorCache) {
	for _, cs := range ep.selectors() {
		cache.unsubscribe(cs, ep)
	}
	for _, cs := range ep.owned {
		cache.release(cs)
	}
	ep.owned = nil
}

// diffInto records in d what turns the entries of old into those of ep.
func (ep *endpointPolicy) diffInto(d *pendingDelta, old *endpointPolicy) {
	for k := range old.entries {
		if _, ok := ep.entries[k]; !ok {
			d.remove(k)
		}
	}
	for k, e := range ep.entries {
		if o, ok := old.entries[k]; !ok || !o.value.Equal(e.value) {
			d.upsert(k, e.value)
		}
	}
}
