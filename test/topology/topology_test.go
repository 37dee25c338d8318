package topology

import (
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/vishvananda/netlink"
)

// echo accepts one connection on ln and echoes what it reads.
func echo(t *testing.T, ln net.Listener) {
	t.Helper()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
}

func roundTrip(t *testing.T, from *Endpoint, to netip.AddrPort) {
	t.Helper()
	c, err := from.NS.DialTimeout("tcp", to.String(), 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, from.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo from %s: %q, %v", to, buf, err)
	}
}

func TestTopology_EndpointsReachEachOtherOnOneAndTwoNodes(t *testing.T) {
	testenv.RequireRoot(t)
	topo := NewForTest(t, Options{})
	n1 := topo.MustAddNode(t, "n1")
	n2 := topo.MustAddNode(t, "n2")
	a := n1.MustAddEndpoint(t, "a")
	b := n1.MustAddEndpoint(t, "b")
	c := n2.MustAddEndpoint(t, "c")

	for _, dst := range []*Endpoint{b, c} {
		ln, err := dst.NS.Listen("tcp", ":7000")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		echo(t, ln)
		roundTrip(t, a, netip.AddrPortFrom(dst.IP, 7000))
	}
	if a.IP.String() != "10.100.1.10" || c.IP.String() != "10.100.2.10" || n1.Gateway.String() != "10.100.1.1" {
		t.Errorf("addresses: a=%s c=%s gw=%s", a.IP, c.IP, n1.Gateway)
	}
}

func TestTopology_RootNamespaceUntouched(t *testing.T) {
	testenv.RequireRoot(t)
	topo := NewForTest(t, Options{})
	n1 := topo.MustAddNode(t, "n1")
	n1.MustAddEndpoint(t, "a")
	// Inspect, never probe: the root namespace must hold no address or route of the topology.
	ours := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.100.0.0/16")}
	overlaps := func(n *net.IPNet) bool {
		if n == nil {
			return false
		}
		ones, _ := n.Mask.Size()
		if ones == 0 {
			return false // the machine's default route is not the topology's
		}
		a, _ := netip.AddrFromSlice(n.IP)
		p := netip.PrefixFrom(a.Unmap(), ones)
		for _, o := range ours {
			if o.Overlaps(p) {
				return true
			}
		}
		return false
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if overlaps(a.IPNet) {
			t.Errorf("root namespace has topology address %s", a.IPNet)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if overlaps(r.Dst) {
			t.Errorf("root namespace has topology route %s", r)
		}
	}
	if left := topo.Leftovers(); len(left) != 3 {
		t.Errorf("Leftovers while open = %v, want the 3 namespaces", left)
	}
}

func TestTopology_CloseRemovesEverything(t *testing.T) {
	testenv.RequireRoot(t)
	topo, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := topo.AddNode("n1")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := n1.AddEndpoint("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if left := topo.Leftovers(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	if _, err := os.Stat(ep.NS.Path); !os.IsNotExist(err) {
		t.Fatalf("namespace %s still exists", ep.NS.Path)
	}
	if err := topo.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n1.AddEndpoint("b"); err == nil {
		t.Fatal("AddEndpoint on a closed topology succeeded")
	}
}

func TestTopology_RejectsBadNames(t *testing.T) {
	testenv.RequireRoot(t)
	topo := NewForTest(t, Options{})
	for _, name := range []string{"", "toolongname", "Upper", "a-b"} {
		if _, err := topo.AddNode(name); err == nil {
			t.Errorf("node name %q accepted", name)
		}
	}
}

func TestNamespace_CommandRunsInside(t *testing.T) {
	testenv.RequireRoot(t)
	ip := testenv.RequireBinary(t, "ip", "apt-get install iproute2")
	topo := NewForTest(t, Options{})
	n1 := topo.MustAddNode(t, "n1")
	out, err := n1.NS.Run(n1.NS.Command(t.Context(), ip, "-o", "addr", "show", "dev", "fab0"))
	if err != nil {
		t.Fatalf("ip addr in node: %v\n%s", err, out)
	}
	if want := n1.FabricIP.String(); !contains(string(out), want) {
		t.Fatalf("ip addr inside node shows %q, want %s", out, want)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
