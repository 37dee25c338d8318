package remote

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

type collect struct{ batches []Changes }

func (c *collect) Apply(ch Changes) { c.batches = append(c.batches, ch) }

// A correct mesh API server never sends what a selected watch did not ask for, so this plays a
// compromised one by handing the stream's responses to the client directly.
func TestClient_SelectedWatchDropsWhatTheSelectorsDidNotAskFor(t *testing.T) {
	layout := identity.DefaultLayout
	id := func(n uint32) identity.ID {
		v, err := layout.ClusterScoped(2, n)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ident := func(n uint32, app string) *apiv1.MeshChange {
		lbls, err := identity.ParseLabels("k8s:app="+app, "k8s:"+identity.LabelCluster+"=cluster2")
		if err != nil {
			t.Fatal(err)
		}
		return &apiv1.MeshChange{Object: &apiv1.MeshChange_Identity{Identity: clustermesh.IdentityToProto(id(n), lbls)}}
	}
	ip := func(prefix string, n uint32) *apiv1.MeshChange {
		return &apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: prefix, Identity: uint32(id(n))}}}
	}
	out := &collect{}
	c := &Client{
		opts:      Options{Config: clustermesh.RemoteConfig{Name: "cluster2"}, Consumer: out, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxIdentities: 10, MaxIPCache: 10, MaxNodes: 10},
		delivered: newView(),
		pending:   newView(),
		valid:     validator{cluster: "cluster2", clusterID: 2, layout: layout},
		scope:     [][]api.Requirement{{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: []string{"a"}}}},
	}
	synced, err := c.handle(&apiv1.MeshWatchResponse{SyncDone: true, Changes: []*apiv1.MeshChange{
		ident(300, "a"), ident(301, "b"), ip("10.2.1.10/32", 300), ip("10.2.1.11/32", 301), ip("10.2.1.12/32", 302),
	}})
	if !synced || err != nil {
		t.Fatalf("handle = %v, %v", synced, err)
	}
	got := out.batches[0]
	if _, ok := got.Identities[id(300)]; len(got.Identities) != 1 || !ok {
		t.Fatalf("identities delivered %v, want only the selected %d", got.Identities, id(300))
	}
	if want := []IPCacheEntry{{Prefix: netip.MustParsePrefix("10.2.1.10/32"), Identity: id(300)}}; !slices.Equal(got.IPCache, want) {
		t.Fatalf("ipcache delivered %v, want %v", got.IPCache, want)
	}
	if st := c.status; st.Rejected != 3 {
		t.Fatalf("rejected %d, want 3", st.Rejected)
	}

	// Live: the selected identity relabelled out of the selectors goes, and so does an entry
	// moved to an identity the client does not hold.
	if _, err := c.handle(&apiv1.MeshWatchResponse{Changes: []*apiv1.MeshChange{ident(300, "b"), ip("10.2.1.10/32", 301)}}); err != nil {
		t.Fatal(err)
	}
	live := out.batches[1]
	if !slices.Equal(live.DeletedIdentities, []identity.ID{id(300)}) || !slices.Equal(live.DeletedIPCache, []netip.Prefix{netip.MustParsePrefix("10.2.1.10/32")}) || len(live.Identities)+len(live.IPCache) != 0 {
		t.Fatalf("live batch %+v, want the deletion of identity %d and of 10.2.1.10/32", live, id(300))
	}
}
