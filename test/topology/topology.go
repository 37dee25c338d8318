package topology

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/palisade-mesh/palisade/agent/link"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Options shape a topology. The zero value gives the defaults documented on each field.
type Options struct {
	// Prefix starts every namespace name (default "pal"). Names are <prefix>-<suffix>-<role>.
	Prefix string
	// FabricCIDR holds the nodes' fabric addresses: node i (from 1) gets host i (default 10.99.0.0/24).
	FabricCIDR netip.Prefix
	// PodCIDRBase is split into /24s, one per node: node i gets the i-th (default 10.100.0.0/16,
	// so node 1 has 10.100.1.0/24). The gateway is .1, endpoints get .10 onwards.
	PodCIDRBase netip.Prefix
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "pal"
	}
	if !o.FabricCIDR.IsValid() {
		o.FabricCIDR = netip.MustParsePrefix("10.99.0.0/24")
	}
	if !o.PodCIDRBase.IsValid() {
		o.PodCIDRBase = netip.MustParsePrefix("10.100.0.0/16")
	}
	return o
}

// Topology is a fabric with nodes and endpoints, all in namespaces it owns.
type Topology struct {
	opts   Options
	suffix string
	// Fabric is the namespace holding the bridge that connects the nodes.
	Fabric *Namespace

	mu     sync.Mutex
	nodes  []*Node
	bare   []*Namespace
	closed bool
}

// Node is a node namespace attached to the fabric.
type Node struct {
	Name     string
	NS       *Namespace
	FabricIP netip.Addr   // on the node's fab0 device
	PodCIDR  netip.Prefix // the node's endpoints' addresses
	Gateway  netip.Addr   // the endpoints' gateway: on every lxc* device of the node

	topo      *Topology
	index     int
	endpoints []*Endpoint
}

// Endpoint is an endpoint namespace attached to its node by a veth pair.
type Endpoint struct {
	Name string
	NS   *Namespace
	IP   netip.Addr
	Node *Node
	// HostIf and HostIfIndex name the node-side veth (in Node.NS), where the datapath attaches.
	HostIf      string
	HostIfIndex int
}

const (
	bridgeName = "br0"
	fabricIf   = "fab0"
	endpointIf = "eth0"
)

// New creates the fabric namespace and its bridge.
func New(opts Options) (*Topology, error) {
	opts = opts.withDefaults()
	if !opts.FabricCIDR.Addr().Is4() || !opts.PodCIDRBase.Addr().Is4() || opts.PodCIDRBase.Bits() > 16 {
		return nil, fmt.Errorf("topology: need IPv4 FabricCIDR and a PodCIDRBase of /16 or wider, got %v and %v", opts.FabricCIDR, opts.PodCIDRBase)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("topology: random suffix: %w", err)
	}
	t := &Topology{opts: opts, suffix: hex.EncodeToString(b[:])}
	fabric, err := createNamespace(t.nsName("fab"))
	if err != nil {
		return nil, err
	}
	t.Fabric = fabric
	if err := t.setupFabric(); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	return t, nil
}

// NewForTest is New for tests: it fails t on error and closes the topology when t ends, reporting
// anything that could not be removed.
func NewForTest(t testing.TB, opts Options) *Topology {
	t.Helper()
	topo, err := New(opts)
	if err != nil {
		t.Fatalf("create topology: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("remove topology: %v", err)
		}
		if left := topo.Leftovers(); len(left) > 0 {
			t.Errorf("topology left behind: %v", left)
		}
	})
	return topo
}

// Suffix is the random part of every name of this topology.
func (t *Topology) Suffix() string { return t.suffix }

func (t *Topology) nsName(role string) string {
	return t.opts.Prefix + "-" + t.suffix + "-" + role
}

func (t *Topology) setupFabric() error {
	h, err := t.Fabric.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("fabric: add bridge: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("fabric: set bridge up: %w", err)
	}
	return nil
}

// Nodes returns the nodes in the order they were added.
func (t *Topology) Nodes() []*Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Node(nil), t.nodes...)
}

