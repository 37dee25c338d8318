package datapath

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade-mesh/palisade/bpf"
)

// Identities of the test endpoints (cluster-local range of DESIGN.md section 3).
const (
	idClient = 1001
	idServer = 1002
	idOther  = 1003
)

func TestPolicy_NoEntryDropsSYNAndReportsIt(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b) // enforced ingress, nothing allowed
	echoServer(t, b, 8080, "hello")

	mustBeBlocked(t, a, addrPort(b, 8080))
	ev := n1.events.wait(t, "drop of the SYN to b", and(tcpTo(addrPort(b, 8080)), verdict(bpf.VerdictDenied, bpf.ReasonNoPolicy)))
	if ev.Endpoint != b.id || ev.Direction != bpf.Ingress || ev.SrcIdentity != idClient || ev.DstIdentity != idServer ||
		ev.Src.Addr() != a.IP || ev.TCPFlags&0x02 == 0 {
		t.Errorf("drop event = %+v, want ingress of endpoint %d from identity %d to %d, a SYN from %s", ev, b.id, idClient, idServer, a.IP)
	}
	// a's own egress admitted the flow: that verdict is reported too.
	n1.events.wait(t, "egress allow of a", and(tcpTo(addrPort(b, 8080)), verdict(bpf.VerdictAllowed, bpf.ReasonNone),
		func(ev bpf.Event) bool { return ev.Endpoint == a.id && ev.Direction == bpf.Egress }))
}

func TestPolicy_NoPolicyInstalledDropsEverything(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(b, allowAllIngress)
	echoServer(t, b, 8080, "hello")
	mustBeBlocked(t, a, addrPort(b, 8080)) // a has no policy at all
	n1.events.wait(t, "drop for missing policy", and(tcpTo(addrPort(b, 8080)), verdict(bpf.VerdictDenied, bpf.ReasonNoPolicyMap)))
}

func TestPolicy_Verdicts(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	o := c.addEndpoint(n1, "o", idOther)
	c.policy(a, allowAllEgress)
	c.policy(o, allowAllEgress)
	for _, port := range []int{8080, 8081, 9090} {
		echoServer(t, b, port, "hello")
	}

	cases := []struct {
		name    string
		entries []bpf.PolicyEntry
		from    *endpoint
		port    uint16
		allowed bool
		reason  bpf.DropReason
	}{
		{"exact allow", []bpf.PolicyEntry{allowTCP(idClient, 8080)}, a, 8080, true, 0},
		{"exact allow, other port", []bpf.PolicyEntry{allowTCP(idClient, 8080)}, a, 8081, false, bpf.ReasonNoPolicy},
		{"exact allow, other identity", []bpf.PolicyEntry{allowTCP(idClient, 8080)}, o, 8080, false, bpf.ReasonNoPolicy},
		{"deny beats allow", []bpf.PolicyEntry{allowTCP(idClient, 8080), {Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 8080, Deny: true}}, a, 8080, false, bpf.ReasonDenyRule},
		{"any identity on port", []bpf.PolicyEntry{allowTCP(0, 9090)}, o, 9090, true, 0},
		{"identity on any port", []bpf.PolicyEntry{{Identity: idOther, Direction: bpf.Ingress}}, o, 8081, true, 0},
		{"any TCP port", []bpf.PolicyEntry{{Direction: bpf.Ingress, Protocol: bpf.ProtoTCP}}, a, 8081, true, 0},
		{"UDP wildcard does not admit TCP", []bpf.PolicyEntry{{Direction: bpf.Ingress, Protocol: bpf.ProtoUDP}}, a, 8081, false, bpf.ReasonNoPolicy},
		{"port range", []bpf.PolicyEntry{{Identity: idClient, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 8000, EndPort: 8099}}, a, 8081, true, 0},
		{"egress entry does not admit ingress", []bpf.PolicyEntry{{Identity: idClient, Direction: bpf.Egress}}, a, 8080, false, bpf.ReasonNoPolicy},
		{"deny identity beats port wildcard allow", []bpf.PolicyEntry{allowTCP(0, 9090), {Identity: idOther, Direction: bpf.Ingress, Deny: true}}, o, 9090, false, bpf.ReasonDenyRule},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.policy(b, tc.entries...)
			dst := addrPort(b, tc.port)
			if tc.allowed {
				mustGreet(t, tc.from, dst, "hello")
				return
			}
			mustBeBlocked(t, tc.from, dst)
			n1.events.wait(t, "drop "+tc.reason.String(), and(tcpTo(dst), verdict(bpf.VerdictDenied, tc.reason),
				func(ev bpf.Event) bool { return ev.Src.Addr() == tc.from.IP }))
		})
	}
}

