package agent_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/palisade-mesh/palisade/agent/link"
	"github.com/palisade-mesh/palisade/internal/testenv"
)

// bareNamespace creates an empty named network namespace, removed when the test ends.
func bareNamespace(t *testing.T, role string) string {
	t.Helper()
	name := fmt.Sprintf("pal-lt-%d-%s", os.Getpid(), role)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread ends in the new namespace: let the runtime discard it
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return filepath.Join("/var/run/netns", name)
}

// inNamespace runs fn on a thread inside the namespace at path.
func inNamespace(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func TestLink_SetupWiresBothSidesAndRemoveLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	node := bareNamespace(t, "node")
	ep := bareNamespace(t, "ep")
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
	var ln net.Listener
	if err := inNamespace(node, func() (err error) {
		ln, err = net.Listen("tcp4", "10.123.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if err := inNamespace(ep, func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
		if err != nil {
			return err
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "10.123.0.10" {
			return fmt.Errorf("connected from %s, want the endpoint address", got)
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("endpoint -> gateway: %v", err)
	}

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
	if err := inNamespace(ep, func() error {
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
