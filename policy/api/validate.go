package api

import (
	"regexp"

	"github.com/palisade-mesh/palisade/identity"
)

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	l7ProtoName  = lazyRegexp(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

func validateMeta(r *report, kind string, m *ObjectMeta, namespaced bool) {
	switch {
	case m.Name == "":
		r.errorf("metadata.name", "name is required")
	case len(m.Name) > 253 || !dnsSubdomain.MatchString(m.Name):
		r.errorf("metadata.name", "invalid name %q: lower case letters, digits, '-' and '.'", m.Name)
	}
	if namespaced && m.Namespace != "" && (len(m.Namespace) > 63 || !dnsLabel.MatchString(m.Namespace)) {
		r.errorf("metadata.namespace", "invalid namespace %q: lower case letters, digits and '-'", m.Namespace)
	}
	if !namespaced && m.Namespace != "" {
		r.warnf("metadata.namespace", "%s is cluster-wide: namespace %q is ignored", kind, m.Namespace)
		m.Namespace = ""
	}
}

// validateRule checks one Cilium rule found at path ("spec", "specs[2]", "[0]").
func validateRule(r *report, path string, rule *Rule) {
	if rule.EndpointSelector == nil {
		r.errorf(field(path, "endpointSelector"), "endpointSelector is required (use {} to select every endpoint)")
	} else {
		validateSelector(r, field(path, "endpointSelector"), rule.EndpointSelector)
	}
	for i := range rule.Ingress {
		validateIngress(r, index(field(path, "ingress"), i), &rule.Ingress[i], false)
	}
	for i := range rule.IngressDeny {
		validateIngress(r, index(field(path, "ingressDeny"), i), &rule.IngressDeny[i], true)
	}
	for i := range rule.Egress {
		validateEgress(r, index(field(path, "egress"), i), &rule.Egress[i], false)
	}
	for i := range rule.EgressDeny {
		validateEgress(r, index(field(path, "egressDeny"), i), &rule.EgressDeny[i], true)
	}
	for i, l := range rule.Labels {
		p := index(field(path, "labels"), i)
		src := l.Source
		if src == "" {
			src = identity.SourceUnspec
		}
		if err := (identity.Label{Source: src, Key: l.Key, Value: l.Value}).Validate(); err != nil {
			r.errorf(p, "%v", err)
		}
	}
}

func validateSelector(r *report, path string, s *EndpointSelector) {
	parseSelector(r, path, s.MatchLabels, s.MatchExpressions, false)
}

func validateIngress(r *report, path string, in *IngressRule, deny bool) {
	for i := range in.FromEndpoints {
		validateSelector(r, index(field(path, "fromEndpoints"), i), &in.FromEndpoints[i])
	}
	for i := range in.FromRequires {
		validateSelector(r, index(field(path, "fromRequires"), i), &in.FromRequires[i])
	}
	for i, c := range in.FromCIDR {
		parseCIDR(r, index(field(path, "fromCIDR"), i), c)
	}
	for i, c := range in.FromCIDRSet {
		validateCIDRSet(r, index(field(path, "fromCIDRSet"), i), c.CIDR, c.Except)
	}
	for i, e := range in.FromEntities {
		validateEntity(r, index(field(path, "fromEntities"), i), e, "from")
	}
	validatePortRules(r, path, in.ToPorts, deny)
	if len(in.FromEndpoints)+len(in.FromCIDR)+len(in.FromCIDRSet)+len(in.FromEntities)+len(in.ToPorts) == 0 {
		emptySectionWarning(r, path, "ingress", "fromEntities", deny)
	}
}

func validateEgress(r *report, path string, eg *EgressRule, deny bool) {
	for i := range eg.ToEndpoints {
		validateSelector(r, index(field(path, "toEndpoints"), i), &eg.ToEndpoints[i])
	}
	for i := range eg.ToRequires {
		validateSelector(r, index(field(path, "toRequires"), i), &eg.ToRequires[i])
	}
	for i, c := range eg.ToCIDR {
		parseCIDR(r, index(field(path, "toCIDR"), i), c)
	}
	for i, c := range eg.ToCIDRSet {
		validateCIDRSet(r, index(field(path, "toCIDRSet"), i), c.CIDR, c.Except)
	}
	for i, e := range eg.ToEntities {
		validateEntity(r, index(field(path, "toEntities"), i), e, "to")
	}
	if deny && len(eg.ToFQDNs) > 0 {
		r.errorf(field(path, "toFQDNs"), "toFQDNs is not allowed in deny rules")
	}
	for i, f := range eg.ToFQDNs {
		validateFQDN(r, index(field(path, "toFQDNs"), i), f.MatchName, f.MatchPattern)
	}
	validatePortRules(r, path, eg.ToPorts, deny)
	if len(eg.ToEndpoints)+len(eg.ToCIDR)+len(eg.ToCIDRSet)+len(eg.ToEntities)+len(eg.ToFQDNs)+len(eg.ToPorts) == 0 {
		emptySectionWarning(r, path, "egress", "toEntities", deny)
	}
}

// emptySectionWarning flags `egress: [{}]`: in Cilium it selects no peer and only switches the
// endpoint to default-deny, which is rarely what its author meant.
func emptySectionWarning(r *report, path, dir, entities string, deny bool) {
	if deny {
		r.warnf(path, "selects no peers: this deny rule denies nothing")
		return
	}
	r.warnf(path, "selects no peers; to allow all %s use %s: [all] (an empty rule only switches the endpoint to default-deny)", dir, entities)
}

func validatePortRules(r *report, path string, rules []PortRule, deny bool) {
	for i := range rules {
		p := index(field(path, "toPorts"), i)
		pr := &rules[i]
		if len(pr.Ports) == 0 {
			r.errorf(field(p, "ports"), "at least one port is required")
		}
		var ranges []PortRange
		for j, pp := range pr.Ports {
			if rg, ok := parsePortProtocol(r, index(field(p, "ports"), j), pp); ok {
				ranges = append(ranges, rg)
			}
		}
		if pr.Rules == nil {
			continue
		}
		rp := field(p, "rules")
		if deny {
			r.errorf(rp, "L7 rules are not allowed in deny rules")
			continue
		}
		kind := validateL7(r, rp, pr.Rules)
		for j, rg := range ranges {
			pp := index(field(p, "ports"), j)
			switch {
			case rg.Port == 0:
				r.errorf(field(pp, "port"), "%s rules need a specific port, not port 0", kind)
			case rg.EndPort != rg.Port:
				r.errorf(field(pp, "endPort"), "%s rules cannot apply to a port range", kind)
			case kind == "DNS" && rg.Proto == ProtoSCTP, kind != "DNS" && kind != "" && (rg.Proto == ProtoUDP || rg.Proto == ProtoSCTP):
				r.errorf(field(pp, "protocol"), "%s rules cannot apply to protocol %s", kind, rg.Proto)
			}
		}
	}
}

// validateL7 checks the L7 rules of a port and returns their kind for messages.
func validateL7(r *report, path string, l7 *L7Rules) string {
	kinds := 0
	kind := ""
	if l7.HTTP != nil {
		kinds++
		kind = "HTTP"
	}
	if l7.DNS != nil {
		kinds++
		kind = "DNS"
	}
	if l7.L7Proto != "" || l7.L7 != nil {
		kinds++
		kind = "L7"
	}
	switch kinds {
	case 0:
		r.errorf(path, "rules is empty: give http, dns, or l7proto with l7")
		return ""
	case 1:
	default:
		r.errorf(path, "set only one of http, dns, l7proto per port rule")
		return ""
	}
	for i, h := range l7.HTTP {
		p := index(field(path, "http"), i)
		for _, f := range []struct{ name, expr string }{{"method", h.Method}, {"path", h.Path}, {"host", h.Host}} {
			if _, err := AnchoredRegexp(f.expr); err != nil {
				r.errorf(field(p, f.name), "invalid regular expression %q: %v", f.expr, err)
			}
		}
		for j, hd := range h.Headers {
			if _, _, _, err := ParseHeader(hd); err != nil {
				r.errorf(index(field(p, "headers"), j), "%v", err)
			}
		}
	}
	for i, d := range l7.DNS {
		validateFQDN(r, index(field(path, "dns"), i), d.MatchName, d.MatchPattern)
	}
	if kind == "L7" {
		switch {
		case l7.L7Proto == "":
			r.errorf(field(path, "l7proto"), "l7 rules need l7proto, the name of the parser")
		case !l7ProtoName().MatchString(l7.L7Proto):
			r.errorf(field(path, "l7proto"), "invalid parser name %q", l7.L7Proto)
		}
		if len(l7.L7) == 0 {
			r.errorf(field(path, "l7"), "at least one rule is required (use [{}] to allow every request)")
		}
		for i, kv := range l7.L7 {
			for k := range kv {
				if k == "" {
					r.errorf(index(field(path, "l7"), i), "empty key")
				}
			}
		}
	}
	return kind
}

// validateNetworkPolicy checks a Kubernetes NetworkPolicy spec.
func validateNetworkPolicy(r *report, spec *NetworkPolicySpec) {
	if spec.PodSelector == nil {
		r.errorf("spec.podSelector", "podSelector is required (use {} to select every pod of the namespace)")
	} else {
		parseSelector(r, "spec.podSelector", spec.PodSelector.MatchLabels, spec.PodSelector.MatchExpressions, true)
	}
	for i, in := range spec.Ingress {
		p := index("spec.ingress", i)
		validateNPPorts(r, p, in.Ports)
		validateNPPeers(r, field(p, "from"), in.From)
	}
	for i, eg := range spec.Egress {
		p := index("spec.egress", i)
		validateNPPorts(r, p, eg.Ports)
		validateNPPeers(r, field(p, "to"), eg.To)
	}
	for i, t := range spec.PolicyTypes {
		if t != "Ingress" && t != "Egress" {
			r.errorf(index("spec.policyTypes", i), "unknown policy type %q (valid: Ingress, Egress)", t)
		}
	}
}

func validateNPPorts(r *report, path string, ports []NetworkPolicyPort) {
	for i, np := range ports {
		if _, err := np.parse(); err != nil {
			if fe, ok := err.(*FieldError); ok {
				r.errorf(field(index(field(path, "ports"), i), fe.Path), "%s", fe.Reason)
			}
		}
	}
}

// parse validates a NetworkPolicy port; errors are *FieldError relative to the port.
func (np NetworkPolicyPort) parse() (PortRange, error) {
	r := &report{}
	proto := ""
	if np.Protocol != nil {
		proto = *np.Protocol
		if proto == "" {
			proto = ProtoTCP
		}
	}
	proto, ok := parseProtocol(r, "protocol", proto, false)
	if !ok {
		return PortRange{}, r.errs[0]
	}
	var port uint16
	if np.Port != nil {
		if np.Port.IsString {
			if _, ok := parsePortNumber(r, "port", np.Port.Str); ok {
				r.errorf("port", "port %q is a string: a NetworkPolicy names ports by number (unquoted) or by name, and named ports are not supported yet", np.Port.Str)
			}
			return PortRange{}, r.errs[0]
		}
		if np.Port.Int < 1 || np.Port.Int > 65535 {
			r.errorf("port", "port %d must be between 1 and 65535", np.Port.Int)
			return PortRange{}, r.errs[0]
		}
		port = uint16(np.Port.Int)
	}
	var end int32
	if np.EndPort != nil {
		end = *np.EndPort
	}
	pr, ok := portRange(r, "", proto, port, end)
	if !ok {
		return PortRange{}, r.errs[0]
	}
	return pr, nil
}

func validateNPPeers(r *report, path string, peers []NetworkPolicyPeer) {
	for i, peer := range peers {
		p := index(path, i)
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				r.errorf(p, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer")
			}
			validateCIDRSet(r, field(p, "ipBlock"), peer.IPBlock.CIDR, peer.IPBlock.Except)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			r.errorf(p, "a peer needs podSelector, namespaceSelector or ipBlock")
			continue
		}
		if s := peer.PodSelector; s != nil {
			parseSelector(r, field(p, "podSelector"), s.MatchLabels, s.MatchExpressions, true)
		}
		if s := peer.NamespaceSelector; s != nil {
			parseSelector(r, field(p, "namespaceSelector"), s.MatchLabels, s.MatchExpressions, true)
		}
	}
}
