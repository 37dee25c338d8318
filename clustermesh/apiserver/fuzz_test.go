package apiserver

import (
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// FuzzWatchRequest feeds untrusted bytes through what the server does with a Watch request:
// unmarshal, validate, and (when valid) match the selectors against an identity and snapshot a
// view. It must never panic, and what it accepts must be within the limits.
func FuzzWatchRequest(f *testing.F) {
	seeds := []*apiv1.MeshWatchRequest{
		{},
		{Kinds: []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_NODES, apiv1.MeshKind_MESH_KIND_IPCACHE}},
		{Kinds: []apiv1.MeshKind{0, 7}},
		{Selectors: []*apiv1.MeshSelector{empireSelector(), {}}},
		{Selectors: []*apiv1.MeshSelector{clustermesh.SelectorToProto([]api.Requirement{
			{Source: "any", Key: "class", Op: api.OpNotIn, Values: []string{"xwing"}},
			{Source: "k8s", Key: "org", Op: api.OpExists},
		})}},
		{Selectors: []*apiv1.MeshSelector{{Requirements: []*apiv1.SelectorRequirement{{Key: "a", Operator: "Like"}, nil}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lbls, err := identity.ParseLabels("k8s:org=empire", "k8s:class=tiefighter", "k8s:"+identity.LabelCluster+"=cluster1")
	if err != nil {
		f.Fatal(err)
	}
	v := newView(quiet())
	v.upsertIdentity(1001, lbls)
	v.upsertIPCache(&apiv1.MeshIPCacheEntry{Prefix: "10.0.0.1/32", Identity: 1001})

	f.Fuzz(func(t *testing.T, data []byte) {
		var req apiv1.MeshWatchRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		kinds, sels, err := parseWatchRequest(&req)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if len(sels) > clustermesh.MaxSelectors {
			t.Fatalf("accepted %d selectors", len(sels))
		}
		for _, s := range sels {
			if len(s) > clustermesh.MaxRequirementsPerSelect {
				t.Fatalf("accepted a selector of %d requirements", len(s))
			}
		}
		sub := newSubscriber(kinds, sels, 16)
		snap := v.subscribe(sub)
		v.unsubscribe(sub)
		if len(snap) > 2+len(v.nodes) {
			t.Fatalf("snapshot of %d changes from a view of 2 objects", len(snap))
		}
	})
}
