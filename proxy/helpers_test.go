package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// Identities of the tests: the server endpoint and its clients, told apart by loopback source
// address.
const (
	idServer     = 1000
	idTiefighter = 1001
	idDroid      = 1002
)

var identityLabels = map[identity.ID][]string{
	idServer:     {"k8s:org=empire", "k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=default"},
	idTiefighter: {"k8s:org=empire", "k8s:class=tiefighter", "k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=default"},
	idDroid:      {"k8s:org=empire", "k8s:class=maintenance-droid", "k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=default"},
}

// sourceAddrs maps loopback client addresses to identities.
var sourceAddrs = map[netip.Addr]uint32{
	netip.MustParseAddr("127.0.0.11"): idTiefighter,
	netip.MustParseAddr("127.0.0.12"): idDroid,
}

// mapStateFor computes the server's policy from YAML with the real policy engine.
func mapStateFor(t testing.TB, yaml string) policy.MapState {
	t.Helper()
	pols, _, err := api.Decode([]byte(yaml), api.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(policy.Options{ClusterName: "default"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[identity.ID]identity.Labels{}
	for id, ls := range identityLabels {
		l, err := identity.ParseLabels(ls...)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = l
	}
	eng.UpdateIdentities(ids, nil)
	if _, _, err := eng.ReplacePolicies(pols, nil); err != nil {
		t.Fatal(err)
	}
	ms, err := eng.AddEndpoint(idServer)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// events collects access-log events.
type events struct {
	mu  sync.Mutex
	evs []monitor.Event
}

func (e *events) publish(ev monitor.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) list() []monitor.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]monitor.Event(nil), e.evs...)
}

// waitFor waits until an event satisfies match.
func (e *events) waitFor(t *testing.T, what string, match func(monitor.Event) bool) monitor.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range e.list() {
			if match(ev) {
				return ev
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no access-log event for %s; have %v", what, e.list())
	return monitor.Event{}
}

// testProxy is a proxy endpoint on loopback: upstream is the real server, the listener takes
// clients directly (the datapath's sk_lookup redirect is what test/proxy covers). Because the
// listener is not the original destination here, newClientConn's origDst is overridden through
// upstreamOverride.
type testProxy struct {
	p      *Proxy
	ep     *Endpoint
	ln     *net.TCPListener
	events *events
}

func newTestProxy(t testing.TB, opts Options, ms policy.MapState, upstream string) *testProxy {
	t.Helper()
	ev := &events{}
	opts.SourceIdentity = func(a netip.Addr) (uint32, bool) {
		id, ok := sourceAddrs[a]
		return id, ok
	}
	if opts.Publish == nil {
		opts.Publish = ev.publish
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := p.Endpoint(EndpointConfig{ID: 7, Identity: idServer})
	if err != nil {
		t.Fatal(err)
	}
	ep.upstreamOverride = upstream
	ep.SetPolicy(ms)
	ln, err := ep.Listen(15001)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &testProxy{p: p, ep: ep, ln: ln, events: ev}
}

// dialFrom connects to the proxy from a loopback source address (and so an identity).
func (tp *testProxy) dialFrom(t testing.TB, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.DialContext(context.Background(), "tcp", tp.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