// AddNode creates a node namespace, attaches it to the fabric, enables forwarding in it and routes
// every other node's pod CIDR through that node's fabric address (both ways).
func (t *Topology) AddNode(name string) (*Node, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("topology is closed")
	}
	index := len(t.nodes) + 1
	if index > 200 {
		return nil, errors.New("topology: at most 200 nodes")
	}
	ns, err := createNamespace(t.nsName(name))
	if err != nil {
		return nil, err
	}
	n := &Node{
		Name:     name,
		NS:       ns,
		FabricIP: nthAddr(t.opts.FabricCIDR.Masked().Addr(), index),
		PodCIDR:  netip.PrefixFrom(nthAddr(t.opts.PodCIDRBase.Masked().Addr(), index<<8), 24),
		topo:     t,
		index:    index,
	}
	n.Gateway = n.PodCIDR.Addr().Next()
	// Registered before wiring so that Close removes it even when wiring fails.
	t.nodes = append(t.nodes, n)
	if err := t.wireNode(n); err != nil {
		return nil, err
	}
	return n, nil
}

// MustAddNode is AddNode failing tb on error.
func (t *Topology) MustAddNode(tb testing.TB, name string) *Node {
	tb.Helper()
	n, err := t.AddNode(name)
	if err != nil {
		tb.Fatalf("add node %s: %v", name, err)
	}
	return n
}

func (t *Topology) wireNode(n *Node) error {
	fh, err := t.Fabric.Handle()
	if err != nil {
		return err
	}
	defer fh.Close()
	nh, err := n.NS.Handle()
	if err != nil {
		return err
	}
	defer nh.Close()

	nodeNS, err := netns.GetFromPath(n.NS.Path)
	if err != nil {
		return fmt.Errorf("node %s: open namespace: %w", n.Name, err)
	}
	defer nodeNS.Close()
	fabSide := "n-" + n.Name
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fabSide}, PeerName: fabricIf, PeerNamespace: netlink.NsFd(nodeNS)}
	if err := fh.LinkAdd(veth); err != nil {
		return fmt.Errorf("node %s: add fabric veth: %w", n.Name, err)
	}
	br, err := fh.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("fabric: find bridge: %w", err)
	}
	fl, err := fh.LinkByName(fabSide)
	if err != nil {
		return fmt.Errorf("node %s: find fabric veth: %w", n.Name, err)
	}
	if err := fh.LinkSetMaster(fl, br); err != nil {
		return fmt.Errorf("node %s: attach to bridge: %w", n.Name, err)
	}
	if err := fh.LinkSetUp(fl); err != nil {
		return fmt.Errorf("node %s: set fabric veth up: %w", n.Name, err)
	}
	nl, err := nh.LinkByName(fabricIf)
	if err != nil {
		return fmt.Errorf("node %s: find %s: %w", n.Name, fabricIf, err)
	}
	addr := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(n.FabricIP, t.opts.FabricCIDR.Bits()))}
	if err := nh.AddrAdd(nl, addr); err != nil {
		return fmt.Errorf("node %s: address %s: %w", n.Name, n.FabricIP, err)
	}
	if err := nh.LinkSetUp(nl); err != nil {
		return fmt.Errorf("node %s: set %s up: %w", n.Name, fabricIf, err)
	}
	if err := n.NS.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	for _, other := range t.nodes {
		if other == n {
			continue
		}
		if err := other.routeTo(n); err != nil {
			return err
		}
		if err := n.routeTo(other); err != nil {
			return err
		}
	}
	return nil
}

// routeTo routes other's pod CIDR via other's fabric address.
func (n *Node) routeTo(other *Node) error {
	h, err := n.NS.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(fabricIf)
	if err != nil {
		return fmt.Errorf("node %s: find %s: %w", n.Name, fabricIf, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(other.PodCIDR), Gw: net.IP(other.FabricIP.AsSlice())}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("node %s: route %s via %s: %w", n.Name, other.PodCIDR, other.FabricIP, err)
	}
	return nil
}

// Endpoints returns the node's endpoints in the order they were added.
func (n *Node) Endpoints() []*Endpoint {
	n.topo.mu.Lock()
	defer n.topo.mu.Unlock()
	return append([]*Endpoint(nil), n.endpoints...)
}

