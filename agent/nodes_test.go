package agent

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// TestNodeRoutes_RestartKeepsRemoteRoutesUntilTheMeshSynced: a restarted agent's node registry
// lists first; the routes to remote clusters' pod CIDRs must survive until the cluster mesh has
// said what it wants, and only then are unwanted routes removed.
func TestNodeRoutes_RestartKeepsRemoteRoutesUntilTheMeshSynced(t *testing.T) {
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{})
	ns, err := topo.AddNamespace("routes")
	if err != nil {
		t.Fatal(err)
	}
	remoteCIDR := netip.MustParsePrefix("10.201.1.0/24")
	// Runs inside ns.Do, on its locked thread: failures are returned, never t.Fatal.
	hasRoute := func() bool {
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		for _, rt := range routes {
			if rt.Dst != nil && rt.Dst.String() == remoteCIDR.String() {
				return true
			}
		}
		return false
	}
	err = ns.Do(func() error {
		// A veth pair inside the namespace stands in for the node's fabric link.
		fabric := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fab0"}, PeerName: "fab1"}
		if err := netlink.LinkAdd(fabric); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("fab1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		if err := netlink.AddrAdd(fabric, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 77, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(fabric); err != nil {
			return err
		}
		before := newNodeRoutes("self", slog.Default())
		if err := before.setNode(NodeInfo{Name: "cluster2/n1", IPs: []string{"10.77.0.2"}, PodCIDRs: []string{remoteCIDR.String()}}); err != nil {
			return err
		}
		if !hasRoute() {
			return errors.New("the remote node's route was not installed")
		}

		restarted := newNodeRoutes("self", slog.Default())
		restarted.sourceSynced(routesFromRegistry)
		if !hasRoute() {
			return errors.New("the node registry's sync removed a remote cluster's route before the mesh synced")
		}
		restarted.sourceSynced(routesFromMesh)
		if hasRoute() {
			return errors.New("a route no source wants survived once every source synced")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
