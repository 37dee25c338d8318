package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

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

	mu      sync.Mutex
	desired map[netip.Prefix]netip.Addr // pod CIDR -> node address
	byNode  map[string][]netip.Prefix
	// synced holds the route sources that have told what they want since start-up. Until every
	// one of routeSources has, reconcile adds routes but removes none: a restarted agent must not
	// drop the routes of remote clusters just because the local registry listed first.
	synced map[string]bool
}

// The sources of routes.
const (
	routesFromRegistry = "node registry"
	routesFromMesh     = "cluster mesh"
)

var routeSources = []string{routesFromRegistry, routesFromMesh}

func newNodeRoutes(self string, log *slog.Logger) *nodeRoutes {
	return &nodeRoutes{self: self, log: log, desired: map[netip.Prefix]netip.Addr{}, byNode: map[string][]netip.Prefix{}, synced: map[string]bool{}}
}

// sourceSynced records that source has set every route it wants, and reconciles.
func (r *nodeRoutes) sourceSynced(source string) {
	r.mu.Lock()
	r.synced[source] = true
	r.mu.Unlock()
	r.reconcile()
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
	for _, old := range r.byNode[n.Name] {
		delete(r.desired, old)
	}
	r.byNode[n.Name] = cidrs
	var errs []error
	for _, p := range cidrs {
		r.desired[p] = via
		if err := netlink.RouteReplace(podRoute(p, via)); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", p, via, err))
		}
	}
	return errors.Join(errs...)
}

func (r *nodeRoutes) removeNode(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.byNode[name] {
		delete(r.desired, p)
		if err := netlink.RouteDel(podRoute(p, netip.Addr{})); err != nil {
			r.log.Debug("delete pod CIDR route", "node", name, "cidr", p, "error", err)
		}
	}
	delete(r.byNode, name)
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
		if _, want := r.desired[prefix]; !want && prune {
			if err := netlink.RouteDel(&rt); err != nil {
				r.log.Warn("delete stale pod CIDR route", "cidr", prefix, "error", err)
			}
		}
	}
	for p, via := range r.desired {
		if err := netlink.RouteReplace(podRoute(p, via)); err != nil {
			r.log.Warn("route to node", "cidr", p, "via", via, "error", err)
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
