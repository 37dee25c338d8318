package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// Options configure an Engine.
type Options struct {
	// ClusterName is the local cluster. Peer selectors that do not name io.cilium.k8s.policy.cluster
	// select its endpoints only, and the "cluster" entity means it. Required.
	ClusterName string
	// AllClusters makes peer selectors that name no cluster select endpoints of every connected
	// cluster, as Cilium did before its secure default. Default false.
	AllClusters bool
	// CIDRAllocator gives CIDR peers identities. Default: a LocalCIDRAllocator.
	CIDRAllocator CIDRIdentityAllocator
	// L7Matchers match generic L7 requests against rules in Decide, per l7proto. Default for a
	// protocol without one: every key of the rule must equal the request's field.
	L7Matchers map[string]L7Matcher
}

// Engine is the policy repository and the computed policy of the endpoints registered with it. It
// is safe for concurrent use; every change returns the deltas of the registered endpoints.
type Engine struct {
	opts  Options
	cache *SelectorCache

	mu        sync.Mutex
	revision  uint64
	policies  map[api.Key]*compiledPolicy
	rules     []*compiledRule // of all policies, ordered by policy key then rule
	endpoints map[identity.ID]*registered
	cidrs     map[netip.Prefix]*cidrRef
	dirty     map[*endpointPolicy]struct{}
	// recomputes counts full recomputations of registered endpoints, so tests can tell an
	// incremental update from a recomputation.
	recomputes int
}

type registered struct {
	ep   *endpointPolicy
	refs int
}

type cidrRef struct {
	id   identity.ID
	refs int
}

// NewEngine returns an engine with no policy, knowing the reserved identities.
func NewEngine(opts Options) (*Engine, error) {
	if opts.ClusterName == "" {
		return nil, errors.New("policy engine: cluster name is required")
	}
	if opts.CIDRAllocator == nil {
		opts.CIDRAllocator = NewLocalCIDRAllocator()
	}
	e := &Engine{
		opts:      opts,
		cache:     NewSelectorCache(),
		policies:  map[api.Key]*compiledPolicy{},
		endpoints: map[identity.ID]*registered{},
		cidrs:     map[netip.Prefix]*cidrRef{},
		dirty:     map[*endpointPolicy]struct{}{},
	}
	reserved := map[identity.ID]identity.Labels{}
	for _, id := range identity.ReservedIDs() {
		reserved[id], _ = identity.ReservedLabels(id)
	}
	e.cache.UpdateIdentities(reserved, nil)
	return e, nil
}

// SelectorCache exposes the engine's cache (for inspection and metrics).
func (e *Engine) SelectorCache() *SelectorCache { return e.cache }

// Revision increases with every change to the set of policies.
func (e *Engine) Revision() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.revision
}

// Policies returns the policies in the repository, ordered by key.
func (e *Engine) Policies() []*api.Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*api.Policy, 0, len(e.policies))
	for _, k := range e.sortedKeys() {
		out = append(out, e.policies[k].policy)
	}
	return out
}

// Policy returns one policy and the revision that last changed it.
func (e *Engine) Policy(k api.Key) (*api.Policy, uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cp, ok := e.policies[k]
	if !ok {
		return nil, 0, false
	}
	return cp.policy, cp.revision, true
}

func (e *Engine) sortedKeys() []api.Key {
	keys := make([]api.Key, 0, len(e.policies))
	for k := range e.policies {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b api.Key) int { return strings.Compare(a.String(), b.String()) })
	return keys
}

// UpdateIdentities adds (or replaces) and deletes identities: as the agent hears them from the
// identity allocator's watch and clustermesh from remote clusters. Only the MapState entries of
// selectors that match them change; the deltas of the registered endpoints are returned.
func (e *Engine) UpdateIdentities(added map[identity.ID]identity.Labels, deleted []identity.ID) []EndpointDelta {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A registered endpoint whose own identity changes labels is selected by other rules: it is
	// recomputed. Identities re-announced unchanged (a watch relisting) cost nothing.
	var changed []*registered
	for id, lbls := range added {
		if reg, ok := e.endpoints[id]; ok {
			if old, known := e.cache.Labels(id); !known || !old.Equal(lbls) {
				changed = append(changed, reg)
			}
		}
	}
	for _, id := range deleted {
		if reg, ok := e.endpoints[id]; ok {
			changed = append(changed, reg)
		}
	}
	e.cache.UpdateIdentities(added, deleted)
	for _, reg := range changed {
		e.recompute(reg)
	}
	return e.takeDeltas()
}

