package agent

import (
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/policy"
)

func TestL7Proxy_PortsAreStablePerKeyAndUnique(t *testing.T) {
	l := &l7Proxy{ports: map[proxyKey]uint16{}, used: map[uint16]proxyKey{}, next: lastProxyPort - 1,
		preferred: map[uint32]map[uint16]uint16{}, reserved: map[uint16]uint32{}}
	a1, _ := l.allocate(proxyKey{endpoint: 1, port: 80, endPort: 80})
	b1, _ := l.allocate(proxyKey{endpoint: 2, port: 80, endPort: 80})
	c1, _ := l.allocate(proxyKey{endpoint: 1, port: 9000, endPort: 9000}) // wraps around
	a2, _ := l.allocate(proxyKey{endpoint: 1, port: 80, endPort: 80})
	if a1 != a2 {
		t.Errorf("same key got ports %d and %d", a1, a2)
	}
	if a1 == b1 || a1 == c1 || b1 == c1 {
		t.Errorf("ports not unique: %d %d %d", a1, b1, c1)
	}
	if c1 != firstProxyPort {
		t.Errorf("allocation did not wrap to %d: got %d", firstProxyPort, c1)
	}
}

func TestL7Proxy_RedirectEntriesGetTheirProxyPort(t *testing.T) {
	web := policy.Key{Identity: 9, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 80}
	anyProto := policy.Key{Identity: 0, Direction: policy.Ingress, Proto: policy.ProtoAny, Port: 9000, EndPort: 9000}
	egress := policy.Key{Identity: 9, Direction: policy.Egress, Proto: policy.ProtoTCP, Port: 53, EndPort: 53}
	ms := policy.MapState{
		web:      {Redirect: true, L7: &policy.L7Policy{Parser: policy.ParserHTTP}},
		anyProto: {Redirect: true, L7: &policy.L7Policy{Parser: "r2d2"}},
		egress:   {Redirect: true, L7: &policy.L7Policy{Parser: policy.ParserDNS}},
	}
	ports := map[policy.Key]uint16{web: 10000, anyProto: 10001}
	entries, _ := datapathEntries(ms)
	entries = append(entries, withProxyPorts(ports)...)
	slices.SortFunc(entries, compareEntries)
	want := []bpf.PolicyEntry{
		{Identity: 0, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 9000, EndPort: 9000, ProxyPort: 10001},
		{Identity: 9, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 80, EndPort: 80, ProxyPort: 10000},
	}
	slices.SortFunc(want, compareEntries)
	if !slices.Equal(entries, want) {
		t.Fatalf("entries\n got  %v\n want %v", entries, want)
	}
	// The egress redirect cannot go through the proxy: it stays out (dropped) and is reported.
	if n := unenforcedL7(ms, ports); n != 1 {
		t.Fatalf("unenforced = %d, want 1", n)
	}
	if !redirectable(web) || !redirectable(anyProto) || redirectable(egress) {
		t.Fatal("redirectable")
	}
}

func TestL7Proxy_AdoptedPortsGoBackToTheirEndpoint(t *testing.T) {
	l := &l7Proxy{ports: map[proxyKey]uint16{}, used: map[uint16]proxyKey{}, next: firstProxyPort,
		preferred: map[uint32]map[uint16]uint16{2: {80: firstProxyPort}}, reserved: map[uint16]uint32{firstProxyPort: 2}}
	// Endpoint 1 regenerates first: it must not take the port the datapath gives endpoint 2's flows.
	p1, _ := l.allocate(proxyKey{endpoint: 1, port: 80, endPort: 80})
	p2, _ := l.allocate(proxyKey{endpoint: 2, port: 80, endPort: 80})
	if p1 == firstProxyPort || p2 != firstProxyPort {
		t.Fatalf("endpoint 1 got %d, endpoint 2 got %d; want endpoint 2 to keep %d", p1, p2, firstProxyPort)
	}
}
