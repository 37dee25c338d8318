package policy

import (
	"testing"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

func TestEngine_SelectorsForNamesOnlyAdmittingSelectors(t *testing.T) {
	const doc = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deathstar, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: tiefighter, io.cilium.k8s.policy.cluster: cluster2}
    - matchLabels: {class: xwing}
    - matchExpressions: [{key: io.cilium.k8s.policy.cluster, operator: NotIn, values: [cluster1, cluster3]}]
`
	for _, tc := range []struct {
		name        string
		allClusters bool
		cluster     string
		want        int
	}{
		{"named cluster", false, "cluster2", 2},
		{"excluded cluster", false, "cluster3", 0},
		{"other cluster matches only NotIn", false, "cluster4", 1},
		{"all clusters adds unnamed selectors", true, "cluster3", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(Options{ClusterName: "cluster1", AllClusters: tc.allClusters})
			if err != nil {
				t.Fatal(err)
			}
			pols, _, err := api.Decode([]byte(doc), api.DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.ReplacePolicies(pols, nil); err != nil {
				t.Fatal(err)
			}
			got := e.SelectorsFor(tc.cluster)
			if len(got) != tc.want {
				t.Fatalf("SelectorsFor(%s) = %v, want %d selectors", tc.cluster, got, tc.want)
			}
			remote := identity.Labels{
				{Source: identity.SourceK8s, Key: "class", Value: "tiefighter"},
				{Source: identity.SourceK8s, Key: identity.LabelNamespace, Value: "default"},
				{Source: identity.SourceK8s, Key: identity.LabelCluster, Value: tc.cluster},
			}
			matched := false
			for _, reqs := range got {
				matched = matched || Matches(reqs, remote)
			}
			if wantMatch := tc.cluster == "cluster2" || tc.cluster == "cluster4"; matched != wantMatch {
				t.Errorf("a %s tiefighter matched = %v, want %v", tc.cluster, matched, wantMatch)
			}
		})
	}
}
