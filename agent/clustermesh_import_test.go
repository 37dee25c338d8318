package agent

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/clustermesh/remote/remotetest"
	"github.com/palisade-mesh/palisade/identity"
)

// The fake node of meshTestSink has no address or route of its own.
func (s *meshTestSink) hostRanges() (hostRanges, error) { return hostRanges{}, nil }

// importSink is meshTestSink on a node with addresses and routes, whose datapath can refuse
// writes.
type importSink struct {
	*meshTestSink
	host       hostRanges
	hostErr    error
	failUpsert map[netip.Prefix]bool
}

func (s *importSink) hostRanges() (hostRanges, error) { return s.host, s.hostErr }

func (s *importSink) upsertIPCache(p netip.Prefix, id identity.ID) error {
	if s.failUpsert[p] {
		return errors.New("ipcache map full")
	}
	return s.meshTestSink.upsertIPCache(p, id)
}

// newImportMesh is a mesh fed directly, without remote clients: cluster1 (pod CIDR 10.1.1.0/24)
// on a node with address 10.99.0.1 on the fabric 10.99.0.0/24, a static route 10.50.0.0/16 via
// 10.99.0.254, a route to 10.60.1.0/24 through cluster2's node 10.99.2.1 and a default route.
func newImportMesh(t *testing.T) (*clusterMesh, *importSink) {
	t.Helper()
	sink := &importSink{meshTestSink: newMeshTestSink(t), failUpsert: map[netip.Prefix]bool{}, host: hostRanges{
		addrs: map[netip.Addr]bool{netip.MustParseAddr("10.99.0.1"): true, netip.MustParseAddr("127.0.0.1"): true},
		routes: []hostRoute{
			{dst: netip.MustParsePrefix("10.99.0.0/24")},
			{dst: netip.MustParsePrefix("10.99.0.1/32")},
			{dst: netip.MustParsePrefix("127.0.0.0/8")},
			{dst: netip.MustParsePrefix("10.50.0.0/16"), gw: netip.MustParseAddr("10.99.0.254")},
			{dst: netip.MustParsePrefix("10.60.1.0/24"), gw: netip.MustParseAddr("10.99.2.1")},
		},
	}}
	m := newClusterMesh(meshOptions{dir: t.TempDir(), localName: "cluster1", localID: 1, layout: identity.DefaultLayout, log: remotetest.Quiet()}, sink)
	return m, sink
}

func (m *clusterMesh) testConsumer(name string) *meshConsumer {
	rc := &remoteCluster{name: name, synced: make(chan struct{}), imported: newImported()}
	m.mu.Lock()
	m.remotes[name] = rc
	m.mu.Unlock()
	return &meshConsumer{m: m, rc: rc}
}

func node(name, ip string, cidrs ...string) remote.Node {
	n := remote.Node{Name: name, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	for _, c := range cidrs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	return n
}

func entry(prefix string, id identity.ID) remote.IPCacheEntry {
	return remote.IPCacheEntry{Prefix: netip.MustParsePrefix(prefix), Identity: id}
}

// routed lists the pod CIDRs routed through a remote node, as the sink got them.
func (s *importSink) routed(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.routes[name].PodCIDRs {
		out = append(out, p.String())
	}
	return out
}

func (s *importSink) ipcacheEntries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p, id := range s.ipcache {
		out = append(out, p.String()+"="+id.String())
	}
	slices.Sort(out)
	return out
}