// AddEndpoint creates an endpoint namespace with eth0 joined to a new lxc<name> device on the
// node, addressed and routed as DATAPATH.md describes.
func (n *Node) AddEndpoint(name string) (*Endpoint, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	t := n.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("topology is closed")
	}
	k := len(n.endpoints)
	if k >= 240 {
		return nil, fmt.Errorf("node %s: at most 240 endpoints", n.Name)
	}
	ns, err := createNamespace(t.nsName(n.Name + "-" + name))
	if err != nil {
		return nil, err
	}
	ep := &Endpoint{Name: name, NS: ns, Node: n, IP: nthAddr(n.PodCIDR.Addr(), 10+k), HostIf: "lxc" + name}
	n.endpoints = append(n.endpoints, ep)
	if err := ep.wire(); err != nil {
		return nil, err
	}
	return ep, nil
}

// MustAddEndpoint is AddEndpoint failing tb on error.
func (n *Node) MustAddEndpoint(tb testing.TB, name string) *Endpoint {
	tb.Helper()
	ep, err := n.AddEndpoint(name)
	if err != nil {
		tb.Fatalf("add endpoint %s on %s: %v", name, n.Name, err)
	}
	return ep
}

func (ep *Endpoint) wire() error {
	l, err := link.Setup(link.Config{
		NodeNetns:      ep.Node.NS.Path,
		EndpointNetns:  ep.NS.Path,
		HostIfName:     ep.HostIf,
		EndpointIfName: endpointIf,
		IP:             ep.IP,
		Gateway:        ep.Node.Gateway,
	})
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", ep.Name, err)
	}
	ep.HostIfIndex = l.HostIfIndex
	return nil
}

// RemoveEndpoint deletes the endpoint's namespace, which removes its veth pair from the node too.
func (n *Node) RemoveEndpoint(ep *Endpoint) error {
	n.topo.mu.Lock()
	defer n.topo.mu.Unlock()
	for i, e := range n.endpoints {
		if e == ep {
			n.endpoints = append(n.endpoints[:i], n.endpoints[i+1:]...)
			return ep.NS.delete()
		}
	}
	return fmt.Errorf("node %s: endpoint %s is not one of its endpoints", n.Name, ep.Name)
}

// AddNamespace creates an empty namespace (loopback up, nothing else) named after role, for an
// endpoint that an agent wires itself. Close deletes it.
func (t *Topology) AddNamespace(role string) (*Namespace, error) {
	if err := checkName(role); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("topology is closed")
	}
	ns, err := createNamespace(t.nsName(role))
	if err != nil {
		return nil, err
	}
	t.bare = append(t.bare, ns)
	return ns, nil
}

// MustAddNamespace is AddNamespace failing tb on error.
func (t *Topology) MustAddNamespace(tb testing.TB, role string) *Namespace {
	tb.Helper()
	ns, err := t.AddNamespace(role)
	if err != nil {
		tb.Fatalf("add namespace %s: %v", role, err)
	}
	return ns
}

// Close deletes every namespace of the topology (endpoints, nodes, fabric), which removes their
// links, addresses and routes with them, and kills the processes started in them. It is safe to
// call more than once.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	var errs []error
	for _, ns := range t.bare {
		if err := ns.delete(); err != nil {
			errs = append(errs, err)
		}
	}
	t.bare = nil
	for _, n := range t.nodes {
		for _, ep := range n.endpoints {
			if err := ep.NS.delete(); err != nil {
				errs = append(errs, err)
			}
		}
		n.endpoints = nil
		if err := n.NS.delete(); err != nil {
			errs = append(errs, err)
		}
	}
	t.nodes = nil
	if t.Fabric != nil {
		if err := t.Fabric.delete(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists namespaces of this topology that still exist under /var/run/netns and links in
// the calling thread's namespace whose name contains the topology's suffix. Empty after a
// successful Close.
func (t *Topology) Leftovers() []string {
	var left []string
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.Contains(e.Name(), t.suffix) {
			left = append(left, "netns "+e.Name())
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.Contains(l.Attrs().Name, t.suffix) {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	return left
}

func checkName(name string) error {
	if name == "" || len(name) > 8 {
		return fmt.Errorf("topology: name %q must have 1 to 8 characters (interface names are short)", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("topology: name %q: only lower-case letters and digits", name)
		}
	}
	return nil
}

// nthAddr returns base + n.
func nthAddr(base netip.Addr, n int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
