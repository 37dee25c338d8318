package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade-mesh/palisade/kvstore"
)

// nodesPrefix holds one key per node of the cluster, leased by the node's agent.
const nodesPrefix = "nodes/"

// NodeInfo is the value of nodes/<name>.
type NodeInfo struct {
	Name       string   `json:"name"`
	Cluster    string   `json:"cluster"`
	IPs        []string `json:"ips"`
	PodCIDRs   []string `json:"podCIDRs"`
	HealthAddr string   `json:"healthAddr,omitempty"`
	Version    string   `json:"version,omitempty"`
}

func nodeKey(name string) string { return nodesPrefix + name }

// routeProtocol marks the routes the agent installs (rtnetlink protocol number), so a restarted
// agent can tell its own routes from the operator's and reconcile only those.
const routeProtocol netlink.RouteProtocol = 0xb5

// nodeRoutes keeps one route per other node's pod CIDR, through that node's address: the nodes of
// this cluster (from its registry) and those of remote clusters (from the cluster mesh).
type nodeRoutes struct {
	self string
	log  *slog.Logger

	mu     sync.Mutex
	byNode map[string][]netip.Prefix // a node's pod CIDRs
	vias   map[string]netip.Addr     // a node's address
	// holders lists, per pod CIDR, the nodes that announce it, in the order they did: a CIDR two
	// nodes announce (a node renamed, a misconfiguration) is routed through the first local node,
	// else the first node, and its route goes only when no node wants it any more.
	holders map[netip.Prefix][]string
	// synced holds the route sources that have told what they want since start-up. Until every
	// one of routeSources has, reconcile adds routes but removes none: a restarted agent must not
	// drop the routes of remote clusters just because the local registry listed first.
	synced map[string]bool
	// registrySynced is closed once the node registry has listed: until then the local nodes' pod
	// CIDRs are unknown, so remote clusters' CIDRs cannot be checked against them.
	registrySynced     chan struct{}
	registrySyncedOnce sync.Once
}

// The sources of routes.
const (
	routesFromRegistry = "node registry"
	routesFromMesh     = "cluster mesh"
)

var routeSources = []string{routesFromRegistry, routesFromMesh}

func newNodeRoutes(self string, log *slog.Logger) *nodeRoutes {
	return &nodeRoutes{self: self, log: log, byNode: map[string][]netip.Prefix{}, vias: map[string]netip.Addr{}, holders: map[netip.Prefix][]string{},
		synced: map[string]bool{}, registrySynced: make(chan struct{})}
}

// sourceSynced records that source has set every route it wants, and reconciles.
func (r *nodeRoutes) sourceSynced(source string) {
	r.mu.Lock()
	r.synced[source] = true
	r.mu.Unlock()
	if source == routesFromRegistry {
		r.registrySyncedOnce.Do(func() { close(r.registrySynced) })
	}
	r.reconcile()
}