func TestPolicy_RepliesPassThroughConntrackOnly(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	// a admits nothing inbound, b sends nothing of its own: only replies can flow back to a.
	c.policy(a, allowAllEgress)
	c.policy(b, allowTCP(idClient, 8080))
	echoServer(t, b, 8080, "hello")
	echoServer(t, a, 7070, "from a")

	conn, err := dial(a, addrPort(b, 8080), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, err := readGreeting(conn); err != nil || got != "hello" {
		t.Fatalf("greeting %q, %v", got, err)
	}
	for i := 0; i < 3; i++ {
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if got, err := readGreeting(conn); err != nil || got != "ping" {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
	}
	mustBeBlocked(t, b, addrPort(a, 7070))

	flows, err := n1.dp.Conntrack().Dump()
	if err != nil {
		t.Fatal(err)
	}
	var seen [2]bool
	for _, f := range flows {
		if f.Dst != addrPort(b, 8080) || f.Src.Addr() != a.IP {
			continue
		}
		switch {
		case f.Endpoint == a.id && f.Direction == bpf.Egress && f.Identity == idServer:
			seen[0] = true
		case f.Endpoint == b.id && f.Direction == bpf.Ingress && f.Identity == idClient:
			seen[1] = true
		}
		if f.Flags&bpf.FlowEstablished == 0 {
			t.Errorf("flow %v not marked established", f)
		}
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("conntrack has no egress flow of a and ingress flow of b (got %v): %v", seen, flows)
	}
}

func TestPolicy_CountersCountEvaluatedPackets(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b, allowTCP(idClient, 8080), bpf.PolicyEntry{Identity: idClient, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 8081, Deny: true})
	echoServer(t, b, 8080, "hello")
	for i := 0; i < 3; i++ {
		mustGreet(t, a, addrPort(b, 8080), "hello")
	}
	mustBeBlocked(t, a, addrPort(b, 8081))

	stats, err := n1.dp.Policy(b.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stats {
		switch {
		case s.Port == 8080 && (s.Packets != 3 || s.Bytes == 0):
			t.Errorf("allow entry counted %d packets / %d bytes, want 3 SYNs", s.Packets, s.Bytes)
		case s.Port == 8081 && s.Packets < 1:
			t.Errorf("deny entry counted %d packets, want the dropped SYN(s)", s.Packets)
		}
	}
}

func TestPolicy_SpoofedSourceDropped(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b, allowAllIngress)
	echoServer(t, b, 8080, "hello")
	// Give a a second address it is not registered with and send from it.
	spoofed := a.IP.Next().Next().Next()
	h, err := a.NS.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: spoofed.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatalf("add address: %v", err)
	}
	_, err = dial(a, addrPort(b, 8080), dialerFrom(spoofed))
	if err == nil {
		t.Fatal("connection from a spoofed source succeeded")
	}
	n1.events.wait(t, "spoofed source drop", and(tcpTo(addrPort(b, 8080)), verdict(bpf.VerdictDenied, bpf.ReasonSpoofedSource)))
}

// ReplacePolicy swaps the whole map: a flow both policies allow never sees a moment without its
// entry, even while thousands of other entries change with every swap.
func TestPolicy_ReplaceIsAtomicUnderTraffic(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	echoServer(t, b, 8080, "hello")
	variant := func(base uint32) []bpf.PolicyEntry {
		entries := []bpf.PolicyEntry{allowTCP(idClient, 8080)}
		for i := uint32(0); i < 2000; i++ {
			entries = append(entries, allowTCP(base+i, 8080))
		}
		return entries
	}
	policies := [][]bpf.PolicyEntry{variant(100000), variant(200000)}
	c.policy(b, policies[0]...)

	stop := make(chan struct{})
	swapErr := make(chan error, 1)
	swaps := 0
	go func() {
		defer close(swapErr)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := n1.dp.ReplacePolicy(b.id, policies[i%2]); err != nil {
				swapErr <- err
				return
			}
			swaps++
		}
	}()
	deadline := time.Now().Add(1500 * time.Millisecond)
	connections := 0
	for time.Now().Before(deadline) {
		if got, err := greet(a, addrPort(b, 8080)); err != nil || got != "hello" {
			close(stop)
			<-swapErr
			t.Fatalf("connection %d during policy swaps: %q, %v", connections, got, err)
		}
		connections++
	}
	close(stop)
	if err := <-swapErr; err != nil {
		t.Fatal(err)
	}
	if swaps < 3 || connections < 10 {
		t.Fatalf("only %d swaps and %d connections overlapped", swaps, connections)
	}
	t.Logf("%d connections during %d policy swaps", connections, swaps)
	if n := n1.events.count(and(tcpTo(addrPort(b, 8080)), verdict(bpf.VerdictDenied, bpf.ReasonNoPolicy))); n != 0 {
		t.Fatalf("%d drops during atomic swaps", n)
	}
}
