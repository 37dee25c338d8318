package api

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Kinds and API versions Palisade accepts.
const (
	KindCiliumNetworkPolicy            = "CiliumNetworkPolicy"
	KindCiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy"
	KindNetworkPolicy                  = "NetworkPolicy"

	APIVersionCilium     = "cilium.io/v2"
	APIVersionNetworking = "networking.k8s.io/v1"
)

// Key identifies a policy in the repository and in the store (policies/<kind>/<namespace>/<name>).
type Key struct {
	Kind      string
	Namespace string // empty for cluster-wide kinds
	Name      string
}

func (k Key) String() string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// DocName is how messages name the object: "namespace/name", or "name" when cluster-wide.
func (k Key) DocName() string {
	if k.Namespace == "" {
		return k.Name
	}
	return k.Namespace + "/" + k.Name
}

// Policy is one validated policy object as the user wrote it. Exactly one of Spec/Specs (Cilium
// kinds, both allowed together) or NetworkPolicy (Kubernetes kind) is set.
type Policy struct {
	Kind          string
	Name          string
	Namespace     string
	Labels        map[string]string
	Annotations   map[string]string
	Spec          *Rule
	Specs         []Rule
	NetworkPolicy *NetworkPolicySpec
}

// Key returns the repository key of p.
func (p *Policy) Key() Key { return Key{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name} }

// ScopeNamespace is the namespace the policy's selectors are confined to ("" when cluster-wide).
func (p *Policy) ScopeNamespace() string {
	if p.Kind == KindCiliumClusterwideNetworkPolicy {
		return ""
	}
	return p.Namespace
}

// Rules returns the policy as Cilium rules with the path of each rule in the document ("spec",
// "specs[1]"). A NetworkPolicy is translated (see networkpolicy.go).
func (p *Policy) Rules() []SourcedRule {
	if p.NetworkPolicy != nil {
		return []SourcedRule{{Path: "spec", Rule: p.NetworkPolicy.ciliumRule()}}
	}
	var out []SourcedRule
	if p.Spec != nil {
		out = append(out, SourcedRule{Path: "spec", Rule: *p.Spec})
	}
	for i := range p.Specs {
		out = append(out, SourcedRule{Path: index("specs", i), Rule: p.Specs[i]})
	}
	return out
}

// SourcedRule is a rule and where it sits in its document.
type SourcedRule struct {
	Path string
	Rule Rule
}

// ObjectMeta is the part of Kubernetes object metadata a policy keeps.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// objectMetaWire also accepts what `kubectl get -o yaml` adds, so exported objects import as they
// are; those fields are dropped.
type objectMetaWire struct {
	ObjectMeta
	GenerateName      any `json:"generateName,omitempty"`
	UID               any `json:"uid,omitempty"`
	ResourceVersion   any `json:"resourceVersion,omitempty"`
	Generation        any `json:"generation,omitempty"`
	CreationTimestamp any `json:"creationTimestamp,omitempty"`
	DeletionTimestamp any `json:"deletionTimestamp,omitempty"`
	ManagedFields     any `json:"managedFields,omitempty"`
	Finalizers        any `json:"finalizers,omitempty"`
	OwnerReferences   any `json:"ownerReferences,omitempty"`
}

type ciliumPolicyWire struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   objectMetaWire  `json:"metadata"`
	Spec       *Rule           `json:"spec,omitempty"`
	Specs      []Rule          `json:"specs,omitempty"`
	Status     json.RawMessage `json:"status,omitempty"`
}

type networkPolicyWire struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   objectMetaWire     `json:"metadata"`
	Spec       *NetworkPolicySpec `json:"spec"`
	Status     json.RawMessage    `json:"status,omitempty"`
}

// canonicalObject is the stored form: the object as written, minus status and server-side
// metadata, with map keys sorted by encoding/json.
type canonicalObject struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       any        `json:"spec,omitempty"`
	Specs      []Rule     `json:"specs,omitempty"`
}