func TestMeshImport_PodCIDRsThatWouldHijackRoutesAreRefused(t *testing.T) {
	m, sink := newImportMesh(t)
	c2, c3 := m.testConsumer("cluster2"), m.testConsumer("cluster3")
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24", "10.60.1.0/24")}, Synced: true})
	if got := sink.routed("cluster2/n1"); !slices.Equal(got, []string{"10.2.1.0/24", "10.60.1.0/24"}) {
		t.Fatalf("cluster2's own pod CIDRs routed as %v (10.60.1.0/24 is already routed through the same node)", got)
	}

	for _, tc := range []struct {
		name string
		node remote.Node
		want []string // the CIDRs routed
	}{
		{"half the address space", node("n1", "10.99.3.1", "128.0.0.0/1", "10.3.1.0/24"), []string{"10.3.1.0/24"}},
		{"shorter than /8", node("n2", "10.99.3.2", "11.0.0.0/7"), nil},
		{"the node network", node("n3", "10.99.3.3", "10.99.0.0/24"), nil},
		{"inside the node network", node("n4", "10.99.3.4", "10.99.0.128/25"), nil},
		{"this node's address", node("n5", "10.99.3.5", "10.99.0.1/32"), nil},
		{"an operator's route", node("n6", "10.99.3.6", "10.50.7.0/24"), nil},
		{"a route through another node", node("n7", "10.99.3.7", "10.60.1.0/24"), nil},
		{"loopback", node("n8", "10.99.3.8", "127.0.0.0/24"), nil},
		{"multicast", node("n9", "10.99.3.9", "239.1.0.0/16"), nil},
		{"the local pod CIDR", node("n10", "10.99.3.10", "10.1.0.0/16"), nil},
		{"cluster2's pod CIDR", node("n11", "10.99.3.11", "10.2.1.0/24"), nil},
		{"a range around cluster2's pod CIDR", node("n12", "10.99.3.12", "10.2.0.0/16"), nil},
		{"IPv6", node("n13", "10.99.3.13", "fd00::/64"), nil},
		{"via this node's address", node("n14", "10.99.0.1", "10.3.14.0/24"), nil},
		{"via loopback", node("n15", "127.0.0.1", "10.3.15.0/24"), nil},
		{"via a local pod", node("n16", "10.1.1.7", "10.3.16.0/24"), nil},
		{"via an unspecified address", node("n17", "0.0.0.0", "10.3.17.0/24"), nil},
	} {
		before := c3.rc.imported.refused()
		c3.Apply(remote.Changes{Nodes: []remote.Node{tc.node}})
		if got := sink.routed("cluster3/" + tc.node.Name); !slices.Equal(got, tc.want) {
			t.Errorf("%s: routed %v, want %v", tc.name, got, tc.want)
		}
		if c3.rc.imported.refused() == before {
			t.Errorf("%s: the refusal was not counted", tc.name)
		}
	}
	if got := sink.routed("cluster2/n1"); !slices.Equal(got, []string{"10.2.1.0/24", "10.60.1.0/24"}) {
		t.Fatalf("cluster2's routes changed to %v", got)
	}
	if st := m.status(); st.Clusters[1].Name != "cluster3" || st.Clusters[1].Rejected != 17 {
		t.Fatalf("status: %v", st.Clusters)
	}

	// Once cluster2 is gone its range is free.
	c2.Apply(remote.Changes{DeletedNodes: []string{"n1"}})
	c3.Apply(remote.Changes{Nodes: []remote.Node{node("n11", "10.99.3.11", "10.2.1.0/24")}})
	if got := sink.routed("cluster3/n11"); !slices.Equal(got, []string{"10.2.1.0/24"}) {
		t.Fatalf("a pod CIDR no other cluster holds any more: routed %v", got)
	}
}

func TestMeshImport_IPCacheOnlyInsideTheClustersOwnPodCIDRs(t *testing.T) {
	m, sink := newImportMesh(t)
	c2, c3 := m.testConsumer("cluster2"), m.testConsumer("cluster3")
	id2, id3 := identity.ID(2<<16|300), identity.ID(3<<16|300)
	c2.Apply(remote.Changes{
		Nodes:   []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24")},
		IPCache: []remote.IPCacheEntry{entry("10.2.1.10/32", id2)},
		Synced:  true,
	})
	c3.Apply(remote.Changes{
		Nodes: []remote.Node{node("n1", "10.99.3.1", "10.3.1.0/24")},
		IPCache: []remote.IPCacheEntry{
			entry("10.3.1.10/32", id3),
			entry("10.2.1.7/32", id3),  // inside cluster2's pod CIDR
			entry("10.2.0.0/16", id3),  // around it
			entry("10.3.0.0/16", id3),  // wider than its own CIDR
			entry("10.99.0.1/32", id3), // this node
		},
		Synced: true,
	})
	want := []string{"10.2.1.10/32=" + id2.String(), "10.3.1.10/32=" + id3.String()}
	if got := sink.ipcacheEntries(); !slices.Equal(got, want) {
		t.Fatalf("ipcache %v, want %v", got, want)
	}
	// A later node of cluster3 announcing cluster2's range changes nothing either.
	c3.Apply(remote.Changes{Nodes: []remote.Node{node("n2", "10.99.3.2", "10.2.1.0/24")}})
	if got := sink.ipcacheEntries(); !slices.Equal(got, want) {
		t.Fatalf("after cluster3 announced cluster2's range: ipcache %v, want %v", got, want)
	}
}

