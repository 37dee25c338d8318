package remote

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
)

var testValidator = validator{cluster: "cluster2", clusterID: 2, layout: identity.DefaultLayout}

func identityChange(id uint32, deleted bool, labels ...string) *apiv1.MeshChange {
	return &apiv1.MeshChange{Object: &apiv1.MeshChange_Identity{Identity: &apiv1.MeshIdentity{Id: id, Labels: labels}}, Deleted: deleted}
}

func TestValidator_RejectsWhatTheRemoteMayNotClaim(t *testing.T) {
	own := uint32(2<<16 | 300)
	tests := []struct {
		name    string
		change  *apiv1.MeshChange
		wantErr string // empty: accepted
	}{
		{"own identity", identityChange(own, false, "k8s:app=x", "k8s:io.cilium.k8s.policy.cluster=cluster2"), ""},
		{"own identity deleted", identityChange(own, true), ""},
		{"identity labelled with another cluster", identityChange(own, false, "k8s:io.cilium.k8s.policy.cluster=cluster1"), "not the serving cluster"},
		{"identity of another cluster ID", identityChange(1<<16|300, false, "k8s:io.cilium.k8s.policy.cluster=cluster2"), "not an identity of cluster"},
		{"reserved identity", identityChange(1, false, "k8s:io.cilium.k8s.policy.cluster=cluster2"), "not an identity of cluster"},
		{"deletion of a local identity", identityChange(1<<16|300, true), "not an identity of cluster"},
		{"identity without ID", identityChange(0, false), "without an ID"},
		{"bad label", identityChange(own, false, "k8s:=="), "identity"},
		{"ipcache entry", &apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/32", Identity: own, HostIp: "10.99.2.1", Node: "n1"}}}, ""},
		{"ipcache entry of a reserved identity", &apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/32", Identity: 2}}}, "not an identity of cluster"},
		{"ipcache prefix with host bits", &apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/24", Identity: own}}}, "host bits"},
		{"ipcache bad host IP", &apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/32", Identity: own, HostIp: "nope"}}}, "host IP"},
		{"ipcache deletion", &apiv1.MeshChange{Deleted: true, Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/32"}}}, ""},
		{"node", &apiv1.MeshChange{Object: &apiv1.MeshChange_Node{Node: &apiv1.MeshNode{Name: "n1", Ips: []string{"10.99.2.1"}, PodCidrs: []string{"10.2.1.0/24"}}}}, ""},
		{"node name with a slash", &apiv1.MeshChange{Object: &apiv1.MeshChange_Node{Node: &apiv1.MeshNode{Name: "a/b"}}}, "node name"},
		{"node bad pod CIDR", &apiv1.MeshChange{Object: &apiv1.MeshChange_Node{Node: &apiv1.MeshNode{Name: "n1", PodCidrs: []string{"10.2.1.0"}}}}, "pod CIDR"},
		{"empty change", &apiv1.MeshChange{}, "carries no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testValidator.convert(tt.change)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("accepted")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzConvert feeds arbitrary watch responses through the validation every remote object passes.
func FuzzConvert(f *testing.F) {
	seed := &apiv1.MeshWatchResponse{SyncDone: true, Changes: []*apiv1.MeshChange{
		identityChange(2<<16|300, false, "k8s:app=x", "k8s:io.cilium.k8s.policy.cluster=cluster2"),
		{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: "10.2.0.1/32", Identity: 2<<16 | 300}}},
		{Object: &apiv1.MeshChange_Node{Node: &apiv1.MeshNode{Name: "n1", Ips: []string{"10.99.2.1"}, PodCidrs: []string{"10.2.1.0/24"}}}},
	}}
	raw, err := proto.Marshal(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp apiv1.MeshWatchResponse
		if proto.Unmarshal(data, &resp) != nil {
			return
		}
		v := newView()
		for _, m := range resp.Changes {
			ch, err := testValidator.convert(m)
			if err != nil {
				if del, ok := rejectedKey(m); ok {
					if !del.deleted || del.kind == 0 {
						t.Fatalf("the key of a rejected upsert became %+v, not a deletion", del)
					}
					checkSizesAfter(t, v, del)
					v.apply(del)
				}
				continue
			}
			checkSizesAfter(t, v, ch)
			if ch.kind == kindIdentity && !ch.deleted {
				if got, _ := ch.labels.Lookup(identity.SourceK8s, identity.LabelCluster); got != "cluster2" {
					t.Fatalf("accepted identity %d labelled %q", ch.id, got)
				}
			}
			if (ch.kind == kindIdentity || ch.kind == kindIPCache && !ch.deleted) && testValidator.layout.ClusterOf(ch.id|ch.entry.Identity) != 2 {
				t.Fatalf("accepted an identity outside cluster 2: %+v", ch)
			}
			v.apply(ch)
		}
		_ = diff(newView(), v)
	})
}

// checkSizesAfter checks that sizesAfter predicts what applying c does to v's sizes.
func checkSizesAfter(t *testing.T, v *view, c change) {
	t.Helper()
	ids, ips, nodes := v.sizesAfter([]change{c, c})
	probe := newView()
	for id, l := range v.identities {
		probe.identities[id] = l
	}
	for p, e := range v.ipcache {
		probe.ipcache[p] = e
	}
	for n, node := range v.nodes {
		probe.nodes[n] = node
	}
	probe.apply(c)
	if ids != len(probe.identities) || ips != len(probe.ipcache) || nodes != len(probe.nodes) {
		t.Fatalf("sizesAfter %d/%d/%d, applying gives %d/%d/%d", ids, ips, nodes, len(probe.identities), len(probe.ipcache), len(probe.nodes))
	}
}
