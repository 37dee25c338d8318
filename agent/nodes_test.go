package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// TestNodeRoutes_RestartKeepsRemoteRoutesUntilTheMeshSynced: a restarted agent's node registry
// lists first; the routes to remote clusters' pod CIDRs must survive until the cluster mesh has
// said what it wants, and only then are unwanted routes removed.
func TestNodeRoutes_RestartKeepsRemoteRoutesUntilTheMeshSynced(t *testing.T) {
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
	fabricNamespace(t, func() error {
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
}

// fabricNamespace runs fn in a new namespace whose link fab0 has 10.77.0.1/24 (the node's fabric
// address), on ns.Do's locked thread: fn returns failures, never calls t.Fatal.
func fabricNamespace(t *testing.T, fn func() error) {
	t.Helper()
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{})
	ns, err := topo.AddNamespace("routes")
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
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
		return fn()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kernelRoute is the main table's route to p: its gateway and whether the agent installed it.
func kernelRoute(p netip.Prefix) (gw string, ours, found bool) {
	routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}}, netlink.RT_FILTER_DST)
	for _, rt := range routes {
		if rt.Dst != nil && rt.Dst.String() == p.String() {
			return rt.Gw.String(), rt.Protocol == routeProtocol, true
		}
	}
	return "", false, false
}

// TestNodeRoutes_SharedCIDRRoutedUntilItsLastNodeGoes: a pod CIDR two nodes announce is routed
// through the first (a local node before any remote one) and stays while either wants it.
func TestNodeRoutes_SharedCIDRRoutedUntilItsLastNodeGoes(t *testing.T) {
	cidr := netip.MustParsePrefix("10.201.1.0/24")
	fabricNamespace(t, func() error {
		r := newNodeRoutes("self", slog.Default())
		expect := func(step, want string) error {
			gw, _, found := kernelRoute(cidr)
			if want == "" && found {
				return fmt.Errorf("%s: %s still routed via %s", step, cidr, gw)
			}
			if want != "" && gw != want {
				return fmt.Errorf("%s: %s routed via %q (found %v), want %s", step, cidr, gw, found, want)
			}
			return nil
		}
		steps := []struct {
			name string
			do   func() error
			via  string
		}{
			{"cluster2/a announces", func() error {
				return r.setNode(NodeInfo{Name: "cluster2/a", IPs: []string{"10.77.0.2"}, PodCIDRs: []string{cidr.String()}})
			}, "10.77.0.2"},
			{"cluster2/b announces the same", func() error {
				return r.setNode(NodeInfo{Name: "cluster2/b", IPs: []string{"10.77.0.3"}, PodCIDRs: []string{cidr.String()}})
			}, "10.77.0.2"},
			{"local n2 announces the same", func() error {
				return r.setNode(NodeInfo{Name: "n2", IPs: []string{"10.77.0.4"}, PodCIDRs: []string{cidr.String()}})
			}, "10.77.0.4"},
			{"n2 leaves", func() error { r.removeNode("n2"); return nil }, "10.77.0.2"},
			{"cluster2/a leaves", func() error { r.removeNode("cluster2/a"); return nil }, "10.77.0.3"},
			{"cluster2/b renumbers", func() error {
				return r.setNode(NodeInfo{Name: "cluster2/b", IPs: []string{"10.77.0.3"}, PodCIDRs: []string{"10.201.2.0/24"}})
			}, ""},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if err := expect(s.name, s.via); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestMeshImport_KernelRoutesAreNotHijacked imports a hostile remote cluster's nodes through the
// agent's sink into a real routing table: only its own ranges get routes, and the node's routes
// stay as they were.
func TestMeshImport_KernelRoutesAreNotHijacked(t *testing.T) {
	fabricNamespace(t, func() error {
		operator := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 88, 0, 0), Mask: net.CIDRMask(16, 32)}, Gw: net.IPv4(10, 77, 0, 254)}
		topologyRoute := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 202, 1, 0), Mask: net.CIDRMask(24, 32)}, Gw: net.IPv4(10, 77, 0, 2)}
		for _, rt := range []*netlink.Route{operator, topologyRoute} {
			if err := netlink.RouteAdd(rt); err != nil {
				return fmt.Errorf("route %s: %w", rt.Dst, err)
			}
		}
		a := &Agent{cfg: Config{PodCIDR: netip.MustParsePrefix("10.1.1.0/24")}, routes: newNodeRoutes("self", slog.Default())}
		m := newClusterMesh(meshOptions{dir: t.TempDir(), localName: "cluster1", localID: 1, log: slog.New(slog.DiscardHandler)}, agentMeshSink{a})
		// A local node first, as the registry has listed before the mesh starts.
		if err := a.routes.setNode(NodeInfo{Name: "n2", IPs: []string{"10.77.0.5"}, PodCIDRs: []string{"10.1.2.0/24"}}); err != nil {
			return err
		}
		m.testConsumer("cluster3").Apply(remote.Changes{Nodes: []remote.Node{
			node("n1", "10.77.0.3", "128.0.0.0/1", "10.88.0.0/16", "10.77.0.0/24", "10.77.0.1/32", "10.1.2.0/24", "10.203.1.0/24"),
			node("n2", "10.77.0.1", "10.203.2.0/24"),
			node("n3", "10.77.0.2", "10.202.1.0/24"),
		}, Synced: true})

		for _, want := range []struct {
			prefix     string
			gw         string // "" for a connected route, "-" for none
			agentRoute bool
		}{
			{"128.0.0.0/1", "-", false},
			{"10.88.0.0/16", "10.77.0.254", false},
			{"10.77.0.0/24", "<nil>", false},
			{"10.1.2.0/24", "10.77.0.5", true},
			{"10.203.1.0/24", "10.77.0.3", true},
			{"10.203.2.0/24", "-", false},
			{"10.202.1.0/24", "10.77.0.2", true}, // the same route, now the agent's
		} {
			gw, ours, found := kernelRoute(netip.MustParsePrefix(want.prefix))
			switch {
			case want.gw == "-" && found:
				return fmt.Errorf("%s routed via %s", want.prefix, gw)
			case want.gw != "-" && (!found || gw != want.gw || ours != want.agentRoute):
				return fmt.Errorf("%s: found %v via %s (agent's: %v), want via %s (agent's: %v)", want.prefix, found, gw, ours, want.gw, want.agentRoute)
			}
		}
		// The local /32 of this node is untouched in the local table too.
		if h, err := readHostRanges(); err != nil || !h.addrs[netip.MustParseAddr("10.77.0.1")] {
			return fmt.Errorf("host ranges %v, %v: this node's address missing", h, err)
		}
		return nil
	})
}

// TestNodeRoutes_WaitRegistrySyncedUntilTheRegistryListed: the cluster mesh starts only once the
// node registry has listed (the mesh's sync does not count), or not at all if ctx ends first.
func TestNodeRoutes_WaitRegistrySyncedUntilTheRegistryListed(t *testing.T) {
	fabricNamespace(t, func() error {
		r := newNodeRoutes("self", slog.Default())
		waitBriefly := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			return r.waitRegistrySynced(ctx)
		}
		if err := waitBriefly(); !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("before any sync: %v, want the deadline", err)
		}
		r.sourceSynced(routesFromMesh)
		if err := waitBriefly(); !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("after the mesh's sync only: %v, want the deadline", err)
		}
		r.sourceSynced(routesFromRegistry)
		r.sourceSynced(routesFromRegistry) // a watch that re-listed
		if err := waitBriefly(); err != nil {
			return fmt.Errorf("after the registry's sync: %v", err)
		}
		return nil
	})
}