// waitRegistrySynced waits until the node registry has listed, or ctx ends.
func (r *nodeRoutes) waitRegistrySynced(ctx context.Context) error {
	select {
	case <-r.registrySynced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handle applies one node registry event.
func (r *nodeRoutes) handle(ev kvstore.Event) {
	switch ev.Type {
	case kvstore.EventSynced:
		r.sourceSynced(routesFromRegistry)
	case kvstore.EventUpsert:
		var n NodeInfo
		if err := json.Unmarshal(ev.Value, &n); err != nil {
			r.log.Warn("ignoring malformed node entry", "key", ev.Key, "error", err)
			return
		}
		if n.Name == r.self {
			return
		}
		if err := r.setNode(n); err != nil {
			r.log.Warn("cannot route to node", "node", n.Name, "error", err)
		}
	case kvstore.EventDelete:
		r.removeNode(strings.TrimPrefix(ev.Key, nodesPrefix))
	}
}

func (r *nodeRoutes) setNode(n NodeInfo) error {
	if len(n.IPs) == 0 {
		return errors.New("node has no address")
	}
	via, err := netip.ParseAddr(n.IPs[0])
	if err != nil {
		return fmt.Errorf("node address %q: %w", n.IPs[0], err)
	}
	var cidrs []netip.Prefix
	for _, c := range n.PodCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("pod CIDR %q: %w", c, err)
		}
		cidrs = append(cidrs, p.Masked())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.byNode[n.Name]
	r.byNode[n.Name], r.vias[n.Name] = cidrs, via
	var errs []error
	for _, p := range prev {
		if !slices.Contains(cidrs, p) {
			r.releaseLocked(n.Name, p)
		}
	}
	for _, p := range cidrs {
		if !slices.Contains(r.holders[p], n.Name) {
			r.holders[p] = append(r.holders[p], n.Name)
		}
		if err := r.routeLocked(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *nodeRoutes) removeNode(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, ok := r.byNode[name]
	if !ok {
		return
	}
	delete(r.byNode, name)
	delete(r.vias, name)
	for _, p := range prev {
		r.releaseLocked(name, p)
	}
}

// releaseLocked drops name from p's holders: the route goes with its last holder, or moves to
// the next one.
func (r *nodeRoutes) releaseLocked(name string, p netip.Prefix) {
	r.holders[p] = slices.DeleteFunc(r.holders[p], func(h string) bool { return h == name })
	if len(r.holders[p]) > 0 {
		if err := r.routeLocked(p); err != nil {
			r.log.Warn("move pod CIDR route to another node", "cidr", p, "error", err)
		}
		return
	}
	delete(r.holders, p)
	if err := netlink.RouteDel(podRoute(p, netip.Addr{})); err != nil {
		r.log.Debug("delete pod CIDR route", "node", name, "cidr", p, "error", err)
	}
}

// viaLocked is the address p is routed through: that of its first local holder (a remote
// cluster never takes a local node's CIDR from it), else of its first holder.
func (r *nodeRoutes) viaLocked(p netip.Prefix) (netip.Addr, bool) {
	hs := r.holders[p]
	if len(hs) == 0 {
		return netip.Addr{}, false
	}
	for _, h := range hs {
		if !strings.Contains(h, "/") {
			return r.vias[h], true
		}
	}
	return r.vias[hs[0]], true
}

func (r *nodeRoutes) routeLocked(p netip.Prefix) error {
	via, ok := r.viaLocked(p)
	if !ok {
		return nil
	}
	if err := netlink.RouteReplace(podRoute(p, via)); err != nil {
		return fmt.Errorf("route %s via %s: %w", p, via, err)
	}
	return nil
}

// reconcile re-adds missing routes and, once every source has synced, removes routes of ours that
// no node wants any more (nodes that left while the agent was down).
func (r *nodeRoutes) reconcile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	prune := true
	for _, src := range routeSources {
		prune = prune && r.synced[src]
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		r.log.Warn("list pod CIDR routes", "error", err)
		return
	}
	for _, rt := range routes {
		if rt.Dst == nil {
			continue
		}
		p, ok := netip.AddrFromSlice(rt.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := rt.Dst.Mask.Size()
		prefix := netip.PrefixFrom(p.Unmap(), ones)
		if _, want := r.holders[prefix]; !want && prune {
			if err := netlink.RouteDel(&rt); err != nil {
				r.log.Warn("delete stale pod CIDR route", "cidr", prefix, "error", err)
			}
		}
	}
	for p := range r.holders {
		if err := r.routeLocked(p); err != nil {
			r.log.Warn("route to node", "error", err)
		}
	}
}

func podRoute(p netip.Prefix, via netip.Addr) *netlink.Route {
	rt := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)},
		Protocol: routeProtocol,
	}
	if via.IsValid() {
		rt.Gw = net.IP(via.AsSlice())
	}
	return rt
}

// firstGlobalIPv4 is the default node address: the first global unicast IPv4 address of the node
// outside its pod CIDR (every endpoint's veth carries the pod CIDR's gateway address).
func firstGlobalIPv4(podCIDR netip.Prefix) (netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list node addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() && a.Scope == int(netlink.SCOPE_UNIVERSE) && !podCIDR.Contains(ip.Unmap()) {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, errors.New("no global IPv4 address on this node: pass --node-ip")
}

// hostRanges is what this node itself routes, which a remote cluster's pod CIDR must leave alone.
type hostRanges struct {
	// addrs are the node's own addresses, on any link.
	addrs map[netip.Addr]bool
	// routes are the routes, in any table, that the agent did not install (the connected networks,
	// the local table's addresses, the operator's routes), but not the default route.
	routes []hostRoute
}

type hostRoute struct {
	dst netip.Prefix
	gw  netip.Addr // invalid for a route without a gateway
}

// readHostRanges lists the node's IPv4 addresses and the IPv4 routes not installed by the agent.
func readHostRanges() (hostRanges, error) {
	h := hostRanges{addrs: map[netip.Addr]bool{}}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return h, fmt.Errorf("list node addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			h.addrs[ip.Unmap()] = true
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return h, fmt.Errorf("list node routes: %w", err)
	}
	for _, rt := range routes {
		if rt.Protocol == routeProtocol || rt.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(rt.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := rt.Dst.Mask.Size()
		if ones == 0 {
			continue // the default route: every remote pod CIDR overlaps it
		}
		hr := hostRoute{dst: netip.PrefixFrom(ip.Unmap(), ones).Masked()}
		if gw, ok := netip.AddrFromSlice(rt.Gw); ok {
			hr.gw = gw.Unmap()
		}
		h.routes = append(h.routes, hr)
	}
	return h, nil
}
