package datapath

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
)

const proxyPort = 15001

// testProxy is a minimal transparent proxy inside an endpoint's namespace: it answers each
// redirected connection with "proxied:" and what the real server said on a fresh upstream
// connection to the original destination.
type testProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	origDsts []netip.AddrPort
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, ep *endpoint) *testProxy {
	t.Helper()
	ln, err := ep.NS.Listen("tcp", net.JoinHostPort("127.0.0.1", "15001"))
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer conn.Close()
				orig := conn.LocalAddr().(*net.TCPAddr).AddrPort()
				p.mu.Lock()
				p.origDsts = append(p.origDsts, orig)
				p.mu.Unlock()
				up, err := ep.NS.DialTimeout("tcp", orig.String(), time.Second)
				if err != nil {
					_, _ = io.WriteString(conn, "proxy-upstream-failed:"+err.Error())
					return
				}
				defer up.Close()
				greeting, _ := readGreeting(up)
				_, _ = io.WriteString(conn, "proxied:"+greeting)
			}()
		}
	}()
	return p
}

func (p *testProxy) originalDestinations() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.AddrPort(nil), p.origDsts...)
}

func TestProxy_RedirectReachesListenerWithOriginalDestination(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	o := c.addEndpoint(n1, "o", idOther)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(o, allowAllEgress)
	c.policy(b,
		bpf.PolicyEntry{Identity: idClient, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 80, ProxyPort: proxyPort},
		allowTCP(idOther, 80))
	echoServer(t, b, 80, "server")
	p := startProxy(t, b)
	if err := n1.dp.RegisterProxySocket(proxyPort, p.ln.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	dst := addrPort(b, 80)

	// The upstream connection reached the real server, not the proxy again.
	mustGreet(t, a, dst, "proxied:server")
	if got := p.originalDestinations(); len(got) != 1 || got[0] != dst {
		t.Fatalf("proxy saw original destinations %v, want [%s]", got, dst)
	}
	ev := n1.events.wait(t, "redirect verdict", and(tcpTo(dst), verdict(bpf.VerdictRedirected, bpf.ReasonNone)))
	if ev.ProxyPort != proxyPort || ev.Endpoint != b.id || ev.SrcIdentity != idClient {
		t.Errorf("redirect event %+v", ev)
	}
	// A peer whose entry has no proxy port goes straight to the server.
	mustGreet(t, o, dst, "server")

	// Without its proxy, a flow that needs one is refused rather than let through unfiltered.
	if err := n1.dp.UnregisterProxySocket(proxyPort); err != nil {
		t.Fatal(err)
	}
	if got, err := greet(a, dst); err == nil && got != "" {
		t.Fatalf("flow needing the proxy got %q with no proxy registered", got)
	}
	n1.events.wait(t, "refusal without proxy", and(tcpTo(dst), verdict(bpf.VerdictDenied, bpf.ReasonProxyUnavailable)))
	if n := len(p.originalDestinations()); n != 1 {
		t.Fatalf("proxy accepted %d connections, want 1", n)
	}
}

func TestProxy_RejectsBadRegistration(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	ln, err := a.NS.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n1.dp.RegisterProxySocket(0, ln.(*net.TCPListener)); err == nil {
		t.Error("proxy port 0 accepted")
	}
	udp, err := a.NS.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if err := n1.dp.RegisterProxySocket(proxyPort, udp.(*net.UDPConn)); err == nil {
		t.Error("unconnected UDP socket accepted as a proxy listener")
	}
}
