package policy

import (
	"fmt"
	"net/netip"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// compiledPolicy is one policy of the repository with its rules compiled against the cache.
type compiledPolicy struct {
	policy   *api.Policy
	rules    []*compiledRule
	cidrs    []netip.Prefix // prefixes needing CIDR identities, one reference each
	held     []*CachedSelector
	revision uint64
}

// compiledRule is one Cilium rule: whom it selects and what it allows or denies.
type compiledRule struct {
	policy   api.Key
	path     string // "spec", "specs[1]"
	subject  *CachedSelector
	sections []*section
	// defaultDeny per direction: the rule has that direction and does not opt out of default deny.
	defaultDeny [2]bool
	// requires are the fromRequires/toRequires selectors: every endpoint-like peer of every rule
	// selecting the same endpoint must also match them.
	requires [2][]*selector
}

// section is one ingress/egress (deny) rule.
type section struct {
	dir   Direction
	deny  bool
	path  string // "spec.ingress[0]"
	peers []peerRef
	ports []portRef // empty: every port and protocol
}

type peerRef struct {
	cs  *CachedSelector // nil: every peer
	sel *selector       // the label selector, for combining with requirements; nil otherwise
	// requirable peers (endpoints, entities, wildcards) are narrowed by fromRequires/toRequires;
	// CIDR and FQDN peers are not.
	requirable bool
	what       string // "fromEndpoints[0]", "toEntities[1]", "any peer"
}

type portRef struct {
	proto         uint8
	port, endPort uint16
	l7            *L7Policy
	path          string // "toPorts[0].ports[1]"
}

// compiler turns api rules into selectors registered in the cache.
type compiler struct {
	cache       *SelectorCache
	cluster     string
	allClusters bool
	out         *compiledPolicy
}

func (c *compiler) hold(sel *selector) *CachedSelector {
	cs := c.cache.add(sel)
	c.out.held = append(c.out.held, cs)
	return cs
}

func (c *compiler) compilePolicy(p *api.Policy) (*compiledPolicy, error) {
	c.out = &compiledPolicy{policy: p}
	ns := p.ScopeNamespace()
	for _, sr := range p.Rules() {
		r, err := c.compileRule(p.Key(), ns, sr)
		if err != nil {
			c.releaseAll()
			return nil, fmt.Errorf("compile %s %s %s: %w", p.Kind, p.Key().DocName(), sr.Path, err)
		}
		c.out.rules = append(c.out.rules, r)
	}
	return c.out, nil
}

func (c *compiler) releaseAll() {
	for _, cs := range c.out.held {
		c.cache.release(cs)
	}
	c.out.held = nil
}

func (c *compiler) compileRule(key api.Key, ns string, sr api.SourcedRule) (*compiledRule, error) {
	rule := &sr.Rule
	cr := &compiledRule{policy: key, path: sr.Path}
	subj, err := c.selector(rule.EndpointSelector, ns, false)
	if err != nil {
		return nil, fmt.Errorf("endpointSelector: %w", err)
	}
	cr.subject = c.hold(subj)
	optOut := func(b *bool) bool { return b != nil && !*b }
	dd := rule.EnableDefaultDeny
	if dd == nil {
		dd = &api.DefaultDenyConfig{}
	}
	cr.defaultDeny[Ingress] = (len(rule.Ingress) > 0 || len(rule.IngressDeny) > 0) && !optOut(dd.Ingress)
	cr.defaultDeny[Egress] = (len(rule.Egress) > 0 || len(rule.EgressDeny) > 0) && !optOut(dd.Egress)

	for _, group := range []struct {
		name string
		deny bool
		in   []api.IngressRule
	}{{"ingress", false, rule.Ingress}, {"ingressDeny", true, rule.IngressDeny}} {
		for i := range group.in {
			s, err := c.ingressSection(cr, ns, fmt.Sprintf("%s.%s[%d]", sr.Path, group.name, i), group.deny, &group.in[i])
			if err != nil {
				return nil, err
			}
			cr.sections = append(cr.sections, s)
		}
	}
	for _, group := range []struct {
		name string
		deny bool
		eg   []api.EgressRule
	}{{"egress", false, rule.Egress}, {"egressDeny", true, rule.EgressDeny}} {
		for i := range group.eg {
			s, err := c.egressSection(cr, ns, fmt.Sprintf("%s.%s[%d]", sr.Path, group.name, i), group.deny, &group.eg[i])
			if err != nil {
				return nil, err
			}
			cr.sections = append(cr.sections, s)
		}
	}
	return cr, nil
}

type peerLists struct {
	endpoints, requires []api.EndpointSelector
	cidrs               []string
	cidrSets            []api.CIDRRule
	entities            []string
	fqdns               []api.FQDNSelector
	ports               []api.PortRule
}

func (c *compiler) ingressSection(cr *compiledRule, ns, path string, deny bool, in *api.IngressRule) (*section, error) {
	return c.section(cr, ns, path, Ingress, deny, "from", peerLists{
		endpoints: in.FromEndpoints, requires: in.FromRequires, cidrs: in.FromCIDR, cidrSets: in.FromCIDRSet,
		entities: in.FromEntities, ports: in.ToPorts,
	})
}

func (c *compiler) egressSection(cr *compiledRule, ns, path string, deny bool, eg *api.EgressRule) (*section, error) {
	return c.section(cr, ns, path, Egress, deny, "to", peerLists{
		endpoints: eg.ToEndpoints, requires: eg.ToRequires, cidrs: eg.ToCIDR, cidrSets: eg.ToCIDRSet,
		entities: eg.ToEntities, fqdns: eg.ToFQDNs, ports: eg.ToPorts,
	})
}

func (c *compiler) section(cr *compiledRule, ns, path string, dir Direction, deny bool, prefix string, pl peerLists) (*section, error) {
	s := &section{dir: dir, deny: deny, path: path}
	for i := range pl.requires {
		sel, err := c.selector(&pl.requires[i], ns, false)
		if err != nil {
			return nil, fmt.Errorf("%s.%sRequires[%d]: %w", path, prefix, i, err)
		}
		cr.requires[dir] = append(cr.requires[dir], sel)
	}
	for i := range pl.endpoints {
		sel, err := c.selector(&pl.endpoints[i], ns, true)
		if err != nil {
			return nil, fmt.Errorf("%s.%sEndpoints[%d]: %w", path, prefix, i, err)
		}
		s.peers = append(s.peers, peerRef{cs: c.hold(sel), sel: sel, requirable: true, what: fmt.Sprintf("%sEndpoints[%d]", prefix, i)})
	}
	for i, e := range pl.entities {
		what := fmt.Sprintf("%sEntities[%d]", prefix, i)
		if e == api.EntityAll {
			s.peers = append(s.peers, peerRef{requirable: true, what: what + " (all)"})
			continue
		}
		sels, err := c.entitySelectors(e)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", path, what, err)
		}
		for _, sel := range sels {
			s.peers = append(s.peers, peerRef{cs: c.hold(sel), sel: sel, requirable: true, what: what + " (" + e + ")"})
		}
	}
	for i, cidr := range pl.cidrs {
		p, err := api.ParseCIDR(cidr)
		if err != nil {
			return nil, err
		}
		s.peers = append(s.peers, peerRef{cs: c.cidr(p, nil), what: fmt.Sprintf("%sCIDR[%d]", prefix, i)})
	}
	for i, set := range pl.cidrSets {
		p, err := api.ParseCIDR(set.CIDR)
		if err != nil {
			return nil, err
		}
		var except []netip.Prefix
		for _, e := range set.Except {
			ep, err := api.ParseCIDR(e)
			if err != nil {
				return nil, err
			}
			except = append(except, ep)
		}
		s.peers = append(s.peers, peerRef{cs: c.cidr(p, except), what: fmt.Sprintf("%sCIDRSet[%d]", prefix, i)})
	}
	for i, f := range pl.fqdns {
		s.peers = append(s.peers, peerRef{cs: c.hold(newFQDNSelector(f)), what: fmt.Sprintf("toFQDNs[%d]", i)})
	}
	if len(s.peers) == 0 && len(pl.ports) > 0 {
		// Ports without a peer apply to every peer.
		s.peers = append(s.peers, peerRef{requirable: true, what: "any peer"})
	}
	for i, pr := range pl.ports {
		l7, err := compileL7(pr.Rules)
		if err != nil {
			return nil, fmt.Errorf("%s.toPorts[%d]: %w", path, i, err)
		}
		for j, pp := range pr.Ports {
			rg, err := pp.Parse()
			if err != nil {
				return nil, fmt.Errorf("%s.toPorts[%d].ports[%d]: %w", path, i, j, err)
			}
			end := rg.EndPort
			if rg.Port == 0 {
				end = 0
			}
			for _, proto := range keyProtocols(rg.Proto, l7) {
				s.ports = append(s.ports, portRef{proto: proto, port: rg.Port, endPort: end, l7: l7, path: fmt.Sprintf("toPorts[%d].ports[%d]", i, j)})
			}
		}
	}
	return s, nil
}

