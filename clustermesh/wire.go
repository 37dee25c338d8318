package clustermesh

import (
	"errors"
	"fmt"
	"net/netip"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// AuthorizationKey is the gRPC metadata key that carries the access token, as
// "Bearer <token>" (certs/token).
const AuthorizationKey = "authorization"

// Capabilities the mesh API server announces in Info.
const (
	CapabilityWatch           = "watch"
	CapabilityWatchSelectors  = "watch-selectors"
	CapabilityResolveSelector = "resolve-selector"
)

// Limits on what a client may send: selectors come from remote clusters and are untrusted.
const (
	MaxSelectors             = 4096
	MaxRequirementsPerSelect = 64
	MaxValuesPerRequirement  = 256
	maxLabelLen              = 1024
)

// SelectorToProto converts a compiled selector (policy engine form) to the mesh API's form.
func SelectorToProto(reqs []api.Requirement) *apiv1.MeshSelector {
	out := &apiv1.MeshSelector{Requirements: make([]*apiv1.SelectorRequirement, 0, len(reqs))}
	for _, r := range reqs {
		out.Requirements = append(out.Requirements, &apiv1.SelectorRequirement{
			Source: r.Source, Key: r.Key, Operator: r.Op, Values: r.Values,
		})
	}
	return out
}

// SelectorFromProto validates and converts a selector received from a remote peer.
func SelectorFromProto(s *apiv1.MeshSelector) ([]api.Requirement, error) {
	if s == nil {
		return nil, nil
	}
	if len(s.Requirements) > MaxRequirementsPerSelect {
		return nil, fmt.Errorf("selector has %d requirements, at most %d allowed", len(s.Requirements), MaxRequirementsPerSelect)
	}
	reqs := make([]api.Requirement, 0, len(s.Requirements))
	for i, r := range s.Requirements {
		if r == nil {
			return nil, fmt.Errorf("requirements[%d]: empty", i)
		}
		if r.Key == "" || len(r.Key) > maxLabelLen || len(r.Source) > maxLabelLen {
			return nil, fmt.Errorf("requirements[%d]: key must be 1..%d bytes", i, maxLabelLen)
		}
		if len(r.Values) > MaxValuesPerRequirement {
			return nil, fmt.Errorf("requirements[%d]: %d values, at most %d allowed", i, len(r.Values), MaxValuesPerRequirement)
		}
		switch r.Operator {
		case api.OpIn, api.OpNotIn:
			if len(r.Values) == 0 {
				return nil, fmt.Errorf("requirements[%d]: operator %s needs values", i, r.Operator)
			}
		case api.OpExists, api.OpDoesNotExist:
			if len(r.Values) != 0 {
				return nil, fmt.Errorf("requirements[%d]: operator %s takes no values", i, r.Operator)
			}
		default:
			return nil, fmt.Errorf("requirements[%d]: unknown operator %q (want In, NotIn, Exists or DoesNotExist)", i, r.Operator)
		}
		for j, v := range r.Values {
			if len(v) > maxLabelLen {
				return nil, fmt.Errorf("requirements[%d].values[%d]: longer than %d bytes", i, j, maxLabelLen)
			}
		}
		reqs = append(reqs, api.Requirement{Source: r.Source, Key: r.Key, Op: r.Operator, Values: r.Values})
	}
	return reqs, nil
}

// IdentityToProto converts an identity for the wire.
func IdentityToProto(id identity.ID, lbls identity.Labels) *apiv1.MeshIdentity {
	out := &apiv1.MeshIdentity{Id: uint32(id), Labels: make([]string, 0, len(lbls))}
	for _, l := range lbls {
		out.Labels = append(out.Labels, l.String())
	}
	return out
}

// IdentityFromProto validates an identity received from the remote cluster named cluster: its
// labels must parse, carry that cluster's name (so a remote cluster cannot pass its endpoints off
// as another cluster's), and be workload labels only: reserved and CIDR labels describe this
// cluster's own entities (host, world, kube-apiserver, CIDR peers), which policy selects by those
// labels, so a remote identity carrying one could be allowed as that entity.
func IdentityFromProto(m *apiv1.MeshIdentity, cluster string) (identity.ID, identity.Labels, error) {
	if m == nil || m.Id == 0 {
		return 0, nil, errors.New("identity without an ID")
	}
	lbls, err := identity.ParseLabels(m.Labels...)
	if err != nil {
		return 0, nil, fmt.Errorf("identity %d: %w", m.Id, err)
	}
	for _, l := range lbls {
		switch l.Source {
		case identity.SourceK8s, identity.SourceContainer, identity.SourceUnspec:
		default:
			return 0, nil, fmt.Errorf("identity %d: label %s: a remote cluster's identities carry only k8s, container or unspec labels", m.Id, l)
		}
	}
	if got, _ := lbls.Lookup(identity.SourceK8s, identity.LabelCluster); got != cluster {
		return 0, nil, fmt.Errorf("identity %d: label %s is %q, not the serving cluster %q", m.Id, identity.LabelCluster, got, cluster)
	}
	return identity.ID(m.Id), lbls, nil
}

// ParsePrefix reads an ipcache prefix from the wire.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ipcache prefix: %w", err)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("ipcache prefix %s has host bits set", s)
	}
	return p, nil
}