// MarshalJSON returns the canonical JSON encoding of p: equal policies encode to equal bytes.
func (p *Policy) MarshalJSON() ([]byte, error) {
	obj := canonicalObject{
		Kind:     p.Kind,
		Metadata: ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations},
		Specs:    p.Specs,
	}
	switch {
	case p.NetworkPolicy != nil:
		obj.APIVersion = APIVersionNetworking
		obj.Spec = p.NetworkPolicy
	default:
		obj.APIVersion = APIVersionCilium
		if p.Spec != nil {
			obj.Spec = p.Spec
		}
	}
	return json.Marshal(obj)
}

// CanonicalJSON is the encoding the agent stores under policies/<kind>/<namespace>/<name>.
func (p *Policy) CanonicalJSON() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode policy %s: %w", p.Key(), err)
	}
	return b, nil
}

// ParseStored decodes one stored policy object (as written by CanonicalJSON, or any single object
// Decode accepts) and validates it again.
func ParseStored(data []byte) (*Policy, error) {
	ps, _, err := Decode(data, DecodeOptions{})
	if err != nil {
		return nil, err
	}
	if len(ps) != 1 {
		return nil, fmt.Errorf("stored policy: want one object, got %d", len(ps))
	}
	return ps[0], nil
}

// NetworkPolicySpec is the spec of a networking.k8s.io/v1 NetworkPolicy.
type NetworkPolicySpec struct {
	PodSelector *LabelSelector             `json:"podSelector"`
	Ingress     []NetworkPolicyIngressRule `json:"ingress,omitempty"`
	Egress      []NetworkPolicyEgressRule  `json:"egress,omitempty"`
	PolicyTypes []string                   `json:"policyTypes,omitempty"`
}

// LabelSelector is a plain Kubernetes label selector (keys carry no Cilium source).
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// NetworkPolicyIngressRule admits traffic from any of From (all sources when empty) to any of Ports
// (all ports when empty).
type NetworkPolicyIngressRule struct {
	Ports []NetworkPolicyPort `json:"ports,omitempty"`
	From  []NetworkPolicyPeer `json:"from,omitempty"`
}

// NetworkPolicyEgressRule admits traffic to any of To (all destinations when empty) on any of Ports.
type NetworkPolicyEgressRule struct {
	Ports []NetworkPolicyPort `json:"ports,omitempty"`
	To    []NetworkPolicyPeer `json:"to,omitempty"`
}

// NetworkPolicyPeer is pods (podSelector and namespaceSelector together mean both must match) or
// an IP block.
type NetworkPolicyPeer struct {
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock       `json:"ipBlock,omitempty"`
}

// IPBlock is a CIDR minus the CIDRs in Except.
type IPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// NetworkPolicyPort is a protocol (TCP by default) and a port or port range.
type NetworkPolicyPort struct {
	Protocol *string      `json:"protocol,omitempty"`
	Port     *IntOrString `json:"port,omitempty"`
	EndPort  *int32       `json:"endPort,omitempty"`
}

// IntOrString is Kubernetes' port type: a number, or a (named port) string.
type IntOrString struct {
	IsString bool
	Int      int32
	Str      string
}

// UnmarshalJSON accepts a JSON number or string.
func (v *IntOrString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		v.IsString = true
		return json.Unmarshal(b, &v.Str)
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("expected a port number or name, got %s", b)
	}
	if n < -1<<31 || n >= 1<<31 {
		return fmt.Errorf("port %d out of range", n)
	}
	*v = IntOrString{Int: int32(n)}
	return nil
}

// MarshalJSON writes the number or the string.
func (v IntOrString) MarshalJSON() ([]byte, error) {
	if v.IsString {
		return json.Marshal(v.Str)
	}
	return []byte(strconv.FormatInt(int64(v.Int), 10)), nil
}

func (v IntOrString) String() string {
	if v.IsString {
		return v.Str
	}
	return strconv.FormatInt(int64(v.Int), 10)
}