// keyProtocols maps a rule's protocol to key protocols. L7 rules only make sense on streams the
// proxy parses: with ANY, HTTP and generic parsers get TCP, DNS gets UDP and TCP.
func keyProtocols(proto string, l7 *L7Policy) []uint8 {
	switch proto {
	case api.ProtoTCP:
		return []uint8{ProtoTCP}
	case api.ProtoUDP:
		return []uint8{ProtoUDP}
	case api.ProtoSCTP:
		return []uint8{ProtoSCTP}
	}
	switch {
	case l7 == nil:
		return []uint8{ProtoAny}
	case l7.Parser == ParserDNS:
		return []uint8{ProtoUDP, ProtoTCP}
	}
	return []uint8{ProtoTCP}
}

// selector compiles an endpoint selector, confining it to the namespace ns (unless it names the
// namespace label) and, for peers, to the local cluster (unless it names the cluster label).
func (c *compiler) selector(es *api.EndpointSelector, ns string, peer bool) (*selector, error) {
	reqs, err := es.Requirements()
	if err != nil {
		return nil, err
	}
	sel := newLabelSelector(reqs)
	var extra []api.Requirement
	if ns != "" && !sel.namesKey(identity.LabelNamespace) {
		extra = append(extra, api.Requirement{Source: identity.SourceK8s, Key: identity.LabelNamespace, Op: api.OpIn, Values: []string{ns}})
	}
	if peer && !c.allClusters && !sel.namesKey(identity.LabelCluster) {
		extra = append(extra, c.localClusterRequirement())
	}
	if len(extra) == 0 {
		return sel, nil
	}
	return newLabelSelector(append(reqs, extra...)), nil
}