// ReplacePolicies atomically upserts and deletes policies: either all changes apply, under one new
// revision, or none does. The deltas of the registered endpoints are returned.
func (e *Engine) ReplacePolicies(upserts []*api.Policy, deletes []api.Key) (uint64, []EndpointDelta, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[api.Key]bool{}
	for _, p := range upserts {
		if seen[p.Key()] {
			return 0, nil, fmt.Errorf("replace policies: %s given twice", p.Key())
		}
		seen[p.Key()] = true
	}
	for _, k := range deletes {
		if seen[k] {
			return 0, nil, fmt.Errorf("replace policies: %s both replaced and deleted", k)
		}
	}
	var compiled []*compiledPolicy
	rollback := func() {
		for _, cp := range compiled {
			e.releasePolicy(cp)
		}
		e.takeDeltas()
	}
	for _, p := range upserts {
		comp := &compiler{cache: e.cache, cluster: e.opts.ClusterName, allClusters: e.opts.AllClusters}
		cp, err := comp.compilePolicy(p)
		if err != nil {
			rollback()
			return 0, nil, err
		}
		compiled = append(compiled, cp)
		if err := e.acquireCIDRs(cp); err != nil {
			rollback()
			return 0, nil, fmt.Errorf("replace policy %s: %w", p.Key(), err)
		}
	}
	var old []*compiledPolicy
	for _, k := range deletes {
		if cp, ok := e.policies[k]; ok {
			old = append(old, cp)
		}
	}
	for _, cp := range compiled {
		if prev, ok := e.policies[cp.policy.Key()]; ok {
			old = append(old, prev)
		}
	}
	affected := e.affectedEndpoints(old, compiled)

	e.revision++
	for _, cp := range old {
		delete(e.policies, cp.policy.Key())
	}
	for _, cp := range compiled {
		cp.revision = e.revision
		e.policies[cp.policy.Key()] = cp
	}
	e.rules = e.rules[:0]
	for _, k := range e.sortedKeys() {
		e.rules = append(e.rules, e.policies[k].rules...)
	}
	for _, reg := range affected {
		e.recompute(reg)
	}
	for _, cp := range old {
		e.releasePolicy(cp)
	}
	return e.revision, e.takeDeltas(), nil
}

// affectedEndpoints are the registered endpoints selected by a rule of the given policies.
func (e *Engine) affectedEndpoints(sets ...[]*compiledPolicy) []*registered {
	e.cache.mu.RLock()
	defer e.cache.mu.RUnlock()
	var out []*registered
	for id, reg := range e.endpoints {
	search:
		for _, set := range sets {
			for _, cp := range set {
				for _, r := range cp.rules {
					if r.subject.selects(id) {
						out = append(out, reg)
						break search
					}
				}
			}
		}
	}
	return out
}

// recompute rebuilds a registered endpoint's policy and records the difference as its delta.
func (e *Engine) recompute(reg *registered) {
	e.recomputes++
	old := reg.ep
	ep := computeEndpoint(e.cache, e.rules, old.id)
	ep.pending = old.pending
	ep.diffInto(&ep.pending, old)
	old.detach(e.cache)
	delete(e.dirty, old)
	ep.dirty = e.markDirty
	ep.attach(e.cache)
	reg.ep = ep
	if !ep.pending.empty() {
		e.dirty[ep] = struct{}{}
	}
}

func (e *Engine) markDirty(ep *endpointPolicy) { e.dirty[ep] = struct{}{} }

func (e *Engine) takeDeltas() []EndpointDelta {
	var out []EndpointDelta
	for ep := range e.dirty {
		if !ep.pending.empty() {
			out = append(out, ep.pending.take(ep.id))
		}
	}
	clear(e.dirty)
	slices.SortFunc(out, func(a, b EndpointDelta) int { return cmpInt(uint64(a.Identity), uint64(b.Identity)) })
	return out
}

// acquireCIDRs gives every prefix of cp an identity, known to the cache.
func (e *Engine) acquireCIDRs(cp *compiledPolicy) error {
	added := map[identity.ID]identity.Labels{}
	for i, p := range cp.cidrs {
		if ref, ok := e.cidrs[p]; ok {
			ref.refs++
			continue
		}
		id, err := e.opts.CIDRAllocator.AllocateCIDR(p)
		if err != nil {
			cp.cidrs = cp.cidrs[:i] // release only what was taken
			return err
		}
		e.cidrs[p] = &cidrRef{id: id, refs: 1}
		added[id] = CIDRLabels(p)
	}
	if len(added) > 0 {
		e.cache.UpdateIdentities(added, nil)
	}
	return nil
}

