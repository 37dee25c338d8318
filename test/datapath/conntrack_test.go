package datapath

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
)

// closingServer greets each connection and closes it first, so the server side holds TIME_WAIT
// and the client's port can be reused for the same 5-tuple right away.
func closingServer(t *testing.T, ep *endpoint, port int) {
	t.Helper()
	ln, err := ep.NS.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("bye"))
			conn.Close()
		}
	}()
}

func reuseAddrDialer(port int) *net.Dialer {
	return &net.Dialer{
		LocalAddr: &net.TCPAddr{Port: port},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

func TestConntrack_FINClosesFlowAndReusedTupleIsEvaluatedAgain(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{CTTimeoutClosing: time.Second})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b, allowTCP(idClient, 8080))
	closingServer(t, b, 8080)
	const clientPort = 41234
	dst := addrPort(b, 8080)

	connect := func() {
		t.Helper()
		conn, err := dial(a, dst, reuseAddrDialer(clientPort))
		if err != nil {
			t.Fatalf("connect from port %d: %v", clientPort, err)
		}
		got, _ := readGreeting(conn)
		conn.Close()
		if got != "bye" {
			t.Fatalf("greeting %q", got)
		}
	}
	isTuple := func(f bpf.Flow) bool { return f.Dst == dst && f.Src.Port() == clientPort }
	waitClosed := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			flows, err := n1.dp.Conntrack().Dump()
			if err != nil {
				t.Fatal(err)
			}
			closed, total := 0, 0
			for _, f := range flows {
				if isTuple(f) {
					total++
					if f.Flags&bpf.FlowClosed != 0 {
						closed++
					}
				}
			}
			if total == 2 && closed == 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d flows of the tuple closed after FIN, want 2 of 2: %v", closed, total, flows)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	connect()
	waitClosed()
	connect() // same 5-tuple: a new SYN, evaluated again
	waitClosed()

	admitted := func(ev bpf.Event) bool {
		return ev.Verdict == bpf.VerdictAllowed && ev.Endpoint == b.id && ev.Dst == dst && ev.Src.Port() == clientPort
	}
	n1.events.waitCount(t, "verdicts for both connections", admitted, 2)
	stats, err := n1.dp.Policy(b.id)
	if err != nil || len(stats) != 1 || stats[0].Packets != 2 {
		t.Fatalf("policy counters %+v, %v: want the entry evaluated twice", stats, err)
	}

	// Closed flows expire after CTTimeoutClosing and GC removes them.
	time.Sleep(1200 * time.Millisecond)
	n, err := n1.dp.Conntrack().GC()
	if err != nil || n < 2 {
		t.Fatalf("GC removed %d flows, %v; want at least the 2 closed ones", n, err)
	}
	flows, _ := n1.dp.Conntrack().Dump()
	for _, f := range flows {
		if isTuple(f) {
			t.Fatalf("closed flow survived GC: %v", f)
		}
	}
}

func TestConntrack_RemovingAllowCutsNewAndEstablishedFlows(t *testing.T) {
	allow := allowTCP(idClient, 8080)
	removals := map[string]func(dp *bpf.Datapath, ep uint32) error{
		"replace": func(dp *bpf.Datapath, ep uint32) error { return dp.ReplacePolicy(ep, nil) },
		"delta":   func(dp *bpf.Datapath, ep uint32) error { return dp.ApplyPolicyDelta(ep, nil, []bpf.PolicyEntry{allow}) },
		"deny added by delta": func(dp *bpf.Datapath, ep uint32) error {
			return dp.ApplyPolicyDelta(ep, []bpf.PolicyEntry{{Identity: idClient, Direction: bpf.Ingress, Deny: true}}, nil)
		},
	}
	for name, remove := range removals {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t)
			n1 := c.addNode("n1", bpf.Options{})
			a := c.addEndpoint(n1, "a", idClient)
			b := c.addEndpoint(n1, "b", idServer)
			c.policy(a, allowAllEgress)
			c.policy(b, allow)
			echoServer(t, b, 8080, "hello")
			dst := addrPort(b, 8080)

			conn, err := dial(a, dst, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got, err := readGreeting(conn); err != nil || got != "hello" {
				t.Fatalf("greeting %q, %v", got, err)
			}

			if err := remove(n1.dp, b.id); err != nil {
				t.Fatal(err)
			}
			mustBeBlocked(t, a, dst)
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			if n, err := conn.Read(make([]byte, 8)); err == nil {
				t.Fatalf("established flow still carries data (%d bytes) after its allow was removed", n)
			}
			n1.events.wait(t, "drop of the established flow's data", and(tcpTo(dst), verdict(bpf.VerdictDenied, bpf.ReasonNoConntrack)))
			flows, _ := n1.dp.Conntrack().Dump()
			for _, f := range flows {
				if f.Endpoint == b.id {
					t.Errorf("flow of b survived the policy change: %v", f)
				}
			}
		})
	}
}

func TestConntrack_FlushIdentityCutsItsFlows(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b, allowTCP(idClient, 8080))
	echoServer(t, b, 8080, "hello")
	conn, err := dial(a, addrPort(b, 8080), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := readGreeting(conn); err != nil {
		t.Fatal(err)
	}
	n, err := n1.dp.Conntrack().FlushIdentity(idClient)
	if err != nil || n != 1 {
		t.Fatalf("FlushIdentity removed %d flows, %v; want b's ingress flow", n, err)
	}
	n, err = n1.dp.Conntrack().FlushEndpoint(a.id)
	if err != nil || n != 1 {
		t.Fatalf("FlushEndpoint removed %d flows, %v; want a's egress flow", n, err)
	}
	if flows, _ := n1.dp.Conntrack().Dump(); len(flows) != 0 {
		t.Fatalf("flows left: %v", flows)
	}
}

func TestConntrack_UDPReplyPasses(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress) // a admits no inbound packet: the reply rides on conntrack
	c.policy(b, bpf.PolicyEntry{Identity: idClient, Direction: bpf.Ingress, Protocol: bpf.ProtoUDP, Port: 5353})
	pc, err := b.NS.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	conn, err := a.NS.DialTimeout("udp", addrPort(b, 5353).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "query" {
		t.Fatalf("UDP reply %q, %v", buf[:n], err)
	}
}