func (c *compiler) localClusterRequirement() api.Requirement {
	return api.Requirement{Source: identity.SourceK8s, Key: identity.LabelCluster, Op: api.OpIn, Values: []string{c.cluster}}
}

func reservedSelector(id identity.ID) *selector {
	return newLabelSelector([]api.Requirement{{Source: identity.SourceReserved, Key: id.String(), Op: api.OpIn, Values: []string{""}}})
}

// entitySelectors resolves an entity to selectors over reserved identities and, for "cluster",
// the local cluster's endpoints.
func (c *compiler) entitySelectors(e string) ([]*selector, error) {
	var ids []identity.ID
	switch e {
	case api.EntityWorld:
		ids = []identity.ID{identity.IDWorld, identity.IDWorldIPv4, identity.IDWorldIPv6}
	case api.EntityWorldIPv4:
		ids = []identity.ID{identity.IDWorldIPv4}
	case api.EntityWorldIPv6:
		ids = []identity.ID{identity.IDWorldIPv6}
	case api.EntityCluster:
		sels := []*selector{newLabelSelector([]api.Requirement{c.localClusterRequirement()})}
		for _, id := range []identity.ID{identity.IDHost, identity.IDRemoteNode, identity.IDInit, identity.IDHealth,
			identity.IDUnmanaged, identity.IDIngress, identity.IDKubeAPIServer} {
			sels = append(sels, reservedSelector(id))
		}
		return sels, nil
	default:
		id, ok := identity.ReservedByName(e)
		if !ok {
			return nil, fmt.Errorf("unknown entity %q", e)
		}
		ids = []identity.ID{id}
	}
	var sels []*selector
	for _, id := range ids {
		sels = append(sels, reservedSelector(id))
	}
	return sels, nil
}

// cidr registers a CIDR selector and notes the prefixes that need identities: the prefix itself,
// and each except, so that addresses inside an except resolve to an identity the selector does not
// match.
func (c *compiler) cidr(p netip.Prefix, except []netip.Prefix) *CachedSelector {
	c.out.cidrs = append(c.out.cidrs, p)
	c.out.cidrs = append(c.out.cidrs, except...)
	return c.hold(newCIDRSelector(p, except))
}
