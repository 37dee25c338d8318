package api

// Rule is one Cilium policy rule: the endpoints it selects and what they may send and receive.
type Rule struct {
	// EndpointSelector selects the endpoints the rule applies to; {} selects all of them (within the
	// namespace for a CiliumNetworkPolicy).
	EndpointSelector *EndpointSelector `json:"endpointSelector,omitempty"`
	Ingress          []IngressRule     `json:"ingress,omitempty"`
	IngressDeny      []IngressRule     `json:"ingressDeny,omitempty"`
	Egress           []EgressRule      `json:"egress,omitempty"`
	EgressDeny       []EgressRule      `json:"egressDeny,omitempty"`
	// EnableDefaultDeny lets a rule add allows without putting its endpoints in default-deny.
	EnableDefaultDeny *DefaultDenyConfig `json:"enableDefaultDeny,omitempty"`
	Labels            []RuleLabel        `json:"labels,omitempty"`
	Description       string             `json:"description,omitempty"`
}

// DefaultDenyConfig says per direction whether a rule that has that direction switches its
// endpoints to default-deny. Unset means true.
type DefaultDenyConfig struct {
	Ingress *bool `json:"ingress,omitempty"`
	Egress  *bool `json:"egress,omitempty"`
}

// RuleLabel is a label attached to a rule to identify it (Cilium's rule labels).
type RuleLabel struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Source string `json:"source,omitempty"`
}

// EndpointSelector is a Kubernetes label selector whose keys may carry a Cilium label source
// ("k8s:app"); a bare key matches a label of any source.
type EndpointSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one matchExpressions term.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Selector operators.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// IngressRule allows (or, under ingressDeny, denies) traffic from the peers it names to the ports it
// names. Peers of different kinds add up; a rule with ports and no peer applies to every peer; a
// rule with neither selects nothing.
type IngressRule struct {
	FromEndpoints []EndpointSelector `json:"fromEndpoints,omitempty"`
	FromRequires  []EndpointSelector `json:"fromRequires,omitempty"`
	FromCIDR      []string           `json:"fromCIDR,omitempty"`
	FromCIDRSet   []CIDRRule         `json:"fromCIDRSet,omitempty"`
	FromEntities  []string           `json:"fromEntities,omitempty"`
	ToPorts       []PortRule         `json:"toPorts,omitempty"`
}

// EgressRule is IngressRule's counterpart for traffic the endpoint sends.
type EgressRule struct {
	ToEndpoints []EndpointSelector `json:"toEndpoints,omitempty"`
	ToRequires  []EndpointSelector `json:"toRequires,omitempty"`
	ToCIDR      []string           `json:"toCIDR,omitempty"`
	ToCIDRSet   []CIDRRule         `json:"toCIDRSet,omitempty"`
	ToEntities  []string           `json:"toEntities,omitempty"`
	ToFQDNs     []FQDNSelector     `json:"toFQDNs,omitempty"`
	ToPorts     []PortRule         `json:"toPorts,omitempty"`
}

// CIDRRule selects a prefix minus the prefixes in Except.
type CIDRRule struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// FQDNSelector selects the addresses DNS answers give for a name (MatchName) or a pattern
// (MatchPattern, '*' matching any run of DNS characters).
type FQDNSelector struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// PortRule names ports and, optionally, the L7 rules traffic to them must satisfy.
type PortRule struct {
	Ports []PortProtocol `json:"ports,omitempty"`
	Rules *L7Rules       `json:"rules,omitempty"`
}

// PortProtocol is a port (a number as a string; "0" means every port) or a range up to EndPort, and
// a protocol (TCP, UDP, SCTP, or ANY, the default).
type PortProtocol struct {
	Port     string `json:"port"`
	EndPort  int32  `json:"endPort,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// Protocols.
const (
	ProtoTCP  = "TCP"
	ProtoUDP  = "UDP"
	ProtoSCTP = "SCTP"
	ProtoAny  = "ANY"
)

// L7Rules are the application-level rules of a port: HTTP, DNS, or a generic key/value protocol
// (L7Proto names the proxy parser, L7 holds its rules). Exactly one kind per port rule.
type L7Rules struct {
	HTTP    []PortRuleHTTP      `json:"http,omitempty"`
	DNS     []PortRuleDNS       `json:"dns,omitempty"`
	L7Proto string              `json:"l7proto,omitempty"`
	L7      []map[string]string `json:"l7,omitempty"`
}

// PortRuleHTTP allows HTTP requests whose method, path and host match the regular expressions
// (anchored at both ends, as Cilium anchors them) and that carry every listed header ("Name" or
// "Name: value"). An empty rule allows every request.
type PortRuleHTTP struct {
	Path    string   `json:"path,omitempty"`
	Method  string   `json:"method,omitempty"`
	Host    string   `json:"host,omitempty"`
	Headers []string `json:"headers,omitempty"`
}

// PortRuleDNS allows DNS queries for a name or a pattern (the DNS proxy learns the answers for
// toFQDNs).
type PortRuleDNS struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}
