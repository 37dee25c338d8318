package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
)

// TestPruneIPCache_RemovesOnlyWhatNoSourcePublishes: after a restart, the pinned ipcache holds
// entries from before; those the cluster, the local endpoints and the remote clusters still
// publish stay, the rest go.
func TestPruneIPCache_RemovesOnlyWhatNoSourcePublishes(t *testing.T) {
	dp := testDatapath(t, "prune")
	a := &Agent{
		dp:        dp,
		log:       slog.Default(),
		ipcache:   newClusterIPCache(),
		mesh:      newClusterMesh(meshOptions{}, nil),
		endpoints: map[uint32]*endpoint{},
	}
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cluster, local, remote, gone := p("10.100.2.10/32"), p("10.100.1.10/32"), p("10.102.1.10/32"), p("10.100.2.11/32")
	for _, e := range []netip.Prefix{cluster, local, remote, gone} {
		if err := dp.UpsertIPCache(e, 300); err != nil {
			t.Fatal(err)
		}
	}
	a.ipcache.set(cluster, true)
	a.endpoints[1] = &endpoint{}
	a.endpoints[1].rec.IPv4 = local.Addr()
	a.mesh.ipOwner[remote] = "cluster2"
	close(a.ipcache.synced)

	a.pruneIPCache(context.Background())
	left, err := dp.IPCache()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []netip.Prefix{cluster, local, remote} {
		if _, ok := left[e]; !ok {
			t.Errorf("%s was pruned although a source publishes it", e)
		}
	}
	if _, ok := left[gone]; ok {
		t.Errorf("%s, published by nobody, survived the prune", gone)
	}
}
