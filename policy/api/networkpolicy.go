package api

import (
	"strconv"

	"github.com/palisade-mesh/palisade/identity"
)

// A NetworkPolicy is computed as the Cilium rule that means the same thing:
//   - podSelector becomes the endpoint selector (scoped to the namespace like any namespaced rule);
//   - a peer's podSelector and namespaceSelector become one selector that must match both (AND
//     within a peer), namespace labels being the k8s:io.cilium.k8s.namespace.labels.* labels every
//     endpoint carries; a namespaceSelector lifts the namespace scoping;
//   - peers of one rule are alternatives (OR across peers), ipBlock becomes a CIDR set;
//   - an empty from/to means every peer (the "all" entity), no ports means every port;
//   - a direction listed in policyTypes without rules becomes a rule that selects nothing, which
//     isolates the pod in that direction.

func (s *NetworkPolicySpec) ciliumRule() Rule {
	rule := Rule{EndpointSelector: k8sSelector(s.PodSelector, nil)}
	ingress, egress := s.directions()
	if ingress {
		rule.Ingress = []IngressRule{}
		for _, in := range s.Ingress {
			ir := IngressRule{ToPorts: npPorts(in.Ports)}
			ir.FromEndpoints, ir.FromCIDRSet = npPeers(in.From)
			if len(in.From) == 0 {
				ir.FromEntities = []string{EntityAll}
			}
			rule.Ingress = append(rule.Ingress, ir)
		}
		if len(rule.Ingress) == 0 {
			rule.Ingress = []IngressRule{{}}
		}
	}
	if egress {
		rule.Egress = []EgressRule{}
		for _, eg := range s.Egress {
			er := EgressRule{ToPorts: npPorts(eg.Ports)}
			er.ToEndpoints, er.ToCIDRSet = npPeers(eg.To)
			if len(eg.To) == 0 {
				er.ToEntities = []string{EntityAll}
			}
			rule.Egress = append(rule.Egress, er)
		}
		if len(rule.Egress) == 0 {
			rule.Egress = []EgressRule{{}}
		}
	}
	return rule
}

// directions applies Kubernetes' defaults: Ingress always, Egress when egress rules exist.
func (s *NetworkPolicySpec) directions() (ingress, egress bool) {
	if len(s.PolicyTypes) == 0 {
		return true, len(s.Egress) > 0
	}
	for _, t := range s.PolicyTypes {
		switch t {
		case "Ingress":
			ingress = true
		case "Egress":
			egress = true
		}
	}
	return ingress, egress
}

func npPorts(ports []NetworkPolicyPort) []PortRule {
	if len(ports) == 0 {
		return nil
	}
	pr := PortRule{}
	for _, p := range ports {
		rg, err := p.parse()
		if err != nil {
			continue // rejected by validation
		}
		pp := PortProtocol{Port: strconv.Itoa(int(rg.Port)), Protocol: rg.Proto}
		if rg.EndPort != rg.Port {
			pp.EndPort = int32(rg.EndPort)
		}
		pr.Ports = append(pr.Ports, pp)
	}
	return []PortRule{pr}
}

func npPeers(peers []NetworkPolicyPeer) (endpoints []EndpointSelector, cidrs []CIDRRule) {
	for _, p := range peers {
		if p.IPBlock != nil {
			cidrs = append(cidrs, CIDRRule{CIDR: p.IPBlock.CIDR, Except: p.IPBlock.Except})
			continue
		}
		endpoints = append(endpoints, *k8sSelector(p.PodSelector, p.NamespaceSelector))
	}
	return endpoints, cidrs
}

// k8sSelector turns Kubernetes label selectors into one Cilium selector over k8s-source labels.
func k8sSelector(pods, namespaces *LabelSelector) *EndpointSelector {
	out := &EndpointSelector{}
	add := func(sel *LabelSelector, prefix string) {
		for k, v := range sel.MatchLabels {
			if out.MatchLabels == nil {
				out.MatchLabels = map[string]string{}
			}
			out.MatchLabels[identity.SourceK8s+":"+prefix+k] = v
		}
		for _, e := range sel.MatchExpressions {
			e.Key = identity.SourceK8s + ":" + prefix + e.Key
			out.MatchExpressions = append(out.MatchExpressions, e)
		}
	}
	if pods != nil {
		add(pods, "")
	}
	if namespaces != nil {
		add(namespaces, identity.NamespaceLabelPrefix)
		// Naming the namespace label lifts the scoping to the policy's own namespace.
		out.MatchExpressions = append(out.MatchExpressions, LabelSelectorRequirement{
			Key: identity.SourceK8s + ":" + identity.LabelNamespace, Operator: OpExists,
		})
	}
	return out
}
