package datapath

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
)

// echoes reports whether an established connection still carries data both ways.
func echoes(conn net.Conn) bool {
	if _, err := conn.Write([]byte("ping")); err != nil {
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 4)
	_, err := io.ReadFull(conn, buf)
	return err == nil && string(buf) == "ping"
}

// A PolicyBatch changes several endpoints' policies at once and cuts the established flows they
// refuse with one RevokeFlows: new connections are refused from the write on, established ones
// until RevokeFlows, and an endpoint outside the batch keeps its flows.
func TestPolicyBatch_OneRevocationCutsTheEstablishedFlowsOfEveryChangedEndpoint(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	c.policy(a, allowAllEgress)
	allow := allowTCP(idClient, 8080)
	servers := []*endpoint{c.addEndpoint(n1, "b1", idServer), c.addEndpoint(n1, "b2", idServer), c.addEndpoint(n1, "b3", idServer)}
	conns := make([]net.Conn, len(servers))
	for i, s := range servers {
		c.policy(s, allow)
		echoServer(t, s, 8080, "hello")
		conn, err := dial(a, addrPort(s, 8080), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if got, err := readGreeting(conn); err != nil || got != "hello" {
			t.Fatalf("greeting of %s: %q, %v", s.Name, got, err)
		}
		conns[i] = conn
	}

	b := n1.dp.NewPolicyBatch()
	for _, s := range servers[:2] {
		if err := b.ApplyPolicyDelta(s.id, nil, []bpf.PolicyEntry{allow}); err != nil {
			t.Fatal(err)
		}
	}
	mustBeBlocked(t, a, addrPort(servers[0], 8080))
	if !echoes(conns[0]) {
		t.Fatal("the established flow was cut before RevokeFlows")
	}
	n, err := b.RevokeFlows()
	if err != nil || n != 2 {
		t.Fatalf("RevokeFlows = %d, %v; want the 2 ingress flows of b1 and b2", n, err)
	}
	for i, s := range servers {
		if got, want := echoes(conns[i]), i == 2; got != want {
			t.Errorf("connection to %s carries data: %v, want %v", s.Name, got, want)
		}
	}
}
