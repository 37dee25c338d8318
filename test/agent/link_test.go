package agent_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade-mesh/palisade/agent/link"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// bareNamespace creates an empty namespace of the topology (removed when the test ends).

func TestLink_SetupWiresBothSidesAndRemoveLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{})
	nodeNS, epNS := topo.MustAddNamespace(t, "node"), topo.MustAddNamespace(t, "ep")
	node, ep := nodeNS.Path, epNS.Path
	cfg := link.Config{
		NodeNetns:     node,
		EndpointNetns: ep,
		IP:            netip.MustParseAddr("10.123.0.10"),
		Gateway:       netip.MustParseAddr("10.123.0.1"),
	}
	l, err := link.Setup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l.HostIfName != link.HostIfNameFor(ep) || len(l.HostIfName) > 15 || l.HostIfIndex == 0 {
		t.Fatalf("link = %+v", l)
	}

	// The node answers on the gateway address; the endpoint reaches it through its routes.
	ln, err := nodeNS.Listen("tcp4", "10.123.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	// The gateway's neighbour entry is permanent, so no ARP delays the first connection.
	if err := epNS.Do(func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(eth.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if n.IP.String() == "10.123.0.1" && n.State == netlink.NUD_PERMANENT {
				return nil
			}
		}
		return fmt.Errorf("no permanent neighbour entry for the gateway: %v", neighs)
	}); err != nil {
		t.Fatal(err)
	}
	c, err := epNS.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("endpoint -> gateway: %v", err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "10.123.0.10" {
		t.Fatalf("connected from %s, want the endpoint address", got)
	}
	c.Close()

	// A second endpoint in the same namespace is refused and leaves no device on the node.
	dup := cfg
	dup.HostIfName = "lxcdup"
	if _, err := link.Setup(dup); err == nil {
		t.Fatal("second link into the same namespace accepted")
	}
	if _, found, _ := link.Lookup(node, "lxcdup"); found {
		t.Fatal("failed setup left its node-side device behind")
	}

	if err := link.Remove(node, l.HostIfName); err != nil {
		t.Fatal(err)
	}
	if _, found, err := link.Lookup(node, l.HostIfName); err != nil || found {
		t.Fatalf("after Remove: found=%v err=%v", found, err)
	}
	if err := epNS.Do(func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 still in the endpoint namespace")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := link.Remove(node, l.HostIfName); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestLink_BadInput(t *testing.T) {
	testenv.RequireRoot(t)
	cases := []struct {
		name string
		cfg  link.Config
	}{
		{"no namespace", link.Config{IP: netip.MustParseAddr("10.0.0.2"), Gateway: netip.MustParseAddr("10.0.0.1")}},
		{"missing namespace", link.Config{EndpointNetns: "/var/run/netns/does-not-exist-pal", IP: netip.MustParseAddr("10.0.0.2"), Gateway: netip.MustParseAddr("10.0.0.1")}},
		{"ipv6", link.Config{EndpointNetns: "/proc/self/ns/net", IP: netip.MustParseAddr("fd00::2"), Gateway: netip.MustParseAddr("fd00::1")}},
	}
	for _, c := range cases {
		if _, err := link.Setup(c.cfg); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
