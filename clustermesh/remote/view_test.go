package remote

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/palisade-mesh/palisade/identity"
)

func lbls(t *testing.T, ss ...string) identity.Labels {
	t.Helper()
	l, err := identity.ParseLabels(ss...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDiff_DeliversOnlyDifferences(t *testing.T) {
	a := lbls(t, "k8s:app=a", "k8s:io.cilium.k8s.policy.cluster=c2")
	b := lbls(t, "k8s:app=b", "k8s:io.cilium.k8s.policy.cluster=c2")
	b2 := lbls(t, "k8s:app=b2", "k8s:io.cilium.k8s.policy.cluster=c2")
	p1, p2, p3 := netip.MustParsePrefix("10.2.0.1/32"), netip.MustParsePrefix("10.2.0.2/32"), netip.MustParsePrefix("10.2.0.3/32")
	from := newView()
	from.identities[131328] = a
	from.identities[131329] = b
	from.ipcache[p1] = IPCacheEntry{Prefix: p1, Identity: 131328}
	from.ipcache[p2] = IPCacheEntry{Prefix: p2, Identity: 131329}
	from.nodes["n1"] = Node{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("10.99.2.1")}}
	from.nodes["n2"] = Node{Name: "n2"}

	to := newView()
	to.identities[131328] = a  // unchanged
	to.identities[131329] = b2 // relabelled
	to.identities[131330] = b  // new
	to.ipcache[p1] = IPCacheEntry{Prefix: p1, Identity: 131328}
	to.ipcache[p3] = IPCacheEntry{Prefix: p3, Identity: 131330}
	to.nodes["n1"] = Node{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("10.99.2.1")}}

	got := diff(from, to)
	want := Changes{
		Identities:     map[identity.ID]identity.Labels{131329: b2, 131330: b},
		IPCache:        []IPCacheEntry{{Prefix: p3, Identity: 131330}},
		DeletedIPCache: []netip.Prefix{p2},
		DeletedNodes:   []string{"n2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff:\n got %+v\nwant %+v", got, want)
	}
	if !diff(to, to).Empty() {
		t.Fatal("a view differs from itself")
	}
}

func TestApplyLive_NetEffectOfABatch(t *testing.T) {
	a := lbls(t, "k8s:app=a", "k8s:io.cilium.k8s.policy.cluster=c2")
	p := netip.MustParsePrefix("10.2.0.1/32")
	v := newView()
	v.identities[131328] = a
	tests := []struct {
		name    string
		changes []change
		want    Changes
	}{
		{"add then delete within a batch delivers nothing", []change{
			{kind: kindIPCache, entry: IPCacheEntry{Prefix: p, Identity: 131328}},
			{kind: kindIPCache, deleted: true, entry: IPCacheEntry{Prefix: p}},
		}, Changes{}},
		{"re-announcing a known identity delivers nothing", []change{
			{kind: kindIdentity, id: 131328, labels: a},
		}, Changes{}},
		{"deleting an unknown node delivers nothing", []change{
			{kind: kindNode, deleted: true, node: Node{Name: "ghost"}},
		}, Changes{}},
		{"an upsert is delivered once with its last value", []change{
			{kind: kindIPCache, entry: IPCacheEntry{Prefix: p, Identity: 131328, Node: "x"}},
			{kind: kindIPCache, entry: IPCacheEntry{Prefix: p, Identity: 131328, Node: "y"}},
		}, Changes{IPCache: []IPCacheEntry{{Prefix: p, Identity: 131328, Node: "y"}}}},
		{"a deletion of a delivered identity is delivered", []change{
			{kind: kindIdentity, deleted: true, id: 131328},
		}, Changes{DeletedIdentities: []identity.ID{131328}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.applyLive(tt.changes)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if len(v.identities) != 0 || len(v.ipcache) != 1 || v.ipcache[p].Node != "y" {
		t.Fatalf("view after the batches: %+v", v)
	}
}