// releasePolicy drops the selectors and CIDR identities a compiled policy holds.
func (e *Engine) releasePolicy(cp *compiledPolicy) {
	var gone []identity.ID
	for _, p := range cp.cidrs {
		ref := e.cidrs[p]
		if ref == nil {
			continue
		}
		ref.refs--
		if ref.refs == 0 {
			delete(e.cidrs, p)
			e.opts.CIDRAllocator.ReleaseCIDR(p)
			gone = append(gone, ref.id)
		}
	}
	cp.cidrs = nil
	if len(gone) > 0 {
		e.cache.UpdateIdentities(nil, gone)
	}
	for _, cs := range cp.held {
		e.cache.release(cs)
	}
	cp.held = nil
}

// AddEndpoint registers an endpoint identity (counted: endpoints sharing an identity share its
// policy) and returns its MapState. From then on every change returns its deltas. The identity
// must be known (UpdateIdentities) so that the rules selecting it can be found.
func (e *Engine) AddEndpoint(id identity.ID) (MapState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reg, ok := e.endpoints[id]; ok {
		reg.refs++
		return reg.ep.mapState(), nil
	}
	if _, ok := e.cache.Labels(id); !ok {
		return nil, fmt.Errorf("add endpoint: identity %d is unknown", id)
	}
	ep := computeEndpoint(e.cache, e.rules, id)
	ep.dirty = e.markDirty
	ep.attach(e.cache)
	e.endpoints[id] = &registered{ep: ep, refs: 1}
	return ep.mapState(), nil
}

// RemoveEndpoint drops one registration of the identity.
func (e *Engine) RemoveEndpoint(id identity.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg, ok := e.endpoints[id]
	if !ok {
		return
	}
	reg.refs--
	if reg.refs > 0 {
		return
	}
	reg.ep.detach(e.cache)
	delete(e.dirty, reg.ep)
	delete(e.endpoints, id)
}

// MapState returns a copy of a registered endpoint's MapState.
func (e *Engine) MapState(id identity.ID) (MapState, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg, ok := e.endpoints[id]
	if !ok {
		return nil, false
	}
	return reg.ep.mapState(), true
}

// Enforcement reports, for a registered endpoint, whether it is in default-deny per direction.
// An unenforced direction's MapState holds the allow-all entry {0, dir, 0, 0}.
func (e *Engine) Enforcement(id identity.ID) (ingress, egress, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg, ok := e.endpoints[id]
	if !ok {
		return false, false, false
	}
	return reg.ep.enforced[Ingress], reg.ep.enforced[Egress], true
}

// ComputeMapState computes the MapState of any known identity from scratch without registering it.
func (e *Engine) ComputeMapState(id identity.ID) (MapState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.cache.Labels(id); !ok {
		return nil, fmt.Errorf("compute policy: identity %d is unknown", id)
	}
	ep := computeEndpoint(e.cache, e.rules, id)
	defer ep.detach(e.cache)
	return ep.mapState(), nil
}

// CIDRIdentity returns the identity given to a prefix some policy uses.
func (e *Engine) CIDRIdentity(p netip.Prefix) (identity.ID, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ref, ok := e.cidrs[p.Masked()]
	if !ok {
		return 0, false
	}
	return ref.id, true
}

// FQDNSelectors returns the toFQDNs selectors the policies use: the names the DNS proxy must learn.
func (e *Engine) FQDNSelectors() []api.FQDNSelector {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[string]api.FQDNSelector{}
	for _, cp := range e.policies {
		for _, cs := range cp.held {
			if cs.sel.kind == fqdnSelector {
				seen[cs.sel.key] = cs.sel.fqdn
			}
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]api.FQDNSelector, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	return out
}

// SetFQDNSelections sets the identities (CIDR identities of the addresses DNS answered) a toFQDNs
// selector stands for, as the DNS proxy learns them, and returns the deltas.
func (e *Engine) SetFQDNSelections(sel api.FQDNSelector, ids []identity.ID) []EndpointDelta {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := newFQDNSelector(sel).key
	for _, cp := range e.policies {
		for _, cs := range cp.held {
			if cs.sel.key == key {
				e.cache.setFQDNSelections(cs, ids)
				return e.takeDeltas()
			}
		}
	}
	return nil
}
