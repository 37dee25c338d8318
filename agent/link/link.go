package link

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DefaultEndpointIfName is the endpoint-side device name.
const DefaultEndpointIfName = "eth0"

// Config describes one endpoint's link.
type Config struct {
	// NodeNetns is the node's network namespace path; empty means the caller's namespace.
	NodeNetns string
	// EndpointNetns is the endpoint's network namespace path (e.g. /var/run/netns/web-1).
	EndpointNetns string
	// HostIfName is the node-side device; empty derives lxc<hash> from EndpointNetns.
	HostIfName string
	// EndpointIfName is the endpoint-side device; default eth0.
	EndpointIfName string
	// IP is the endpoint's address, Gateway the node-side address every endpoint routes through.
	IP      netip.Addr
	Gateway netip.Addr
	// MTU of both ends; 0 keeps the kernel default.
	MTU int
}

// Link is a wired endpoint link.
type Link struct {
	HostIfName  string
	HostIfIndex int
}

// HostIfNameFor derives the node-side device name of an endpoint: "lxc" and 11 hex digits of a
// hash of key, within the kernel's 15-character limit.
func HostIfNameFor(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "lxc" + hex.EncodeToString(sum[:])[:11]
}

// Setup creates and wires the veth pair. On any error it removes what it created.
func Setup(cfg Config) (link Link, err error) {
	if cfg.EndpointNetns == "" {
		return Link{}, errors.New("endpoint link: no endpoint network namespace given")
	}
	if !cfg.IP.Is4() || !cfg.Gateway.Is4() {
		return Link{}, fmt.Errorf("endpoint link: address %s and gateway %s must be IPv4", cfg.IP, cfg.Gateway)
	}
	if cfg.HostIfName == "" {
		cfg.HostIfName = HostIfNameFor(cfg.EndpointNetns)
	}
	if cfg.EndpointIfName == "" {
		cfg.EndpointIfName = DefaultEndpointIfName
	}
	nh, err := handleFor(cfg.NodeNetns)
	if err != nil {
		return Link{}, fmt.Errorf("endpoint link: node namespace: %w", err)
	}
	defer nh.Close()
	epNS, err := netns.GetFromPath(cfg.EndpointNetns)
	if err != nil {
		return Link{}, fmt.Errorf("endpoint link: open namespace %s: %w", cfg.EndpointNetns, err)
	}
	defer epNS.Close()
	eh, err := netlink.NewHandleAt(epNS)
	if err != nil {
		return Link{}, fmt.Errorf("endpoint link: netlink in %s: %w", cfg.EndpointNetns, err)
	}
	defer eh.Close()
	if _, err := eh.LinkByName(cfg.EndpointIfName); err == nil {
		return Link{}, fmt.Errorf("endpoint link: %s already has a device %s: is it an endpoint already?", cfg.EndpointNetns, cfg.EndpointIfName)
	}

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: cfg.HostIfName, MTU: cfg.MTU},
		PeerName:      cfg.EndpointIfName,
		PeerNamespace: netlink.NsFd(epNS),
		PeerMTU:       uint32(max(cfg.MTU, 0)),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return Link{}, fmt.Errorf("endpoint link: add veth %s: %w", cfg.HostIfName, err)
	}
	defer func() {
		if err != nil {
			// Deleting one end of a veth deletes both, and the routes and addresses with them.
			_ = nh.LinkDel(veth)
		}
	}()
	host, err := nh.LinkByName(cfg.HostIfName)
	if err != nil {
		return Link{}, fmt.Errorf("endpoint link: find %s: %w", cfg.HostIfName, err)
	}
	if err := wireHost(nh, host, cfg); err != nil {
		return Link{}, err
	}
	if err := wireEndpoint(eh, cfg, host.Attrs().HardwareAddr); err != nil {
		return Link{}, err
	}
	return Link{HostIfName: cfg.HostIfName, HostIfIndex: host.Attrs().Index}, nil
}

func wireHost(nh *netlink.Handle, host netlink.Link, cfg Config) error {
	if err := nh.AddrAdd(host, &netlink.Addr{IPNet: hostNet(cfg.Gateway)}); err != nil {
		return fmt.Errorf("endpoint link: gateway %s on %s: %w", cfg.Gateway, cfg.HostIfName, err)
	}
	if err := nh.LinkSetUp(host); err != nil {
		return fmt.Errorf("endpoint link: set %s up: %w", cfg.HostIfName, err)
	}
	route := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostNet(cfg.IP), Scope: netlink.SCOPE_LINK}
	if err := nh.RouteReplace(route); err != nil {
		return fmt.Errorf("endpoint link: route to %s via %s: %w", cfg.IP, cfg.HostIfName, err)
	}
	return nil
}

func wireEndpoint(eh *netlink.Handle, cfg Config, gatewayMAC net.HardwareAddr) error {
	eth, err := eh.LinkByName(cfg.EndpointIfName)
	if err != nil {
		return fmt.Errorf("endpoint link: find %s in %s: %w", cfg.EndpointIfName, cfg.EndpointNetns, err)
	}
	if lo, err := eh.LinkByName("lo"); err == nil {
		if err := eh.LinkSetUp(lo); err != nil {
			return fmt.Errorf("endpoint link: set lo up in %s: %w", cfg.EndpointNetns, err)
		}
	}
	if err := eh.AddrAdd(eth, &netlink.Addr{IPNet: hostNet(cfg.IP)}); err != nil {
		return fmt.Errorf("endpoint link: address %s: %w", cfg.IP, err)
	}
	if err := eh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("endpoint link: set %s up: %w", cfg.EndpointIfName, err)
	}
	if err := eh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: hostNet(cfg.Gateway), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("endpoint link: route to gateway %s: %w", cfg.Gateway, err)
	}
	if err := eh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(cfg.Gateway.AsSlice())}); err != nil {
		return fmt.Errorf("endpoint link: default route via %s: %w", cfg.Gateway, err)
	}
	// The gateway is always the node-side veth: a permanent neighbour entry spares the endpoint's
	// first connection an ARP exchange, which the kernel sometimes retries only after a second.
	neigh := &netlink.Neigh{
		LinkIndex:    eth.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(cfg.Gateway.AsSlice()),
		HardwareAddr: gatewayMAC,
	}
	if err := eh.NeighSet(neigh); err != nil {
		return fmt.Errorf("endpoint link: neighbour entry for gateway %s: %w", cfg.Gateway, err)
	}
	return nil
}

// Remove deletes the node-side device (and with it the endpoint side, its addresses and routes).
// A device that is already gone is not an error.
func Remove(nodeNetns, hostIfName string) error {
	nh, err := handleFor(nodeNetns)
	if err != nil {
		return fmt.Errorf("remove endpoint link %s: %w", hostIfName, err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(hostIfName)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("remove endpoint link %s: %w", hostIfName, err)
	}
	if err := nh.LinkDel(l); err != nil {
		return fmt.Errorf("remove endpoint link %s: %w", hostIfName, err)
	}
	return nil
}

// Lookup returns the link of hostIfName if it exists.
func Lookup(nodeNetns, hostIfName string) (Link, bool, error) {
	nh, err := handleFor(nodeNetns)
	if err != nil {
		return Link{}, false, err
	}
	defer nh.Close()
	l, err := nh.LinkByName(hostIfName)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return Link{}, false, nil
		}
		return Link{}, false, err
	}
	return Link{HostIfName: hostIfName, HostIfIndex: l.Attrs().Index}, true, nil
}

func handleFor(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}
