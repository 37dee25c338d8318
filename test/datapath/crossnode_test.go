package datapath

import (
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
)

func TestCrossNode_IdentityFromSourceAddressDecides(t *testing.T) {
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{})
	n2 := c.addNode("n2", bpf.Options{})
	a := c.addEndpoint(n1, "a", idClient)
	o := c.addEndpoint(n1, "o", idOther)
	s := c.addEndpoint(n2, "s", idServer)
	c.policy(a, allowAllEgress)
	c.policy(o, allowAllEgress)
	c.policy(s, allowTCP(idClient, 8080))
	echoServer(t, s, 8080, "across")
	dst := addrPort(s, 8080)

	mustGreet(t, a, dst, "across")
	mustBeBlocked(t, o, dst)
	ev := n2.events.wait(t, "drop on the receiving node", and(tcpTo(dst), verdict(bpf.VerdictDenied, bpf.ReasonNoPolicy)))
	if ev.SrcIdentity != idOther || ev.DstIdentity != idServer || ev.Endpoint != s.id {
		t.Errorf("drop event %+v: want identity %d -> %d at endpoint %d", ev, idOther, idServer, s.id)
	}
	n1.events.wait(t, "egress verdict on the sending node", and(tcpTo(dst), verdict(bpf.VerdictAllowed, bpf.ReasonNone),
		func(ev bpf.Event) bool { return ev.Endpoint == a.id && ev.DstIdentity == idServer }))

	// Egress policy is enforced on the sending node.
	c.policy(a, bpf.PolicyEntry{Identity: idServer, Direction: bpf.Egress, Protocol: bpf.ProtoTCP, Port: 8080, Deny: true}, allowAllEgress)
	mustBeBlocked(t, a, dst)
	n1.events.wait(t, "egress deny on the sending node", and(tcpTo(dst), verdict(bpf.VerdictDenied, bpf.ReasonDenyRule),
		func(ev bpf.Event) bool { return ev.Endpoint == a.id && ev.Direction == bpf.Egress }))
}