func TestMeshImport_EntriesWaitForTheirPodCIDR(t *testing.T) {
	m, sink := newImportMesh(t)
	c2 := m.testConsumer("cluster2")
	id := identity.ID(2<<16 | 300)
	e1, e2 := "10.2.1.10/32="+id.String(), "10.2.2.10/32="+id.String()
	check := func(what string, want ...string) {
		t.Helper()
		if got := sink.ipcacheEntries(); !slices.Equal(got, want) {
			t.Fatalf("%s: ipcache %v, want %v", what, got, want)
		}
	}

	// Entries before their nodes wait for them.
	c2.Apply(remote.Changes{IPCache: []remote.IPCacheEntry{entry("10.2.1.10/32", id), entry("10.2.2.10/32", id)}})
	check("before the nodes")
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24")}})
	check("after n1", e1)
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n2", "10.99.2.2", "10.2.2.0/24")}, Synced: true})
	check("after n2", e1, e2)

	// A node that goes takes its entries out of the datapath; they come back with it.
	c2.Apply(remote.Changes{DeletedNodes: []string{"n2"}})
	check("n2 gone", e1)
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n2", "10.99.2.2", "10.2.2.0/24")}})
	check("n2 back", e1, e2)

	// A node renumbered: entries of its old CIDR wait.
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n2", "10.99.2.2", "10.2.3.0/24")}})
	check("n2 renumbered", e1)

	// A withdrawn entry does not wait any more.
	c2.Apply(remote.Changes{DeletedIPCache: []netip.Prefix{netip.MustParsePrefix("10.2.2.10/32")}})
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n2", "10.99.2.2", "10.2.2.0/24")}})
	check("a withdrawn entry's CIDR back", e1)

	// An entry refused because another cluster held its CIDR comes in once that cluster went
	// and its own node is announced again.
	c3 := m.testConsumer("cluster3")
	id3 := identity.ID(3<<16 | 300)
	c3.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.3.1", "10.2.1.0/24")}, IPCache: []remote.IPCacheEntry{entry("10.2.1.20/32", id3)}, Synced: true})
	check("cluster3 in cluster2's range", e1)
	m.withdraw(c2.rc)
	check("cluster2 withdrawn")
	c3.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.3.1", "10.2.1.0/24")}})
	check("cluster3's node announced again", "10.2.1.20/32="+id3.String())

	// Withdrawing a cluster drops its waiting entries too.
	c3.Apply(remote.Changes{IPCache: []remote.IPCacheEntry{entry("10.9.0.1/32", id3)}})
	m.withdraw(c3.rc)
	if ids, ips, nodes := c3.rc.imported.counts(); ids+ips+nodes != 0 || len(c3.rc.imported.pending) != 0 {
		t.Fatalf("after the withdrawal cluster3 holds %d identities, %d entries, %d nodes, %d waiting", ids, ips, nodes, len(c3.rc.imported.pending))
	}
	check("everything withdrawn")
}

