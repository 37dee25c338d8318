package clustermesh

import (
	"strings"
	"testing"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

func TestSelectorFromProto_RejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *apiv1.SelectorRequirement
		want string
	}{
		{"unknown operator", &apiv1.SelectorRequirement{Key: "a", Operator: "Like", Values: []string{"x"}}, "unknown operator"},
		{"In without values", &apiv1.SelectorRequirement{Key: "a", Operator: api.OpIn}, "needs values"},
		{"Exists with values", &apiv1.SelectorRequirement{Key: "a", Operator: api.OpExists, Values: []string{"x"}}, "takes no values"},
		{"empty key", &apiv1.SelectorRequirement{Operator: api.OpExists}, "key must be"},
		{"nil", nil, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SelectorFromProto(&apiv1.MeshSelector{Requirements: []*apiv1.SelectorRequirement{tc.req}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestIdentityFromProto_RequiresServingCluster(t *testing.T) {
	lbls, err := identity.ParseLabels("k8s:org=empire", "k8s:"+identity.LabelCluster+"=cluster2")
	if err != nil {
		t.Fatal(err)
	}
	m := IdentityToProto(identity.ID(2<<16|300), lbls)
	if _, got, err := IdentityFromProto(m, "cluster2"); err != nil || !got.Equal(lbls) {
		t.Fatalf("IdentityFromProto = %v, %v", got, err)
	}
	if _, _, err := IdentityFromProto(m, "cluster3"); err == nil || !strings.Contains(err.Error(), `not the serving cluster "cluster3"`) {
		t.Fatalf("identity of cluster2 served by cluster3: err = %v", err)
	}
}

func TestIdentityFromProto_RefusesReservedAndCIDRLabels(t *testing.T) {
	for _, extra := range []string{"reserved:host", "reserved:world", "cidr:8.8.8.8/32"} {
		t.Run(extra, func(t *testing.T) {
			m := &apiv1.MeshIdentity{Id: 2<<16 | 5, Labels: []string{extra, "k8s:" + identity.LabelCluster + "=cluster2"}}
			if _, _, err := IdentityFromProto(m, "cluster2"); err == nil || !strings.Contains(err.Error(), "only k8s, container or unspec labels") {
				t.Fatalf("identity with %s: err = %v, want a refusal", extra, err)
			}
		})
	}
}