// Two nodes of a cluster announcing one pod CIDR: the entries inside it stay while either does.
func TestMeshImport_SharedPodCIDRStaysWhileANodeAnnouncesIt(t *testing.T) {
	m, sink := newImportMesh(t)
	c2 := m.testConsumer("cluster2")
	id := identity.ID(2<<16 | 300)
	c2.Apply(remote.Changes{
		Nodes:   []remote.Node{node("old", "10.99.2.1", "10.2.1.0/24"), node("new", "10.99.2.2", "10.2.1.0/24")},
		IPCache: []remote.IPCacheEntry{entry("10.2.1.10/32", id)},
		Synced:  true,
	})
	c2.Apply(remote.Changes{DeletedNodes: []string{"old"}})
	if got := sink.ipcacheEntries(); !slices.Equal(got, []string{"10.2.1.10/32=" + id.String()}) {
		t.Fatalf("after one of two nodes went: ipcache %v", got)
	}
	c2.Apply(remote.Changes{DeletedNodes: []string{"new"}})
	if got := sink.ipcacheEntries(); len(got) != 0 {
		t.Fatalf("after both nodes went: ipcache %v", got)
	}
}

// A datapath write that fails leaves no claim behind: the local cluster may still write the prefix.
func TestMeshImport_FailedIPCacheWriteReleasesTheClaim(t *testing.T) {
	m, sink := newImportMesh(t)
	c2 := m.testConsumer("cluster2")
	p := netip.MustParsePrefix("10.2.1.10/32")
	sink.failUpsert[p] = true
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24")}, IPCache: []remote.IPCacheEntry{entry(p.String(), 2<<16|300)}, Synced: true})
	ran := false
	m.withoutPrefix(p, func() { ran = true })
	if !ran {
		t.Fatalf("a failed ipcache write left cluster2's claim on %s", p)
	}
	if _, ips, _ := c2.rc.imported.counts(); ips != 0 {
		t.Fatalf("a failed write counts as %d imported entries", ips)
	}
}

// While this node's routes cannot be read nothing remote is routed: what it would overlap is
// unknown.
func TestMeshImport_NoRoutesWhileTheNodesRoutesAreUnreadable(t *testing.T) {
	m, sink := newImportMesh(t)
	sink.hostErr = errors.New("netlink dump interrupted")
	c2 := m.testConsumer("cluster2")
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24")}, IPCache: []remote.IPCacheEntry{entry("10.2.1.10/32", 2<<16|300)}})
	if got := sink.routed("cluster2/n1"); len(got) != 0 || len(sink.ipcacheEntries()) != 0 {
		t.Fatalf("routed %v and wrote %v without knowing this node's routes", got, sink.ipcacheEntries())
	}
	sink.hostErr = nil
	c2.Apply(remote.Changes{Nodes: []remote.Node{node("n1", "10.99.2.1", "10.2.1.0/24")}})
	if got := sink.routed("cluster2/n1"); !slices.Equal(got, []string{"10.2.1.0/24"}) || len(sink.ipcacheEntries()) != 1 {
		t.Fatalf("once readable: routed %v, ipcache %v", got, sink.ipcacheEntries())
	}
}

// The agent's local ranges: its own and the other local nodes' pod CIDRs and addresses, never a
// remote node's.
func TestAgentMeshSink_LocalRangesAreTheLocalNodesPodCIDRsAndAddresses(t *testing.T) {
	r := newNodeRoutes("self", remotetest.Quiet())
	r.byNode["n2"], r.vias["n2"] = []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}, netip.MustParseAddr("192.168.50.2")
	r.byNode["cluster2/n1"], r.vias["cluster2/n1"] = []netip.Prefix{netip.MustParsePrefix("10.2.1.0/24")}, netip.MustParseAddr("192.168.60.1")
	sink := agentMeshSink{&Agent{cfg: Config{PodCIDR: netip.MustParsePrefix("10.1.1.0/24"), NodeIP: netip.MustParseAddr("192.168.50.1")}, routes: r}}
	for p, want := range map[string]bool{
		"10.1.1.7/32":     true, // this node's pods
		"10.1.0.0/16":     true,
		"10.1.2.0/25":     true, // another local node's pods
		"192.168.50.1/32": true, // this node
		"192.168.50.2/32": true, // another local node
		"192.168.50.0/24": true,
		"10.2.1.0/24":     false, // a remote node's pods
		"192.168.60.1/32": false, // a remote node
		"10.3.0.0/16":     false,
	} {
		if got := sink.isLocalRange(netip.MustParsePrefix(p)); got != want {
			t.Errorf("isLocalRange(%s) = %v, want %v", p, got, want)
		}
	}
}
